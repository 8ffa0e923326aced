"""fused_batch_norm.BatchNormalization against Keras's BatchNormalization in training mode:
outputs, gradients (input, gamma, beta) and moving statistics, for the ranks the models use
and for mixed precision; the fused op is really the one that runs; the cases it leaves to
Keras still work."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from keras_sf2f.models.fused_batch_norm import BatchNormalization
from keras_sf2f.training.trainer import dtype_policy

# float32: the two differ by the order of the sums only (measured <= 1e-6 relative).
# bfloat16 / float16: outputs are rounded to 8 / 11 bits; one rounding step apart at most.
TOLERANCE = {"float32": 1e-5, "mixed_bfloat16": 1e-2, "mixed_float16": 2e-3}


def _pair(shape, precision, **kwargs):
    layers = []
    for cls in (keras.layers.BatchNormalization, BatchNormalization):
        with dtype_policy(precision):
            layer = cls(epsilon=1e-5, momentum=0.9, **kwargs)
            layer.build(shape)
        channels = shape[-1]
        if layer.scale:
            layer.gamma.assign(np.linspace(0.5, 1.5, channels))
        if layer.center:
            layer.beta.assign(np.linspace(-1.0, 1.0, channels))
        layer.moving_mean.assign(np.linspace(-0.2, 0.2, channels))
        layer.moving_variance.assign(np.linspace(0.5, 2.0, channels))
        layers.append(layer)
    return layers


def _train_call(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 3)
    return y, tape.gradient(loss, [x] + layer.trainable_weights)


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(a)), 1e-6)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("shape", [(8, 12), (4, 30, 16), (4, 9, 9, 16)])
def test_training_mode_matches_keras(shape, precision):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, shape), tf.float32)
    reference, fused = _pair(shape, precision)
    tol = TOLERANCE[precision]
    for _ in range(2):  # the moving statistics after two updates
        (y_ref, g_ref), (y, g) = _train_call(reference, x), _train_call(fused, x)
    assert y.dtype == y_ref.dtype
    _close(tf.cast(y_ref, tf.float32), tf.cast(y, tf.float32), tol)
    for a, b in zip(g_ref, g):
        _close(a, b, max(tol, 1e-4))
    _close(reference.moving_mean, fused.moving_mean, 1e-5)
    _close(reference.moving_variance, fused.moving_variance, 1e-5)
    # Inference is Keras's own code path on the same statistics.
    _close(reference(x, training=False), fused(x, training=False), tol)


def test_without_scale_or_center():
    shape = (4, 5, 5, 6)
    x = tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)
    reference, fused = _pair(shape, "float32", scale=False, center=False)
    _close(reference(x, training=True), fused(x, training=True), 1e-5)
    _close(reference.moving_variance, fused.moving_variance, 1e-5)


def test_the_fused_op_runs_in_training_and_not_at_inference():
    layer = BatchNormalization()
    layer.build((None, 6, 6, 4))

    def op_types(training):
        fn = tf.function(lambda x: layer(x, training=training))
        graph = fn.get_concrete_function(tf.TensorSpec((2, 6, 6, 4), tf.float32)).graph
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in op_types(True)
    assert "FusedBatchNormV3" not in op_types(False)


def test_synchronized_and_frozen_layers_take_keras_path():
    shape = (4, 3, 3, 5)
    x = tf.constant(np.random.default_rng(2).normal(size=shape), tf.float32)
    reference, fused = _pair(shape, "float32")
    fused.synchronized = reference.synchronized = True
    _close(reference(x, training=True), fused(x, training=True), 1e-5)
    # A frozen BatchNorm normalises with its moving statistics even in training mode.
    fused.trainable = reference.trainable = False
    _close(reference(x, training=True), fused(x, training=True), 1e-6)
    _close(fused(x, training=True), fused(x, training=False), 0)
