"""BasicConv2d at inference folds its BatchNorm into the convolution: the same function as
Conv2D -> BatchNormalization(moving statistics) -> ReLU, its input gradient, and training mode
still on batch statistics."""

import numpy as np
import pytest
import tensorflow as tf

from keras import ops

from keras_sf2f.models.facenet import BasicConv2d
from keras_sf2f.training.trainer import dtype_policy


def _layer(precision, seed=0, strides=1, padding="same"):
    """A built BasicConv2d with BatchNorm statistics far from the identity (so a missing or
    wrong fold is off by O(1))."""
    rng = np.random.default_rng(seed)
    with dtype_policy(precision):
        layer = BasicConv2d(24, 3, strides=strides, padding=padding)
        layer.build((None, 12, 12, 16))
    bn = layer.bn
    bn.gamma.assign(rng.uniform(0.3, 2.0, 24))
    bn.beta.assign(rng.normal(0.0, 0.5, 24))
    bn.moving_mean.assign(rng.normal(0.0, 0.5, 24))
    bn.moving_variance.assign(rng.uniform(0.2, 3.0, 24))
    layer.conv.kernel.assign(rng.normal(0.0, 0.2, layer.conv.kernel.shape))
    return layer


def _unfolded(layer, x, training):
    return ops.relu(layer.bn(layer.conv(x), training=training))


def _inputs(seed=1):
    return tf.constant(np.random.default_rng(seed).normal(size=(4, 12, 12, 16)), tf.float32)


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "valid")])
def test_inference_equals_conv_batchnorm_relu_in_float32(strides, padding):
    layer = _layer("float32", strides=strides, padding=padding)
    x = _inputs()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        folded = layer(x, training=False)
        unfolded = _unfolded(layer, x, training=False)
        folded_sum, unfolded_sum = tf.reduce_sum(folded ** 2), tf.reduce_sum(unfolded ** 2)
    assert float(tf.reduce_max(unfolded)) > 1.0  # the BatchNorm matters at this scale
    np.testing.assert_allclose(folded.numpy(), unfolded.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(folded_sum, x).numpy(),
                               tape.gradient(unfolded_sum, x).numpy(), atol=1e-4, rtol=1e-5)
    # Every case where BatchNormalization uses its moving statistics takes the fold.
    np.testing.assert_allclose(layer(x).numpy(), unfolded.numpy(), atol=1e-5, rtol=1e-5)
    layer.bn.trainable = False
    np.testing.assert_allclose(layer(x, training=True).numpy(), unfolded.numpy(),
                               atol=1e-5, rtol=1e-5)


def test_training_mode_uses_batch_statistics():
    layer = _layer("float32")
    x = _inputs()
    trained = layer(x, training=True)
    np.testing.assert_allclose(trained.numpy(), _unfolded(layer, x, training=True).numpy(),
                               atol=1e-5, rtol=1e-5)
    assert float(tf.reduce_max(tf.abs(trained - layer(x, training=False)))) > 0.1


def test_bfloat16_fold_is_as_close_to_float32_as_the_unfolded_layer():
    reference = _layer("float32")
    layer = _layer("mixed_bfloat16")
    x = _inputs()
    expected = reference(x, training=False).numpy()
    folded = layer(x, training=False)
    assert folded.dtype == tf.bfloat16
    unfolded = _unfolded(layer, tf.cast(x, tf.bfloat16), training=False)

    def error(y):
        return float(np.linalg.norm(tf.cast(y, tf.float32).numpy() - expected)
                     / np.linalg.norm(expected))

    # bfloat16 keeps 8 bits: both about 0.3 % here; the fold rounds the product W * s once
    # more, which may not make it meaningfully worse.
    assert error(unfolded) < 0.02
    assert error(folded) < 1.5 * error(unfolded) + 1e-3
