"""The generator: voice encoder (+ optional attention fuser, owned by the encoder) + face decoder.

Equivalent of the reference ``EncoderDecoder``. The fuser lives inside the encoder
(``generator.encoder.fuser``), as in the reference (``encoder.attn_fuser``), so the checkpoint
and the parameter counts keep encoder, fuser and decoder apart.
"""

from __future__ import annotations

import keras

from keras_sf2f.models.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class VoiceToFaceGenerator(keras.Model):
    """Log-mel -> (images, embedding).

    call(mels, segment_mask=None, training=None):
      mels: [B, frames, 40] (one crop per item) or [B, segments, frames, 40] (a window stack per
        identity, fused by the encoder's fuser or averaged without one); segment_mask: optional
        bool [B, segments] marking real windows.
      returns (images, embedding): images is a list with one [B, S, S, 3] tensor per output
        resolution, lowest first (``output_resolutions``); embedding is [B, embedding_dim].
    """

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if isinstance(decoder, dict):
            decoder = keras.saving.deserialize_keras_object(decoder)
        if encoder.embedding_dim != decoder.embedding_dim:
            raise ValueError(f"encoder embedding_dim {encoder.embedding_dim} != decoder "
                             f"embedding_dim {decoder.embedding_dim}")
        self.encoder = encoder
        self.decoder = decoder

    @property
    def output_resolutions(self) -> tuple[int, ...]:
        return tuple(self.decoder.output_resolutions)

    @property
    def fuser(self):
        return self.encoder.fuser

    def build(self, input_shape):
        # Sub-models restored from a config (or shared with other code) may be built already.
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if not self.decoder.built:
            self.decoder.build((None, self.encoder.embedding_dim))
        self.built = True

    def call(self, mels, segment_mask=None, training=None):
        embedding = self.encoder(mels, segment_mask=segment_mask, training=training)
        images = self.decoder(embedding, training=training)
        if not isinstance(images, (list, tuple)):
            images = [images]
        return list(images), embedding

    def train_fuser_only(self):
        """Stage 2 (fuser training): only the fuser stays trainable.

        Frozen Keras layers run their BatchNorm in inference mode, which is the reference's
        intent ("freeze batchnorm"); the reference's accidental switch back to train mode is not
        reproduced here.
        """
        if self.encoder.fuser is None:
            raise ValueError("train_fuser_only needs an encoder with a fuser")
        self.trainable = True
        self.decoder.trainable = False
        for layer in self.encoder.blocks + [self.encoder.output_conv]:
            layer.trainable = False
        self.encoder.fuser.trainable = True

    def compute_output_shape(self, input_shape):
        return ([(input_shape[0], size, size, 3) for size in self.output_resolutions],
                (input_shape[0], self.encoder.embedding_dim))

    def get_config(self):
        config = super().get_config()
        config.update(encoder=keras.saving.serialize_keras_object(self.encoder),
                      decoder=keras.saving.serialize_keras_object(self.decoder))
        return config
