"""Nearest x2 upsampling followed by a 3x3 'same' convolution, computed without the upsampling.

The SF2F decoders' up blocks (reference ``upBlock``) repeat every pixel 2x2 and then run a 3x3
convolution over the four-times larger map. Each output pixel ``(2i + a, 2j + b)`` then reads
only two distinct input rows and two distinct input columns, so the same outputs come from four
2x2 convolutions of the small map, one per phase ``(a, b)``:

* phase ``a = 0`` reads input rows ``i - 1`` and ``i`` with kernel rows ``W[0]`` and
  ``W[1] + W[2]``; phase ``a = 1`` reads rows ``i`` and ``i + 1`` with ``W[0] + W[1]`` and
  ``W[2]`` (the same for columns and ``b``);
* the zero border of the upsampled map is the zero border of the input, so 'same' padding
  becomes one zero row and column on each side of the input.

All four phases are one 2x2 'valid' convolution of the padded input with ``4 * C_out`` output
channels (phase ``(a, b)`` is the window at offset ``(a, b)``); the phases are then interleaved
into the ``2H x 2W`` map. That is 16 multiply-adds per input pixel and channel pair instead of
36, plus the one-pixel border.

Where it pays (AMD EPYC Zen 4, oneDNN, 2 cores; measured per up block of SF2F-64/128):

* inference, float32: batch 1 under XLA (the Python inference path), 1.3-1.8x faster from
  16x16 inputs and 1.3x at 8x8; batch 32 without XLA, 1.2-1.6x faster at 8x8 to 32x32. On
  4x4 inputs (the first up block) building the 2x2 kernels costs more than it saves at batch
  1 (2.7 against 5.4 ms), so :func:`applies` keeps the plain computation below 8x8 inputs.
  With it (and the XLA features' cheaper power spectrum) the 30 s audio-in latency of
  SF2F-64 went from 0.92x to 1.03x PyTorch's forward (``benchmarks/results/``);
* training (forward and both gradients, batch 64): float32 1.2-1.3x faster at 8x8 and 16x16
  but 0.7-1.0x at 32x32 and 64x64 (the interleaving and its gradient move more memory than
  the saved products), and slower at every size in bfloat16 (0.5-0.9x: the SF2F-128
  bfloat16 step fell from 1.23x to 1.00x PyTorch's). So the up blocks use it only when
  called with ``training`` false in float32, and stage 1 trains with the plain computation.
  Stage 2 calls its frozen decoder that way, so the fuser's gradient passes through it there
  (its float32 step measured the same, 0.231 against 0.232 steps/s).

Not measured on the Intel kind (an earlier, different phase form measured 0.97x on its decoder,
BUILD_NOTES.md) or on a GPU (none reachable); it is correct there by the same tests.

The results are the same sums of the same products in another order (the kernel's taps are
added before they multiply), so they differ from the plain computation by float rounding only
(~1e-6 relative in float32). The weights are the plain 3x3 kernel: checkpoints, the reference
importer and the layer's configuration do not change.
"""

from __future__ import annotations

import tensorflow as tf

from keras_sf2f.models import fast_conv

#: Inputs with fewer pixels than this keep the plain computation (see the module docstring).
MIN_INPUT_PIXELS = 64


def applies(input_shape, kernel_shape, dtype="float32") -> bool:
    """Whether :func:`upsample_conv3x3` is used (at inference) for an NHWC input of
    ``input_shape`` (static height and width of at least :data:`MIN_INPUT_PIXELS` pixels), a
    3x3 kernel and a float32 computation (see the module docstring)."""
    height, width = input_shape[1], input_shape[2]
    return (height is not None and width is not None and height * width >= MIN_INPUT_PIXELS
            and tuple(kernel_shape[:2]) == (3, 3) and tf.as_dtype(dtype) == tf.float32)


def phase_kernels(kernel):
    """``[3, 3, C_in, C_out]`` -> ``[2, 2, C_in, 4 * C_out]``: the 2x2 kernel of each phase
    ``(a, b)``, in the order (0, 0), (0, 1), (1, 0), (1, 1) along the output channels."""
    def fold(w, axis):
        """The two taps of each phase along ``axis``: (w0, w1 + w2) and (w0 + w1, w2)."""
        w0, w1, w2 = tf.unstack(w, axis=axis)
        return (tf.stack([w0, w1 + w2], axis=axis), tf.stack([w0 + w1, w2], axis=axis))

    return tf.concat([by_col for by_row in fold(kernel, 0) for by_col in fold(by_row, 1)],
                     axis=-1)


def upsample_conv3x3(x, kernel):
    """``conv2d(nearest_upsample_x2(x), kernel, 'SAME')`` for NHWC ``x`` [B, H, W, C_in] and a
    3x3 ``kernel`` [3, 3, C_in, C_out] -> [B, 2H, 2W, C_out], by phases (module docstring). The
    2x2 convolution is ``fast_conv.conv2d`` (its input gradient where that is enabled)."""
    height, width = int(x.shape[1]), int(x.shape[2])
    out_channels = int(kernel.shape[-1])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = fast_conv.conv2d(padded, phase_kernels(kernel), (1, 1), "VALID")  # [B, H+1, W+1, 4C]
    phases = [y[:, a:a + height, b:b + width, (2 * a + b) * out_channels:
                (2 * a + b + 1) * out_channels] for a in (0, 1) for b in (0, 1)]
    # out[:, 2i + a, 2j + b] = phase (a, b)[:, i, j]: stack to [B, H, 2, W, 2, C] and merge.
    rows = [tf.stack(phases[2 * a:2 * a + 2], axis=3) for a in (0, 1)]  # [B, H, W, 2, C]
    out = tf.stack(rows, axis=2)
    return tf.reshape(out, [-1, 2 * height, 2 * width, out_channels])
