"""Small layers shared by the SF2F voice encoder, face decoders and discriminators.

Every layer here follows the PyTorch reference numerically:

* tensors are NLC / NHWC (the reference is NCL / NCHW; the checkpoint importer transposes);
* where PyTorch pads symmetrically, an explicit ``ZeroPadding`` layer precedes a ``'valid'``
  convolution. Keras ``'same'`` padding with stride 2 pads asymmetrically (more on the right),
  which shifts every window by one input step relative to PyTorch. At stride 1 with an odd
  kernel ``'same'`` *is* the symmetric padding, and the 3x3 convolutions of the decoder use it:
  same results bit for bit, without a padded copy of the largest activations and with a
  smaller input gradient;
* convolutions are ``fast_conv`` layers: Keras' own forward pass, a faster input gradient on
  TensorFlow's CPU kernels;
* BatchNormalization uses ``epsilon=1e-5`` and ``momentum=0.9`` (PyTorch's momentum 0.1 is the
  weight of the *new* batch statistic, Keras's momentum the weight of the old running value);
* weights are initialised like PyTorch's defaults so that training from scratch starts from the
  same distribution as the reference: kernels U(+-1/sqrt(fan_in)) (kaiming-uniform with a=sqrt(5)),
  biases U(+-1/sqrt(fan_in)) with the *layer's* fan_in, BatchNorm gamma=1, beta=0.

Sub-layers are always held in named attributes, never in Python lists: with the TensorFlow
backend, Keras 3 does not expose list-held layers to ``tf.train.Checkpoint`` (it only converts
them for SavedModel export), so a list would silently drop their variables from checkpoints.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_sf2f.models import fast_conv, fused_batch_norm, upsample_conv
# nn.LeakyReLU's default slope, which the reference decoder gets from get_activation('leakyrelu').
from keras_sf2f.models.discriminator_arch import TORCH_DEFAULT_LEAKY_SLOPE  # noqa: F401

PACKAGE = "keras_sf2f"

# PyTorch BatchNorm defaults, expressed in Keras terms (see module docstring).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9

# F.normalize's denominator floor.
L2_NORMALIZE_EPSILON = 1e-12



def torch_kernel_initializer():
    """PyTorch's default conv/linear weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).

    Keras computes fan_in from the kernel shape exactly as PyTorch does from the weight shape:
    Conv1D (k, in, out) -> k*in; Conv2D (kh, kw, in, out) -> kh*kw*in; Dense (in, out) -> in;
    Conv2DTranspose (kh, kw, out, in) -> kh*kw*out, which is also PyTorch's ConvTranspose fan_in
    (it reads weight dim 1 = out_channels).
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


def torch_bias_initializer(fan_in: int):
    """PyTorch's default bias init, U(+-1/sqrt(fan_in)) with the owning layer's fan_in."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(minval=-bound, maxval=bound)


def batch_normalization(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm over the last (channel) axis with PyTorch's eps and momentum (training mode
    fused into one op on TensorFlow: ``fused_batch_norm``)."""
    return fused_batch_norm.BatchNormalization(axis=-1, epsilon=BATCH_NORM_EPSILON,
                                              momentum=BATCH_NORM_MOMENTUM, name=name)


def l2_normalize(x, axis: int = -1):
    """``F.normalize`` semantics: x / max(||x||_2, 1e-12)."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, L2_NORMALIZE_EPSILON)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GLU(keras.layers.Layer):
    """Gated linear unit on the last axis: first half * sigmoid(second half).

    The reference's GLU splits PyTorch's channel axis (dim 1); in NLC/NHWC that axis is the last.
    """

    def call(self, inputs):
        value, gate = ops.split(inputs, 2, axis=-1)
        return value * ops.sigmoid(gate)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(f"GLU needs an even number of channels, got {input_shape[-1]}")
        self.built = True

    def compute_output_shape(self, input_shape):
        channels = None if input_shape[-1] is None else input_shape[-1] // 2
        return tuple(input_shape[:-1]) + (channels,)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv1DBlock(keras.layers.Layer):
    """Conv1D (no bias) -> BatchNorm -> ReLU, with PyTorch's symmetric zero padding.

    Equivalent of the reference ``CNN1DBlock(cin, cout, kernel, stride, padding)``.
    Input [B, L, C_in] -> [B, floor((L + 2*padding - kernel) / stride) + 1, filters].
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 2, padding: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = int(padding)
        self.pad = keras.layers.ZeroPadding1D((self.padding, self.padding), name="pad")
        self.conv = fast_conv.Conv1D(
            self.filters, self.kernel_size, strides=self.strides, padding="valid",
            use_bias=False, kernel_initializer=torch_kernel_initializer(), name="conv")
        self.norm = batch_normalization("norm")
        self.relu = keras.layers.ReLU(name="relu")

    def build(self, input_shape):
        self.pad.build(input_shape)
        padded = self.pad.compute_output_shape(input_shape)
        self.conv.build(padded)
        self.norm.build(self.conv.compute_output_shape(padded))
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv(self.pad(inputs))
        x = self.norm(x, training=training)
        return self.relu(x)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self.pad.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Inception1DBlock(keras.layers.Layer):
    """Four parallel stride-2 Conv1DBlocks (kernels 2, 3, 5, 7), concatenated on channels.

    Reference ``Inception1DBlock``: paddings 1, 1, 2, 3. All branches give ceil(L/2) steps except
    the k2 branch, which gives floor(L/2)+1 (one more when L is even); its *last* step is dropped
    to match. Concatenation order is [k2, k3, k5, k7]. Output [B, ceil(L/2), 4*branch_filters].
    """

    # (kernel, padding) per branch, in concatenation order.
    BRANCHES = ((2, 1), (3, 1), (5, 2), (7, 3))

    def __init__(self, branch_filters: int, **kwargs):
        super().__init__(**kwargs)
        self.branch_filters = int(branch_filters)
        # Attribute names follow the reference (conv_k2 ... conv_k7) to keep the key map obvious.
        for kernel, padding in self.BRANCHES:
            setattr(self, f"conv_k{kernel}",
                    Conv1DBlock(self.branch_filters, kernel, 2, padding, name=f"conv_k{kernel}"))

    def branches(self):
        return [getattr(self, f"conv_k{kernel}") for kernel, _ in self.BRANCHES]

    def build(self, input_shape):
        for branch in self.branches():
            branch.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        k2, k3, k5, k7 = [branch(inputs, training=training) for branch in self.branches()]
        # Trim k2 to the common length ceil(L/2) (a no-op for odd L).
        k2 = k2[:, : ops.shape(k3)[1], :]
        return ops.concatenate([k2, k3, k5, k7], axis=-1)

    def compute_output_shape(self, input_shape):
        length = self.conv_k3.compute_output_shape(input_shape)[1]
        return (input_shape[0], length, 4 * self.branch_filters)

    def get_config(self):
        config = super().get_config()
        config.update(branch_filters=self.branch_filters)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class UpBlock(keras.layers.Layer):
    """Nearest x2 upsampling -> Conv2D 3x3 (no bias, pad 1 = 'same') to 2*filters -> BatchNorm
    -> GLU.

    Reference ``upBlock(in, out)``. Input [B, H, W, C] -> [B, 2H, 2W, filters].
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample")
        self.conv = fast_conv.Conv2D(
            2 * self.filters, 3, padding="same", use_bias=False,
            kernel_initializer=torch_kernel_initializer(), name="conv")
        self.norm = batch_normalization("norm")
        self.glu = GLU(name="glu")

    def build(self, input_shape):
        shape = self.upsample.compute_output_shape(input_shape)
        self.conv.build(shape)
        shape = self.conv.compute_output_shape(shape)
        self.norm.build(shape)
        self.glu.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        if not training and upsample_conv.applies(inputs.shape, self.conv.kernel.shape,
                                                  inputs.dtype):
            # Inference: the same upsampling and convolution without the upsampled map (fewer
            # multiply-adds, float rounding only; models/upsample_conv.py says where it pays).
            x = upsample_conv.upsample_conv3x3(inputs, self.conv.kernel.value)
        else:
            x = self.conv(self.upsample(inputs))
        x = self.norm(x, training=training)
        return self.glu(x)

    def compute_output_shape(self, input_shape):
        def double(size):
            return None if size is None else 2 * size
        return (input_shape[0], double(input_shape[1]), double(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ToImage(keras.layers.Layer):
    """Image head of the SF2F decoders: Conv 3x3 (pad 1 = 'same') -> LeakyReLU(0.01) -> Conv 1x1
    to RGB.

    Reference ``gnet`` / ``gnet_low`` / ``gnet_mid``; both convs have biases. ``filters`` is both
    the input and the hidden width (as in the reference), which fixes the bias init fan_in.
    No output activation: images live in ImageNet-normalised space.
    """

    def __init__(self, filters: int, output_channels: int = 3,
                 negative_slope: float = TORCH_DEFAULT_LEAKY_SLOPE, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.output_channels = int(output_channels)
        self.negative_slope = float(negative_slope)
        self.conv = fast_conv.Conv2D(
            self.filters, 3, padding="same", kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(9 * self.filters), name="conv")
        self.activation = keras.layers.LeakyReLU(negative_slope=self.negative_slope,
                                                 name="leaky_relu")
        self.to_rgb = fast_conv.Conv2D(
            self.output_channels, 1, kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(self.filters), name="to_rgb")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(f"{self.name}: expects {self.filters} input channels, "
                             f"got {input_shape[-1]}")
        self.conv.build(input_shape)
        self.to_rgb.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs):
        return self.to_rgb(self.activation(self.conv(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, output_channels=self.output_channels,
                      negative_slope=self.negative_slope)
        return config
