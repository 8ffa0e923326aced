"""Convolutions whose forward pass is TensorFlow's own and whose input gradient is faster.

On CPUs where TensorFlow runs its Eigen kernels (TensorFlow's own default on x86 CPUs without
AVX512_VNNI, AVX512_BF16 or AMX -- e.g. AMD EPYC with AVX2 --; this package asks for oneDNN's
instead, so Eigen runs only with TF_ENABLE_ONEDNN_OPTS=0 or when TensorFlow loaded first),
``Conv2DBackpropInput`` is 2-8x less efficient than the forward ``Conv2D`` for the shapes
SF2F trains with (measured per CPU second: 1x1 convolutions on 3x3 / 7x7 maps, 3x3 and 1x7
convolutions on maps of 8x8 and below, strided 1-D convolutions of the voice encoder), and it
was the largest single item of the training step. The input gradient of a
convolution is itself a convolution, so it is computed here with the forward kernel:

* stride 1: ``dx = conv(pad(dy), flip(W)^T)`` -- the "full" correlation of the output gradient
  with the spatially flipped kernel whose in/out channels are swapped;
* 1x1, stride 1: ``dx = dy W^T`` as one matrix product;
* stride s > 1, 'VALID', on small output maps (at most 64 positions; 1-D: 20 steps, or any
  length when it is unknown at trace time) with at least 16 input channels: the transposed
  convolution splits into s*s phases (input pixels ``s*m + r``) that each are a stride-1 full
  correlation of ``dy`` with the sub-kernel ``W[r::s]``; the phases are interleaved back (no
  multiplications by inserted zeros). Measured per CPU second at batch 64 this is 1.5-10x
  faster there (the encoder's 864->512 output convolution: 1.7 -> 18 GFLOP/s; FaceNet's
  Mixed_7a 3x3/2: 10 -> 25), and slower on large maps or with 3 input channels (the first
  layer of the discriminators and of FaceNet), which keep TensorFlow's gradient.

Measured on the whole SF2F-64 step (batch 16, full FaceNet, 2 cores): 4.1-4.7 instead of
5.5-6.0 CPU seconds per step.

The forward op is unchanged (``tf.nn.conv2d``, bit for bit the same results); the gradients
are the same sums in another order (float rounding only). The kernel gradient stays
``Conv2DBackpropFilter``. Only float32 takes this path; other dtypes and dilated or grouped
convolutions use TensorFlow's gradient. Unused gradients (e.g. the kernel gradient of a frozen
network, the input gradient of a first layer) are pruned by the function runtime as before.

``Conv2D`` / ``Conv1D`` are drop-in Keras layers using it (same weights, names and configs).

Where it is used (``decide`` below, ``--fast_conv=auto|on|off`` in training): the gain is a
property of TensorFlow's *CPU Eigen* ``Conv2DBackpropInput`` kernel, not of the mathematics, so
``auto`` turns it on only there. Whether a convolution takes this path is decided when the
step is traced, from the module's current setting (``enabled(...)`` scope; default ``auto``
resolved for the visible devices).
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf
from keras import ops

from keras_sf2f import machine

MODES = ("auto", "on", "off")


def cpu_convolution_library() -> str:
    """'onednn' when TensorFlow runs oneDNN's CPU convolutions in this process, else 'eigen'.

    TensorFlow decides once per process: oneDNN is on by default on Linux x86 CPUs with
    AVX512_VNNI / AVX512_BF16 / AVX_VNNI / AMX, and ``TF_ENABLE_ONEDNN_OPTS=0|1`` overrides it
    (it logs "oneDNN custom operations are on" when they are)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415
        return "onednn" if _pywrap_util_port.IsMklEnabled() else "eigen"
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        # The documented switch; without it, TensorFlow's own default is unknown here, and
        # Eigen (the conservative answer: fast_conv's measured home) is assumed.
        return "onednn" if machine.onednn_requested() else "eigen"


def decide(mode: str = "auto", device_types=None, jit_compile: bool = False) -> tuple[bool, str]:
    """Whether convolutions use the custom input gradient, and why (one line).

    ``mode`` 'on' / 'off' force it. 'auto' turns it on only where it was measured to pay:
    float32 convolutions run by TensorFlow's **Eigen** CPU kernels. SF2F-64 step, batch 16,
    full FaceNet, 2 cores, CPU seconds per step (BUILD_NOTES.md "GPU levers"): AMD EPYC AVX2,
    4.1-4.7 instead of 5.5-6.0; AMD EPYC Zen 4 with oneDNN switched off, 3.3-4.0 instead of
    3.7-4.6. It stays off

    * on GPUs (``device_types`` holds anything but CPU): the measurement is of a CPU kernel;
      cuDNN's input-gradient kernels are not Eigen's, and the stride-phase split would only add
      kernel launches there (not measured: no GPU was available);
    * with oneDNN CPU convolutions (TensorFlow's default on AVX512_VNNI / AVX512_BF16 / AMX
      CPUs): there it costs time (Zen 4: 3.1-3.15 instead of 2.8-2.85 CPU s);
    * under XLA (``jit_compile``): XLA emits its own convolutions (Zen 4: 3.40 on, 3.34 off).

    ``device_types``: the device types the step runs on (e.g. ``["CPU"]``, ``["GPU", "GPU"]``);
    default: GPU if TensorFlow sees one (it places convolutions there), else CPU.
    """
    if mode not in MODES:
        raise ValueError(f"fast_conv mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode == "on", f"fast_conv={mode} (forced)"
    if device_types is None:
        device_types = ["GPU"] if tf.config.list_logical_devices("GPU") else ["CPU"]
    kinds = sorted({str(t).upper() for t in device_types})
    if kinds != ["CPU"]:
        return False, f"fast_conv off: the step runs on {'/'.join(kinds)}, not CPU-only"
    if jit_compile:
        return False, "fast_conv off: under XLA (jit_compile) TensorFlow's kernels do not run"
    library = cpu_convolution_library()
    if library != "eigen":
        return False, (f"fast_conv off: TensorFlow's CPU convolutions are {library}'s "
                       f"(no measured gain there)")
    return True, "fast_conv on: CPU with TensorFlow's Eigen convolution kernels"


# The setting convolutions read when they are traced: None = 'auto' for the visible devices.
# A module global, not a thread-local: MirroredStrategy traces each replica in its own thread.
_enabled: bool | None = None


def is_enabled() -> bool:
    """The current setting (``auto`` resolved for the visible devices outside any scope)."""
    return decide("auto")[0] if _enabled is None else _enabled


@contextlib.contextmanager
def enabled(on: bool):
    """Within the scope, convolutions traced use the custom input gradient iff ``on``
    (training wraps the tracing of its step in this with ``decide(...)``'s answer)."""
    global _enabled
    previous = _enabled
    _enabled = bool(on)
    try:
        yield
    finally:
        _enabled = previous


def _input_gradient_stride1(dy, kernel, pads):
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    (top, bottom), (left, right) = pads
    if kh == kw == 1 and top == bottom == left == right == 0:
        cin, cout = int(kernel.shape[2]), int(kernel.shape[3])
        flat = tf.matmul(tf.reshape(dy, [-1, cout]), tf.reshape(kernel, [cin, cout]),
                         transpose_b=True)
        return tf.reshape(flat, tf.concat([tf.shape(dy)[:3], [cin]], 0))
    flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
    padded = tf.pad(dy, [[0, 0], [kh - 1 - top, kh - 1 - bottom],
                         [kw - 1 - left, kw - 1 - right], [0, 0]])
    return tf.nn.conv2d(padded, flipped, 1, "VALID")


def _input_gradient_strided_valid(dy, kernel, strides, input_shape):
    """Transposed 'VALID' convolution of ``dy`` computed by phases; ``input_shape`` is the
    (possibly dynamic) shape of the convolution's input."""
    sh, sw = strides
    cin = int(kernel.shape[2])
    batch, height, width = input_shape[0], input_shape[1], input_shape[2]
    out_h, out_w = tf.shape(dy)[1], tf.shape(dy)[2]
    # Phase (r, c) holds input rows r, r + sh, ... and columns c, c + sw, ...; every phase is
    # computed on a common (rows, cols) grid and the interleaved result is cropped.
    rows = (height + sh - 1) // sh
    cols = (width + sw - 1) // sw
    phase_rows = []
    for r in range(sh):
        phase_cols = []
        for c in range(sw):
            sub = kernel[r::sh, c::sw]
            qh, qw = int(sub.shape[0]), int(sub.shape[1])
            if qh == 0 or qw == 0:
                phase_cols.append(tf.zeros(tf.stack([batch, rows, cols, cin]), dy.dtype))
                continue
            # dx[s*m + r] = sum_q dy[m - q] * W[r + s*q]: a full correlation with the flipped
            # sub-kernel, for m = 0 .. rows-1.
            flipped = tf.transpose(tf.reverse(sub, [0, 1]), [0, 1, 3, 2])
            padded = tf.pad(dy, tf.stack([[0, 0], [qh - 1, tf.maximum(rows - out_h, 0)],
                                          [qw - 1, tf.maximum(cols - out_w, 0)], [0, 0]]))
            phase_cols.append(tf.nn.conv2d(padded, flipped, 1, "VALID")[:, :rows, :cols, :])
        # [B, rows, cols, sw, cin] -> [B, rows, cols*sw, cin] interleaves the columns.
        phase_rows.append(tf.reshape(tf.stack(phase_cols, axis=3),
                                     tf.stack([batch, rows, cols * sw, cin])))
    # [B, rows, sh, cols*sw, cin] -> [B, rows*sh, cols*sw, cin] interleaves the rows.
    full = tf.reshape(tf.stack(phase_rows, axis=2), tf.stack([batch, rows * sh, cols * sw, cin]))
    return full[:, :height, :width, :]


# Not imported from models.layers, which imports this module.
PACKAGE = "keras_sf2f"

# Where phase-split input gradients pay off (see the module docstring): output maps of at most
# this many positions (1-D: steps), and at least this many input channels.
_PHASE_MAX_OUTPUT_POSITIONS = 64
_PHASE_MAX_OUTPUT_STEPS_1D = 20
_PHASE_MIN_INPUT_CHANNELS = 16


def _custom_input_gradient(input_hw, kernel_shape, strides, padding) -> bool:
    if strides == (1, 1):
        return True
    if padding != "VALID" or kernel_shape[2] < _PHASE_MIN_INPUT_CHANNELS:
        return False
    height, width = input_hw
    if height == 1 and kernel_shape[0] == 1 and width is None:
        # A 1-D convolution of unknown length: the voice encoder's on variable-length crops,
        # whose maps have at most ~75 steps after its first block.
        return True
    if height is None or width is None:
        return False
    out_h = (height - kernel_shape[0]) // strides[0] + 1
    out_w = (width - kernel_shape[1]) // strides[1] + 1
    if height == 1 and kernel_shape[0] == 1:
        return out_w <= _PHASE_MAX_OUTPUT_STEPS_1D
    return out_h * out_w <= _PHASE_MAX_OUTPUT_POSITIONS


def conv2d(x, kernel, strides=(1, 1), padding: str = "VALID"):
    """``tf.nn.conv2d(x, kernel, strides, padding)`` (NHWC) with the faster input gradient
    described in the module docstring; plain ``tf.nn.conv2d`` where it does not apply or is
    not enabled (``is_enabled()``)."""
    x = tf.convert_to_tensor(x)
    kernel = tf.convert_to_tensor(kernel)
    strides = tuple(int(s) for s in strides)
    padding = padding.upper()
    tf_strides = (1,) + strides + (1,)
    height, width = x.shape[1], x.shape[2]
    if not is_enabled() or x.dtype != tf.float32 or kernel.dtype != tf.float32 or \
            not kernel.shape.is_fully_defined() or \
            not _custom_input_gradient((height, width), [int(d) for d in kernel.shape],
                                       strides, padding):
        return tf.nn.conv2d(x, kernel, tf_strides, padding)
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    # At stride 1, 'SAME' pads k-1 in total, the extra one at the end (TF's rule).
    pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)) if padding == "SAME" \
        else ((0, 0), (0, 0))

    @tf.custom_gradient
    def _conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, tf_strides, padding)

        # Gradient ops go under "gradient_tape/<forward op scope>/" like TF's own, so that
        # profiles attribute them to their layer.
        scope = ("fast_conv" if tf.executing_eagerly()
                 else "gradient_tape/" + y.op.name.rsplit("/", 1)[0] + "/")

        def grad(dy):
            with tf.name_scope(scope):
                with tf.name_scope("input_gradient"):
                    if strides == (1, 1):
                        dx = _input_gradient_stride1(dy, kernel, pads)
                    else:
                        dx = _input_gradient_strided_valid(dy, kernel, strides, tf.shape(x))
                dw = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                    strides=tf_strides, padding=padding)
            return dx, dw

        return y, grad

    return _conv(x, kernel)


def conv1d(x, kernel, stride: int = 1, padding: str = "VALID"):
    """NLC 1-D convolution as ``tf.nn.conv1d`` computes it (a 1xk 2-D convolution on
    [B, 1, L, C]), with ``conv2d``'s input gradient."""
    y = conv2d(tf.expand_dims(x, 1), tf.expand_dims(kernel, 0), (1, int(stride)), padding)
    return tf.squeeze(y, 1)


def _plain(layer) -> bool:
    return (keras.backend.backend() == "tensorflow" and layer.groups == 1
            and all(int(d) == 1 for d in layer.dilation_rate)
            and layer.data_format == "channels_last")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose TensorFlow input gradient is ``fast_conv.conv2d``'s."""

    def convolution_op(self, inputs, kernel):
        if not _plain(self):
            return super().convolution_op(inputs, kernel)
        return conv2d(inputs, kernel, self.strides, self.padding)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv1D(keras.layers.Conv1D):
    """``keras.layers.Conv1D`` (padding 'valid' or 'same') whose TensorFlow input gradient
    is ``fast_conv.conv2d``'s."""

    def call(self, inputs):
        if not _plain(self) or self.padding == "causal":
            return super().call(inputs)
        outputs = conv1d(inputs, self.kernel, self.strides[0], self.padding)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, self.filters)))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
