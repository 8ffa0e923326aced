"""Voice encoder: log-mel frames -> unit-norm voice embedding.

The reference ``V2F1DCNN`` in both of its modes:

* ``mode='inception'`` (SF2F): four Inception1DBlocks (branch widths channels[i] // 4), each
  halving the time axis;
* ``mode='cnn'`` (the voice2face baseline, ``VoiceEmbedNet``): four Conv1DBlocks (k3, s2, p1);

then Conv1D(embedding_dim, k3, s2, p1, with bias), the mean over the remaining ceil(L/32) steps
and L2 normalisation.

Inputs are NLC: one crop per item [B, L, 40], or a stack of windows per identity
[B, N, L, 40] (optionally with a boolean segment mask [B, N]). Segment stacks are encoded window
by window (each embedding unit-norm), then

* fused by the attention fuser and re-normalised when a fuser is attached (SF2F stage 2), or
* averaged without re-normalisation otherwise (the reference's ``average_voice_embedding``
  evaluation mode for stage-1 models).

The baseline's noise (``add_noise``): embedding + stddev * N(0, 1), then re-normalised. The
reference applies it in evaluation too (not gated on ``training``); ``noise_at_inference=True``
keeps that behaviour, ``False`` makes the baseline deterministic at inference.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_sf2f.models import fast_conv
from keras_sf2f.models.fuser import AttentionFuser, masked_mean
from keras_sf2f.models.layers import (PACKAGE, Conv1DBlock, Inception1DBlock, l2_normalize,
                                      torch_bias_initializer, torch_kernel_initializer)

ENCODER_MODES = ("inception", "cnn")


@keras.saving.register_keras_serializable(package=PACKAGE)
class VoiceEncoder(keras.Model):
    """Log-mel [B, L, C] or [B, N, L, C] -> L2-normalised embedding [B, embedding_dim]."""

    def __init__(self, mode: str = "inception", channels=(256, 384, 576, 864),
                 embedding_dim: int = 512, input_channels: int = 40, add_noise: bool = False,
                 noise_stddev: float = 0.05, noise_at_inference: bool = True,
                 fuser: AttentionFuser | dict | None = None, seed: int | None = None,
                 voice_quality_channels: int = 0, **kwargs):
        super().__init__(**kwargs)
        if mode not in ENCODER_MODES:
            raise ValueError(f"encoder mode must be one of {ENCODER_MODES}, got {mode!r}")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 4:
            raise ValueError(f"the encoder has 4 blocks; got channels={channels}")
        if mode == "inception" and any(c % 4 for c in channels):
            raise ValueError(f"inception mode splits each block's channels over 4 branches; "
                             f"channels must be multiples of 4, got {channels}")
        self.mode = mode
        self.channels = channels
        self.embedding_dim = int(embedding_dim)
        self.input_channels = int(input_channels)
        # How many of the last input channels are voice-quality channels (after the log-mels):
        # the encoder treats all channels alike; this says what a served graph must compute.
        self.voice_quality_channels = int(voice_quality_channels)
        if not 0 <= self.voice_quality_channels < self.input_channels:
            raise ValueError(f"voice_quality_channels must be in [0, input_channels), got "
                             f"{voice_quality_channels} of {input_channels}")
        self.add_noise = bool(add_noise)
        self.noise_stddev = float(noise_stddev)
        self.noise_at_inference = bool(noise_at_inference)
        self.seed = seed

        for index, width in enumerate(channels):
            if mode == "inception":
                block = Inception1DBlock(width // 4, name=f"block_{index}")
            else:
                block = Conv1DBlock(width, 3, 2, 1, name=f"block_{index}")
            setattr(self, f"block_{index}", block)
        self.output_pad = keras.layers.ZeroPadding1D((1, 1), name="output_pad")
        self.output_conv = fast_conv.Conv1D(
            self.embedding_dim, 3, strides=2, padding="valid",
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(3 * channels[-1]), name="output_conv")

        if isinstance(fuser, dict):
            fuser = keras.saving.deserialize_keras_object(fuser)
        if fuser is not None and fuser.embedding_dim != self.embedding_dim:
            raise ValueError(f"fuser embedding_dim {fuser.embedding_dim} != encoder "
                             f"embedding_dim {self.embedding_dim}")
        self.fuser = fuser
        # The noise draws use a tracked seed generator so that traced functions get fresh noise
        # on every call; only created when needed (it adds a state variable).
        self.noise_seed_generator = (keras.random.SeedGenerator(seed, name="noise_seed")
                                     if self.add_noise else None)

    @property
    def blocks(self):
        return [getattr(self, f"block_{index}") for index in range(len(self.channels))]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (3, 4):
            raise ValueError(f"{self.name}: expects [B, L, C] or [B, N, L, C], got {input_shape}")
        if input_shape[-1] is not None and input_shape[-1] != self.input_channels:
            raise ValueError(f"{self.name}: expects {self.input_channels} mel channels, "
                             f"got {input_shape[-1]}")
        shape = (None, None, self.input_channels)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        shape = self.output_pad.compute_output_shape(shape)
        self.output_conv.build(shape)
        # A fuser restored from a config arrives already built.
        if self.fuser is not None and not self.fuser.built:
            self.fuser.build((None, None, self.embedding_dim))
        self.built = True

    def embed(self, mels, training=None):
        """One embedding per crop: [B, L, C] -> unit-norm [B, D] (with noise if configured)."""
        x = mels
        for block in self.blocks:
            x = block(x, training=training)
        x = self.output_conv(self.output_pad(x))
        embeddings = l2_normalize(ops.mean(x, axis=1))
        if self.add_noise and (training or self.noise_at_inference):
            noise = keras.random.normal(ops.shape(embeddings), stddev=self.noise_stddev,
                                        dtype=embeddings.dtype, seed=self.noise_seed_generator)
            embeddings = l2_normalize(embeddings + noise)
        return embeddings

    def embed_segments(self, segments, training=None):
        """One embedding per window: [B, N, L, C] -> unit-norm [B, N, D]."""
        shape = ops.shape(segments)
        flat = ops.reshape(segments, (-1, shape[2], self.input_channels))
        embeddings = self.embed(flat, training=training)
        return ops.reshape(embeddings, (shape[0], shape[1], self.embedding_dim))

    def fuse(self, segment_embeddings, segment_mask=None):
        """[B, N, D] -> [B, D]: attention fusion + re-normalisation, or a plain (masked) mean."""
        if self.fuser is None:
            return masked_mean(segment_embeddings, segment_mask)
        return l2_normalize(self.fuser(segment_embeddings, segment_mask))

    def call(self, mels, segment_mask=None, training=None):
        if len(mels.shape) == 4:
            return self.fuse(self.embed_segments(mels, training=training), segment_mask)
        return self.embed(mels, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode, channels=list(self.channels), embedding_dim=self.embedding_dim,
            input_channels=self.input_channels, add_noise=self.add_noise,
            noise_stddev=self.noise_stddev, noise_at_inference=self.noise_at_inference,
            fuser=(None if self.fuser is None
                   else keras.saving.serialize_keras_object(self.fuser)),
            seed=self.seed, voice_quality_channels=self.voice_quality_channels)
        return config
