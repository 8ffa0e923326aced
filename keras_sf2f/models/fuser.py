"""Attention fuser: many per-segment voice embeddings -> one embedding.

SF2F's second stage encodes up to 20 speech windows of an identity separately and fuses their
unit-norm embeddings E [B, N, D] with one layer of 'general' self-attention (the reference's
``AttentionFuserV1``, query = context = E):

    Q = E W_in                     linear_in, no bias
    A = softmax_keys(Q E^T)        no 1/sqrt(d) scaling
    M = A E
    O = [M, Q] W_out               linear_out on concat([mix, projected query]), no bias, no tanh
    fused = mean over the N queries of O

The encoder L2-normalises the result. Unlike the reference, an optional boolean segment mask
[B, N] lets batches hold identities with different numbers of windows (export, evaluation):
masked-out segments are excluded both as attention keys and from the final mean. With an
all-true mask (or none) the computation is the reference's.
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

from keras_sf2f.models.layers import PACKAGE, torch_kernel_initializer

# Score given to masked-out keys. Finite so that a row with no valid key (an all-padding
# identity) still gives a finite uniform softmax instead of NaN; representable in bfloat16.
_MASKED_SCORE = -1e9


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionFuser(keras.layers.Layer):
    """Fuses segment embeddings [B, N, D] (optionally masked) into [B, output_dim]."""

    def __init__(self, embedding_dim: int = 512, output_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.output_dim = int(output_dim or embedding_dim)
        self.linear_in = keras.layers.Dense(
            self.embedding_dim, use_bias=False, kernel_initializer=torch_kernel_initializer(),
            name="linear_in")
        # Kernel rows 0..D-1 act on the attention mix, rows D..2D-1 on the projected query.
        self.linear_out = keras.layers.Dense(
            self.output_dim, use_bias=False, kernel_initializer=torch_kernel_initializer(),
            name="linear_out")

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.embedding_dim:
            raise ValueError(f"{self.name}: expects embeddings of size {self.embedding_dim}, "
                             f"got {input_shape[-1]}")
        self.linear_in.build((None, self.embedding_dim))
        self.linear_out.build((None, 2 * self.embedding_dim))
        self.built = True

    def attend(self, segment_embeddings, segment_mask=None):
        """Per-query outputs O [B, N, output_dim] and attention weights A [B, N, N]."""
        context = segment_embeddings
        query = self.linear_in(context)
        scores = ops.matmul(query, ops.transpose(context, (0, 2, 1)))
        if segment_mask is not None:
            key_mask = ops.expand_dims(ops.cast(segment_mask, "bool"), 1)  # [B, 1, N]
            scores = ops.where(key_mask, scores, ops.cast(_MASKED_SCORE, scores.dtype))
        with warnings.catch_warnings():
            # One segment (N = 1) is legitimate here: its softmax weight is 1, as in the
            # reference. Keras warns about size-1 softmax axes; silence just that.
            warnings.filterwarnings("ignore", message="You are using a softmax over axis")
            weights = ops.softmax(scores, axis=-1)
        mix = ops.matmul(weights, context)
        outputs = self.linear_out(ops.concatenate([mix, query], axis=-1))
        return outputs, weights

    def initialize_as_average(self):
        """Sets ``linear_out`` to pass the attention mix through unchanged ([I; 0]), so the
        fused embedding starts as an attention-weighted average of the segment embeddings:
        what a stage-1 decoder already understands. (The reference starts from a random
        projection, which the decoder has never seen; see --fuser_init.)"""
        if self.output_dim != self.embedding_dim:
            raise ValueError(f"{self.name}: an averaging start needs output_dim == "
                             f"embedding_dim, got {self.output_dim} and {self.embedding_dim}")
        kernel = self.linear_out.kernel
        identity = ops.eye(self.embedding_dim, dtype=kernel.dtype)
        kernel.assign(ops.concatenate([identity, ops.zeros_like(identity)], axis=0))

    def call(self, segment_embeddings, segment_mask=None):
        outputs, _ = self.attend(segment_embeddings, segment_mask)
        return masked_mean(outputs, segment_mask)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, output_dim=self.output_dim)
        return config


def masked_mean(values, segment_mask=None):
    """Mean of values [B, N, D] over N, counting only segments whose mask is true.

    Without a mask this is the plain mean. A row whose mask is all false gives zeros.
    """
    if segment_mask is None:
        return ops.mean(values, axis=1)
    weights = ops.cast(ops.expand_dims(segment_mask, -1), values.dtype)  # [B, N, 1]
    total = ops.sum(values * weights, axis=1)
    count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1, values.dtype))
    return total / count
