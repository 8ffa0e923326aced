"""Image discriminators of SF2F.

Both discriminators start with a conv stack described by the reference's architecture string
(``build_cnn``): comma-separated layers

* ``CK-X``      KxK convolution to X channels, stride 1;
* ``CK-X-S``    ... with stride S, padding from the padding mode ('valid' -> 0, 'same' -> (K-1)/2);
* ``CK-X-S-P``  ... with explicit symmetric padding P;
* optional leading ``IX``: X input channels (default 3).

Every convolution has a bias. Before every convolution except the first come the normalization
(``batch`` or ``none``) and the activation (``leakyrelu-<slope>``, ``leakyrelu`` = slope 0.01,
``relu`` or ``none``); nothing follows the last convolution.

* ``PatchDiscriminator``: conv stack -> Conv 1x1 to one logit per patch, [B, h, w, 1].
* ``AuxiliaryClassifier`` (reference ``AcDiscriminator``): conv stack -> global average pool ->
  Dense(1024) -> two heads on the same features with no nonlinearity in between: real/fake
  logits [B, 1] and identity logits [B, num_identities]. The identity cross-entropy is the loss
  code's job (the reference computed it inside the module).
"""

from __future__ import annotations

import dataclasses

import keras

from keras_sf2f.models import fast_conv
# The architecture strings are parsed without Keras (discriminator_arch.py), so that flag
# validation does not start TensorFlow; the names stay importable from here.
from keras_sf2f.models.discriminator_arch import (  # noqa: F401
    NORMALIZATIONS, PADDING_MODES, ConvSpec, check_normalization, conv_stack_output_size,
    parse_activation, parse_discriminator_arch)
from keras_sf2f.models.layers import (PACKAGE, batch_normalization, torch_bias_initializer,
                                      torch_kernel_initializer)

@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvStack(keras.layers.Layer):
    """The reference ``build_cnn`` stack for an architecture string (see module docstring).

    Sub-layers: ``conv_j`` (and ``pad_j`` when its padding > 0) for the j-th convolution, and for
    j >= 1 ``norm_j`` / ``act_j`` placed before it.
    """

    def __init__(self, arch: str, normalization: str = "batch",
                 activation: str = "leakyrelu-0.1", padding: str = "valid", **kwargs):
        super().__init__(**kwargs)
        self.arch = str(arch)
        self.normalization = check_normalization(normalization)
        self.activation = str(activation)
        self.padding = str(padding)
        self.input_channels, self.specs = parse_discriminator_arch(self.arch, self.padding)
        act_kind, slope = parse_activation(self.activation)
        channels = self.input_channels
        for index, spec in enumerate(self.specs):
            if index > 0:
                if self.normalization == "batch":
                    setattr(self, f"norm_{index}", batch_normalization(f"norm_{index}"))
                if act_kind == "leakyrelu":
                    setattr(self, f"act_{index}",
                            keras.layers.LeakyReLU(negative_slope=slope, name=f"act_{index}"))
                elif act_kind == "relu":
                    setattr(self, f"act_{index}", keras.layers.ReLU(name=f"act_{index}"))
            if spec.padding:
                setattr(self, f"pad_{index}",
                        keras.layers.ZeroPadding2D(spec.padding, name=f"pad_{index}"))
            setattr(self, f"conv_{index}", fast_conv.Conv2D(
                spec.filters, spec.kernel_size, strides=spec.strides, padding="valid",
                kernel_initializer=torch_kernel_initializer(),
                bias_initializer=torch_bias_initializer(
                    channels * spec.kernel_size * spec.kernel_size),
                name=f"conv_{index}"))
            channels = spec.filters
        self.output_channels = channels

    def _layers_of(self, index):
        """The layers applied for convolution ``index``, in order (norm, act, pad, conv)."""
        names = [f"norm_{index}", f"act_{index}", f"pad_{index}", f"conv_{index}"]
        return [getattr(self, name) for name in names if hasattr(self, name)]

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.input_channels:
            raise ValueError(f"{self.name}: expects {self.input_channels} input channels, "
                             f"got {input_shape[-1]}")
        shape = tuple(input_shape)
        for index in range(len(self.specs)):
            for layer in self._layers_of(index):
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, images, training=None):
        x = images
        for index in range(len(self.specs)):
            for layer in self._layers_of(index):
                if isinstance(layer, keras.layers.BatchNormalization):
                    x = layer(x, training=training)
                else:
                    x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for index in range(len(self.specs)):
            for layer in self._layers_of(index):
                shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(arch=self.arch, normalization=self.normalization,
                      activation=self.activation, padding=self.padding)
        return config


def _check_image_size(arch, specs, image_size):
    size = conv_stack_output_size(image_size, specs)
    if size < 1:
        raise ValueError(f"discriminator architecture {arch!r} reduces a {image_size}px image "
                         f"to nothing ({size}px)")


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchDiscriminator(keras.Model):
    """Real/fake patch discriminator: images [B, S, S, 3] -> logits [B, h, w, 1]."""

    def __init__(self, arch: str, normalization: str = "batch",
                 activation: str = "leakyrelu-0.1", padding: str = "valid",
                 image_size: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.cnn = ConvStack(arch, normalization, activation, padding, name="cnn")
        _check_image_size(arch, self.cnn.specs, self.image_size)
        self.classifier = fast_conv.Conv2D(
            1, 1, kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(self.cnn.output_channels), name="classifier")

    def build(self, input_shape):
        shape = (None, self.image_size, self.image_size, self.cnn.input_channels)
        self.cnn.build(shape)
        self.classifier.build(self.cnn.compute_output_shape(shape))
        self.built = True

    def call(self, images, training=None):
        return self.classifier(self.cnn(images, training=training))

    def compute_output_shape(self, input_shape):
        return self.classifier.compute_output_shape(self.cnn.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(arch=self.cnn.arch, normalization=self.cnn.normalization,
                      activation=self.cnn.activation, padding=self.cnn.padding,
                      image_size=self.image_size)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxiliaryClassifier(keras.Model):
    """AC discriminator: images -> (real/fake logits [B, 1], identity logits [B, N_id])."""

    def __init__(self, arch: str, num_identities: int, normalization: str = "batch",
                 activation: str = "leakyrelu-0.1", padding: str = "valid",
                 image_size: int = 64, feature_dim: int = 1024, **kwargs):
        super().__init__(**kwargs)
        if int(num_identities) < 1:
            raise ValueError(f"num_identities must be >= 1, got {num_identities}")
        self.num_identities = int(num_identities)
        self.image_size = int(image_size)
        self.feature_dim = int(feature_dim)
        self.cnn = ConvStack(arch, normalization, activation, padding, name="cnn")
        _check_image_size(arch, self.cnn.specs, self.image_size)
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.feature = keras.layers.Dense(
            self.feature_dim, kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(self.cnn.output_channels), name="feature")
        self.real_classifier = keras.layers.Dense(
            1, kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(self.feature_dim), name="real_classifier")
        self.id_classifier = keras.layers.Dense(
            self.num_identities, kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(self.feature_dim), name="id_classifier")

    def build(self, input_shape):
        shape = (None, self.image_size, self.image_size, self.cnn.input_channels)
        self.cnn.build(shape)
        self.feature.build((None, self.cnn.output_channels))
        self.real_classifier.build((None, self.feature_dim))
        self.id_classifier.build((None, self.feature_dim))
        self.built = True

    def call(self, images, training=None):
        features = self.feature(self.pool(self.cnn(images, training=training)))
        return self.real_classifier(features), self.id_classifier(features)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1), (input_shape[0], self.num_identities)

    def get_config(self):
        config = super().get_config()
        config.update(arch=self.cnn.arch, num_identities=self.num_identities,
                      normalization=self.cnn.normalization, activation=self.cnn.activation,
                      padding=self.cnn.padding, image_size=self.image_size,
                      feature_dim=self.feature_dim)
        return config
