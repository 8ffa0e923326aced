"""BatchNormalization whose training-mode pass is one fused TensorFlow op.

Keras 3's ``BatchNormalization`` computes training-mode statistics and the normalisation from
separate ops: a cast of the activations to float32 and back under mixed precision, a mean, a
squared difference and a second mean, then a multiply and an add; its gradient is as many
again (sums, tiles, multiplies). On the SF2F step these were about a third of the op time
(SF2F-128, mixed_bfloat16, Intel Xeon AMX, profiled with ``bench_training.py
--bench_profile_dir``), more than all forward convolutions. TensorFlow's ``FusedBatchNormV3``
does the same in one op forward and one backward (oneDNN's kernel on x86, cuDNN's on GPUs,
XLA-compilable), reading bfloat16/float16 activations and accumulating in float32 as Keras's
cast does.

Same function, same variables, same checkpoints: the batch mean and the *biased* batch
variance normalise, the moving statistics are updated exactly as Keras updates them
(``moving = moving * momentum + batch * (1 - momentum)``, biased variance; the fused op returns
the unbiased one, which is rescaled), and the gradient is the batch-statistics gradient.
Everything else -- inference, a mask, synchronised statistics across replicas
(``synchronized``, set by ``--sync_batch_norm``), renormalisation, an axis other than the
last, another backend -- is Keras's own code.
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "keras_sf2f"


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training-mode pass on TensorFlow."""

    def _fusable(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and mask is None
                and not self.synchronized and not self.renorm and 2 <= rank <= 4
                and self.axis in (-1, rank - 1)
                and keras.backend.standardize_dtype(inputs.dtype)
                in ("float32", "bfloat16", "float16"))

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # noqa: PLC0415 - the fused op is TensorFlow's

        x = tf.convert_to_tensor(inputs)
        shape = tf.shape(x)
        channels = x.shape[-1]
        rank = len(x.shape)
        # NHWC with the statistics over every axis but the last: [B, C] and [B, L, C] become
        # [B, 1, 1, C] and [B, 1, L, C].
        x4 = x if rank == 4 else tf.reshape(x, [shape[0], 1, -1, channels])
        gamma = (tf.cast(self.gamma, tf.float32) if self.scale
                 else tf.ones([channels], tf.float32))
        beta = (tf.cast(self.beta, tf.float32) if self.center
                else tf.zeros([channels], tf.float32))
        empty = tf.constant([], tf.float32)
        y, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x4, scale=gamma, offset=beta, mean=empty, variance=empty,
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x4)[:-1]), tf.float32)
        variance = unbiased_variance * tf.maximum(count - 1.0, 1.0) / count
        # The statistics are not part of the gradient path of the moving averages.
        mean, variance = tf.stop_gradient(mean), tf.stop_gradient(variance)
        self.moving_mean.assign(
            ops.cast(self.moving_mean, "float32") * self.momentum
            + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, "float32") * self.momentum
            + variance * (1.0 - self.momentum))
        if rank != 4:
            y = tf.reshape(y, shape)
        return ops.cast(y, self.compute_dtype)
