"""FaceNet (Inception-ResNet-v1) in Keras 3, NHWC, layer for layer as facenet-pytorch builds it.

This is the face network behind SF2F's perceptual loss and its evaluation embeddings. The
topology follows the facenet-pytorch ``InceptionResnetV1`` (itself a port of David
Sandberg's TF model):

    stem      conv2d_1a 3x3/2, conv2d_2a 3x3, conv2d_2b 3x3 'same', maxpool_3a 3/2,
              conv2d_3b 1x1, conv2d_4a 3x3, conv2d_4b 3x3/2
    repeat_1  5 x Block35 (residual scale 0.17)            -> hidden state 1
    mixed_6a  reduction (3x3/2 conv | 1x1-3x3-3x3/2 | maxpool 3/2)
    repeat_2  10 x Block17 (scale 0.10)                     -> hidden state 2
    mixed_7a  reduction (four branches)
    repeat_3  5 x Block8 (scale 0.20)                       -> hidden state 3
    block8    one Block8 with scale 1.0 and no ReLU
    head      global average pool, dropout, last_linear (no bias), last_bn, L2 normalisation
              -> embedding (hidden state 4); optional ``logits`` Dense(num_classes)

Every convolution outside the residual "up" projections is ``BasicConv2d``: convolution without
bias, BatchNorm (epsilon 1e-3, Keras momentum 0.9 = PyTorch momentum 0.1) and ReLU. All
paddings of the PyTorch model are either 0 ('valid') or symmetric k//2 at stride 1 ('same'), so
Keras' own padding modes reproduce it exactly.

For a 140x140 input (the size SF2F resizes every face to) the hidden states are
``repeat_1`` (B,15,15,256), ``repeat_2`` (B,7,7,896), ``repeat_3`` (B,3,3,1792) and the
embedding (B,512) -- the NHWC versions of the reference's (B,256,15,15), (B,896,7,7),
(B,1792,3,3), (B,512).

Parameter count of the default model (trainable, i.e. conv/dense weights and BN gamma/beta,
which is how this project counts parameters): 23,482,624 to the embedding, 27,910,327 with the
8,631-way VGGFace2 logits. BN moving statistics are non-trainable weights on top of that.

Smaller variants keep the topology and scale it with ``width_multiplier`` (all channel counts,
rounded) and ``repeats`` (blocks per stage). ``FaceNet.small()`` is the documented variant the
project trains itself on 2 CPU cores; see its docstring.

Logits: facenet-pytorch computes them from the (un-normalised) ``last_bn`` output; SF2F's copy
applies them to the L2-normalised embedding. This class follows facenet-pytorch, whose
VGGFace2 weights were trained that way (SF2F never uses the logits).

The input is expected in FaceNet's ``fixed_image_standardization`` space ((pixel - 127.5)/128);
see ``keras_sf2f.models.face_preprocessing`` for the reference's full pre-processing chain.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

from keras_sf2f.models import fast_conv, fused_batch_norm

_PACKAGE = "keras_sf2f"

# Repeats and residual scales of the three Inception-ResNet stages (facenet-pytorch values).
DEFAULT_REPEATS = (5, 10, 5)
BLOCK35_SCALE = 0.17
BLOCK17_SCALE = 0.10
BLOCK8_SCALE = 0.20
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9  # Keras convention; PyTorch's momentum 0.1

# Trainable parameter counts of the default configuration.
FULL_EMBEDDING_PARAMS = 23_482_624
FULL_WITH_VGGFACE2_LOGITS_PARAMS = 27_910_327
VGGFACE2_NUM_CLASSES = 8631
CASIA_WEBFACE_NUM_CLASSES = 10575

HIDDEN_STATE_NAMES = ("repeat_1", "repeat_2", "repeat_3", "embedding")
FACENET_INPUT_SIZE = 140  # SF2F resizes every face to 140x140 before FaceNet


def scaled_width(channels: int, width_multiplier: float) -> int:
    """Channel count of a layer with ``channels`` channels in the full model."""
    if width_multiplier == 1.0:
        return int(channels)
    return max(4, int(round(channels * width_multiplier)))


def l2_normalize(x, axis: int = -1):
    """``x / max(||x||, 1e-12)``, PyTorch's ``F.normalize`` (not tf.math.l2_normalize's
    ``max(||x||^2, eps)``)."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, ops.cast(1e-12, x.dtype))


def _build_chain(chain, input_shape):
    """Builds layers applied one after another; returns the final output shape."""
    shape = tuple(input_shape)
    for layer in chain:
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def _chain_output_shape(chain, input_shape):
    shape = tuple(input_shape)
    for layer in chain:
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def _run_chain(chain, x, training):
    for layer in chain:
        if isinstance(layer, layers.MaxPooling2D):
            x = layer(x)
        else:
            x = layer(x, training=training)
    return x


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BasicConv2d(layers.Layer):
    """Conv2D (no bias) -> BatchNormalization(eps 1e-3) -> ReLU.

    ``padding`` is Keras' 'valid' or 'same'; at stride 1 with odd kernels 'same' is the
    symmetric k//2 padding of the PyTorch model. PyTorch keys: ``<prefix>.conv.weight``,
    ``<prefix>.bn.{weight,bias,running_mean,running_var}``.
    """

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = (tuple(kernel_size) if isinstance(kernel_size, (list, tuple))
                            else (int(kernel_size), int(kernel_size)))
        self.strides = int(strides)
        self.padding = padding
        self.conv = fast_conv.Conv2D(self.filters, self.kernel_size, strides=self.strides,
                                     padding=padding, use_bias=False, name="conv",
                                     dtype=self.dtype_policy)
        self.bn = fused_batch_norm.BatchNormalization(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def call(self, x, training=None):
        if training and self.bn.trainable:  # batch statistics: BatchNormalization's rule
            return ops.relu(self.bn(self.conv(x), training=training))
        # Inference (the frozen face network of the perceptual loss, evaluation, the face
        # embedder): BatchNorm with its moving statistics is an affine map per output channel,
        # folded here into the convolution's kernel and a bias. The same function; one pass
        # over the activations instead of three (and, under mixed precision, no casts of them
        # to float32 and back), and the bias and ReLU fuse into the convolution. Measured on
        # the full FaceNet, batch 32, forward and input gradient: 1.31x faster in bfloat16,
        # 1.05x in float32, with the same error against float32 as the unfolded bfloat16 net.
        kernel, bias = self.folded_kernel_and_bias(x.dtype)
        y = self.conv.convolution_op(x, kernel)
        return ops.relu(ops.add(y, bias))

    def folded_kernel_and_bias(self, dtype):
        """(kernel, bias) of the convolution with the inference BatchNorm folded in:
        ``bn(conv(x, W)) = conv(x, W * s) + (beta - mean * s)``, ``s = gamma /
        sqrt(moving_variance + epsilon)``. The per-channel ``s`` and bias are computed in
        float32; the product with the kernel is taken in ``dtype``, the kernel as the
        convolution reads it (under mixed precision already cast), because this product is
        paid on every call: one pass over the weights."""
        bn = self.bn
        scale = ops.cast(bn.gamma, "float32") * ops.rsqrt(
            ops.cast(bn.moving_variance, "float32") + bn.epsilon)
        bias = ops.cast(bn.beta, "float32") - ops.cast(bn.moving_mean, "float32") * scale
        kernel = ops.cast(self.conv.kernel, dtype) * ops.cast(scale, dtype)
        return kernel, ops.cast(bias, dtype)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size),
                      strides=self.strides, padding=self.padding)
        return config


class _ResidualBlock(layers.Layer):
    """Shared logic of Block35/17/8: parallel branches, concat, 1x1 projection (with bias)
    back to the input width, ``x + scale * projection``, optional ReLU.

    Subclasses define ``_branch_specs(width_multiplier)``: one list of
    (filters, kernel_size) per branch, all stride 1 and 'same'.
    """

    def __init__(self, scale: float = 1.0, activate: bool = True,
                 width_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.activate = bool(activate)
        self.width_multiplier = float(width_multiplier)
        self.branches = []
        for b, spec in enumerate(self._branch_specs()):
            chain = [BasicConv2d(scaled_width(f, self.width_multiplier), k, padding="same",
                                 name=f"branch{b}_{i}", dtype=self.dtype_policy)
                     for i, (f, k) in enumerate(spec)]
            self.branches.append(chain)
        self.conv2d = None  # its width is the input width, known at build time

    def _branch_specs(self):
        raise NotImplementedError

    def build(self, input_shape):
        concat_channels = 0
        for chain in self.branches:
            concat_channels += _build_chain(chain, input_shape)[-1]
        self.conv2d = fast_conv.Conv2D(int(input_shape[-1]), 1, use_bias=True, name="conv2d",
                                       dtype=self.dtype_policy)
        self.conv2d.build(tuple(input_shape[:-1]) + (concat_channels,))
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, training=None):
        outs = [_run_chain(chain, x, training) for chain in self.branches]
        up = self.conv2d(ops.concatenate(outs, axis=-1))
        out = x + up * ops.cast(self.scale, up.dtype)
        return ops.relu(out) if self.activate else out

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, activate=self.activate,
                      width_multiplier=self.width_multiplier)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Block35(_ResidualBlock):
    """Inception-ResNet-A (35x35 grid in the original; 15x15 at 140x140 input)."""

    def _branch_specs(self):
        return [[(32, 1)],
                [(32, 1), (32, 3)],
                [(32, 1), (32, 3), (32, 3)]]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Block17(_ResidualBlock):
    """Inception-ResNet-B, with factorised 1x7 / 7x1 convolutions."""

    def _branch_specs(self):
        return [[(128, 1)],
                [(128, 1), (128, (1, 7)), (128, (7, 1))]]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Block8(_ResidualBlock):
    """Inception-ResNet-C, with factorised 1x3 / 3x1 convolutions."""

    def _branch_specs(self):
        return [[(192, 1)],
                [(192, 1), (192, (1, 3)), (192, (3, 1))]]


class _ReductionBlock(layers.Layer):
    """Mixed_6a / Mixed_7a: convolution branches ending in a stride-2 'valid' conv, plus a
    3x3/2 max-pool branch (the last branch), concatenated on the channel axis."""

    def __init__(self, width_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.width_multiplier = float(width_multiplier)
        self.branches = []
        for b, spec in enumerate(self._branch_specs()):
            chain = [BasicConv2d(scaled_width(f, self.width_multiplier), k, strides=s,
                                 padding=p, name=f"branch{b}_{i}", dtype=self.dtype_policy)
                     for i, (f, k, s, p) in enumerate(spec)]
            self.branches.append(chain)
        self.pool = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool",
                                        dtype=self.dtype_policy)

    def _branch_specs(self):
        raise NotImplementedError

    def build(self, input_shape):
        for chain in self.branches:
            _build_chain(chain, input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        shapes = [_chain_output_shape(chain, input_shape) for chain in self.branches]
        pooled = self.pool.compute_output_shape(input_shape)
        channels = sum(s[-1] for s in shapes) + input_shape[-1]
        return tuple(pooled[:-1]) + (channels,)

    def call(self, x, training=None):
        outs = [_run_chain(chain, x, training) for chain in self.branches]
        outs.append(self.pool(x))
        return ops.concatenate(outs, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(width_multiplier=self.width_multiplier)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Mixed6a(_ReductionBlock):
    """Reduction-A: 3x3/2 conv | 1x1 -> 3x3 -> 3x3/2 | max-pool."""

    def _branch_specs(self):
        return [[(384, 3, 2, "valid")],
                [(192, 1, 1, "valid"), (192, 3, 1, "same"), (256, 3, 2, "valid")]]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Mixed7a(_ReductionBlock):
    """Reduction-B: three conv branches ending in 3x3/2 convs, plus max-pool."""

    def _branch_specs(self):
        return [[(256, 1, 1, "valid"), (384, 3, 2, "valid")],
                [(256, 1, 1, "valid"), (256, 3, 2, "valid")],
                [(256, 1, 1, "valid"), (256, 3, 1, "same"), (256, 3, 2, "valid")]]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FaceNet(keras.Model):
    """Inception-ResNet-v1 face embedder (facenet-pytorch ``InceptionResnetV1``), NHWC.

    Args:
      num_classes: size of the optional ``logits`` Dense head (8631 for the VGGFace2 weights,
        10575 for CASIA-WebFace); None for no head.
      embedding_dim: width of ``last_linear``/``last_bn`` (512 in FaceNet).
      width_multiplier: scales every channel count of the trunk (rounded, at least 4).
      repeats: number of Block35 / Block17 / Block8 blocks in ``repeat_1/2/3`` (5, 10, 5).
      dropout_rate: dropout before ``last_linear`` (facenet-pytorch's 0.6; inactive at inference).

    Calling:
      ``model(images, training=False)`` -> L2-normalised embeddings (B, embedding_dim).
      ``model(images, return_hidden_states=True)`` or ``model.hidden_states(images)`` ->
        ``[repeat_1, repeat_2, repeat_3, embedding]``, the four tensors SF2F's perceptual loss
        compares (``repeat_3`` is taken before the final no-ReLU ``block8``).
      ``model.features(images, training)`` -> dict with those plus ``block8``, ``pooled``
        (B, C) after global average pooling, ``bottleneck`` (``last_bn`` output before
        normalisation) and ``logits`` (if ``num_classes``).
    ``images`` are (B, H, W, 3) in FaceNet's standardised space; H = W = 140 in SF2F (any size
    of at least 75 works with this topology).
    """

    def __init__(self, num_classes: int | None = None, embedding_dim: int = 512,
                 width_multiplier: float = 1.0, repeats: Sequence[int] = DEFAULT_REPEATS,
                 dropout_rate: float = 0.6, name: str = "facenet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.width_multiplier = float(width_multiplier)
        self.repeats = tuple(int(r) for r in repeats)
        if len(self.repeats) != 3 or min(self.repeats) < 0:
            raise ValueError(f"repeats must be three non-negative ints, got {repeats!r}")
        self.dropout_rate = float(dropout_rate)
        w = self.width_multiplier
        policy = self.dtype_policy

        def basic(name, filters, kernel, strides=1, padding="valid"):
            return BasicConv2d(scaled_width(filters, w), kernel, strides=strides,
                               padding=padding, name=name, dtype=policy)

        self.conv2d_1a = basic("conv2d_1a", 32, 3, 2)
        self.conv2d_2a = basic("conv2d_2a", 32, 3)
        self.conv2d_2b = basic("conv2d_2b", 64, 3, padding="same")
        self.maxpool_3a = layers.MaxPooling2D(3, strides=2, name="maxpool_3a", dtype=policy)
        self.conv2d_3b = basic("conv2d_3b", 80, 1)
        self.conv2d_4a = basic("conv2d_4a", 192, 3)
        self.conv2d_4b = basic("conv2d_4b", 256, 3, 2)
        self.repeat_1 = [Block35(BLOCK35_SCALE, width_multiplier=w, name=f"repeat_1_{i}",
                                 dtype=policy) for i in range(self.repeats[0])]
        self.mixed_6a = Mixed6a(width_multiplier=w, name="mixed_6a", dtype=policy)
        self.repeat_2 = [Block17(BLOCK17_SCALE, width_multiplier=w, name=f"repeat_2_{i}",
                                 dtype=policy) for i in range(self.repeats[1])]
        self.mixed_7a = Mixed7a(width_multiplier=w, name="mixed_7a", dtype=policy)
        self.repeat_3 = [Block8(BLOCK8_SCALE, width_multiplier=w, name=f"repeat_3_{i}",
                                dtype=policy) for i in range(self.repeats[2])]
        self.block8 = Block8(1.0, activate=False, width_multiplier=w, name="block8",
                             dtype=policy)
        self.dropout = layers.Dropout(self.dropout_rate, name="dropout", dtype=policy)
        self.last_linear = layers.Dense(self.embedding_dim, use_bias=False, name="last_linear",
                                        dtype=policy)
        self.last_bn = fused_batch_norm.BatchNormalization(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="last_bn", dtype=policy)
        self.logits = (layers.Dense(self.num_classes, name="logits", dtype=policy)
                       if self.num_classes else None)

    # -- topology ---------------------------------------------------------------------------

    def _stem(self):
        return [self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a,
                self.conv2d_3b, self.conv2d_4a, self.conv2d_4b]

    def build(self, input_shape):
        shape = (None,) + tuple(input_shape[1:])
        shape = _build_chain(self._stem() + self.repeat_1 + [self.mixed_6a] + self.repeat_2
                             + [self.mixed_7a] + self.repeat_3 + [self.block8], shape)
        pooled = (None, shape[-1])
        self.last_linear.build(pooled)
        self.last_bn.build((None, self.embedding_dim))
        if self.logits is not None:
            self.logits.build((None, self.embedding_dim))
        self.built = True

    def features(self, images, training=False) -> dict:
        """All intermediate outputs by name (see the class docstring)."""
        if not self.built:
            self.build(tuple(images.shape))
        x = _run_chain(self._stem(), images, training)
        x = _run_chain(self.repeat_1, x, training)
        repeat_1 = x
        x = self.mixed_6a(x, training=training)
        x = _run_chain(self.repeat_2, x, training)
        repeat_2 = x
        x = self.mixed_7a(x, training=training)
        x = _run_chain(self.repeat_3, x, training)
        repeat_3 = x
        x = self.block8(x, training=training)
        block8 = x
        pooled = ops.mean(x, axis=(1, 2))
        x = self.dropout(pooled, training=training)
        x = self.last_linear(x)
        bottleneck = self.last_bn(x, training=training)
        out = dict(repeat_1=repeat_1, repeat_2=repeat_2, repeat_3=repeat_3, block8=block8,
                   pooled=pooled, bottleneck=bottleneck, embedding=l2_normalize(bottleneck))
        if self.logits is not None:
            out["logits"] = self.logits(bottleneck)
        return out

    def hidden_states(self, images, training=False) -> list:
        """``[repeat_1, repeat_2, repeat_3, embedding]`` (SF2F's ``get_hidden_states``)."""
        f = self.features(images, training=training)
        return [f[k] for k in HIDDEN_STATE_NAMES]

    def call(self, images, training=None, return_hidden_states=False):
        if return_hidden_states:
            return self.hidden_states(images, training=training)
        return self.features(images, training=training)["embedding"]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    # -- configuration ----------------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, embedding_dim=self.embedding_dim,
                      width_multiplier=self.width_multiplier, repeats=list(self.repeats),
                      dropout_rate=self.dropout_rate)
        return config

    @classmethod
    def small(cls, num_classes: int | None = None, embedding_dim: int = 128,
              width_multiplier: float = 0.25, repeats: Sequence[int] = (1, 2, 1),
              **kwargs) -> "FaceNet":
        """The project's small face-identity network: same topology, a quarter of the width
        and one/two/one blocks per stage, a 128-d embedding (trained by the project on the
        embedded corpus on 2 CPU cores). Hidden states at 140x140: (B,15,15,64), (B,7,7,224),
        (B,3,3,448), (B,128)."""
        return cls(num_classes=num_classes, embedding_dim=embedding_dim,
                   width_multiplier=width_multiplier, repeats=repeats, **kwargs)


def trainable_parameter_count(model: keras.Model) -> int:
    """Trainable parameters (weights and BN gamma/beta), this project's convention."""
    return int(sum(int(ops.size(w)) for w in model.trainable_weights))
