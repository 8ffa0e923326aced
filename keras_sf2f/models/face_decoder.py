"""Face decoders: voice embedding [B, D] -> face image(s) NHWC.

* ``FaceDecoder`` (reference ``FaceGanDecoder``, SF2F 64x64): Dense(D -> 32*D, no bias) ->
  BatchNorm -> GLU -> [B, D, 4, 4] channel-major, transposed to NHWC [B, 4, 4, D] -> four UpBlocks
  (D/2, D/4, D/8, D/16 channels) -> ToImage (conv3 + LeakyReLU(0.01) + conv1) -> [B, 64, 64, 3].
* ``MultiResolutionFaceDecoder`` (reference ``FaceGanDecoder_v2``, SF2F 128x128): the same trunk
  and 64x64 head, plus one more UpBlock (D/32 channels) and head -> [img_64, img_128].
* ``DeconvFaceDecoder`` (reference ``V2FDecoder``, voice2face baseline): transposed convolutions
  4x4 s1 p0 -> 4x4 s2 p1 (x4) -> 1x1, ReLU after all but the last -> [B, 64, 64, 3].

No output activation anywhere: images are in ImageNet-normalised space and only clamped when
converted back to pixels. The reference decoder's ``normalization``/
``activation`` kwargs were ignored by the reference and do not exist here.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_sf2f.models.layers import (GLU, PACKAGE, ToImage, UpBlock, batch_normalization,
                                      torch_bias_initializer, torch_kernel_initializer)


def _flatten_embedding(embeddings, embedding_dim):
    """Accepts [B, D] (or the reference's [B, D, 1, 1] squeezed to any rank) -> [B, D]."""
    if len(embeddings.shape) != 2:
        embeddings = ops.reshape(embeddings, (-1, embedding_dim))
    return embeddings


@keras.saving.register_keras_serializable(package=PACKAGE)
class FaceDecoder(keras.Model):
    """SF2F upsampling decoder: [B, D] -> [B, image_size, image_size, 3]."""

    def __init__(self, embedding_dim: int = 512, image_size: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.image_size = int(image_size)
        num_up_blocks = int(round(math.log2(self.image_size))) - 2
        if num_up_blocks < 1 or 4 * 2 ** num_up_blocks != self.image_size:
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        if self.embedding_dim % 2 ** num_up_blocks:
            raise ValueError(f"embedding_dim {embedding_dim} must be divisible by "
                             f"{2 ** num_up_blocks} for a {image_size}px decoder")
        self.num_up_blocks = num_up_blocks
        # fc: the embedding becomes a 4x4 map with embedding_dim channels (after the GLU halves
        # the 2 * 16 * D features).
        self.fc_dense = keras.layers.Dense(
            self.embedding_dim * 4 * 4 * 2, use_bias=False,
            kernel_initializer=torch_kernel_initializer(), name="fc_dense")
        self.fc_norm = batch_normalization("fc_norm")
        self.fc_glu = GLU(name="fc_glu")
        for index in range(num_up_blocks):
            setattr(self, f"up_block_{index}",
                    UpBlock(self.embedding_dim // 2 ** (index + 1), name=f"up_block_{index}"))
        self.trunk_channels = self.embedding_dim // 2 ** num_up_blocks
        self.to_image = ToImage(self.trunk_channels, name="to_image")

    @property
    def output_resolutions(self) -> tuple[int, ...]:
        return (self.image_size,)

    @property
    def up_blocks(self):
        return [getattr(self, f"up_block_{index}") for index in range(self.num_up_blocks)]

    def build(self, input_shape):
        self.fc_dense.build((None, self.embedding_dim))
        self.fc_norm.build((None, self.embedding_dim * 32))
        shape = (None, 4, 4, self.embedding_dim)
        for block in self.up_blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.to_image.build(shape)
        self._build_extra(shape)
        self.built = True

    def _build_extra(self, trunk_shape):
        """Hook for subclasses adding heads on the trunk output."""

    def trunk(self, embeddings, training=None):
        """[B, D] -> the last up block's feature map [B, image_size, image_size, D/2^k]."""
        x = _flatten_embedding(embeddings, self.embedding_dim)
        x = self.fc_norm(self.fc_dense(x), training=training)
        x = self.fc_glu(x)
        # PyTorch views the 16*D features as (D, 4, 4): channel-major. Reshape that way, then
        # move channels last.
        x = ops.transpose(ops.reshape(x, (-1, self.embedding_dim, 4, 4)), (0, 2, 3, 1))
        for block in self.up_blocks:
            x = block(x, training=training)
        return x

    def call(self, embeddings, training=None):
        return self.to_image(self.trunk(embeddings, training=training))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, image_size=self.image_size)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiResolutionFaceDecoder(FaceDecoder):
    """SF2F 128 decoder: [B, D] -> [img_64 [B,64,64,3], img_128 [B,128,128,3]].

    ``image_size`` is the low (trunk) resolution; the extra head doubles it.
    """

    def __init__(self, embedding_dim: int = 512, image_size: int = 64, **kwargs):
        super().__init__(embedding_dim=embedding_dim, image_size=image_size, **kwargs)
        self.up_block_high = UpBlock(self.trunk_channels // 2, name="up_block_high")
        self.to_image_high = ToImage(self.trunk_channels // 2, name="to_image_high")

    @property
    def output_resolutions(self) -> tuple[int, ...]:
        return (self.image_size, 2 * self.image_size)

    def _build_extra(self, trunk_shape):
        self.up_block_high.build(trunk_shape)
        self.to_image_high.build(self.up_block_high.compute_output_shape(trunk_shape))

    def call(self, embeddings, training=None):
        features = self.trunk(embeddings, training=training)
        image_low = self.to_image(features)
        image_high = self.to_image_high(self.up_block_high(features, training=training))
        return [image_low, image_high]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], size, size, 3) for size in self.output_resolutions]


@keras.saving.register_keras_serializable(package=PACKAGE)
class DeconvFaceDecoder(keras.Model):
    """voice2face baseline decoder: [B, D] -> [B, 2^(len(channels)+1), same, 3] (64 by default).

    PyTorch ConvTranspose2d(k4, s2, p1) equals Keras Conv2DTranspose(k4, s2, 'same') (TF pads 1
    on each side for it), and k4, s1, p0 on a 1x1 input equals 'valid'.
    """

    def __init__(self, embedding_dim: int = 512, channels=(1024, 512, 256, 128, 64),
                 output_channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.channels = tuple(int(c) for c in channels)
        self.output_channels = int(output_channels)
        for index, width in enumerate(self.channels):
            kernel, strides, padding = (4, 1, "valid") if index == 0 else (4, 2, "same")
            setattr(self, f"deconv_{index}", keras.layers.Conv2DTranspose(
                width, kernel, strides=strides, padding=padding, activation="relu",
                kernel_initializer=torch_kernel_initializer(),
                # PyTorch's ConvTranspose fan_in is out_channels * k * k (weight dim 1).
                bias_initializer=torch_bias_initializer(width * kernel * kernel),
                name=f"deconv_{index}"))
        self.deconv_out = keras.layers.Conv2DTranspose(
            self.output_channels, 1, kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(self.output_channels), name="deconv_out")

    @property
    def image_size(self) -> int:
        return 2 ** (len(self.channels) + 1)

    @property
    def output_resolutions(self) -> tuple[int, ...]:
        return (self.image_size,)

    @property
    def deconvs(self):
        return ([getattr(self, f"deconv_{index}") for index in range(len(self.channels))]
                + [self.deconv_out])

    def build(self, input_shape):
        shape = (None, 1, 1, self.embedding_dim)
        for layer in self.deconvs:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, embeddings, training=None):
        x = ops.reshape(_flatten_embedding(embeddings, self.embedding_dim),
                        (-1, 1, 1, self.embedding_dim))
        for layer in self.deconvs:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, self.output_channels)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, channels=list(self.channels),
                      output_channels=self.output_channels)
        return config
