"""The up blocks' upsampling + 3x3 convolution computed by phases (models/upsample_conv.py),
against a NumPy oracle of the plain computation and against TensorFlow's plain ops."""

import numpy as np
import pytest
import tensorflow as tf

from keras_sf2f.models import fast_conv, layers, upsample_conv


def numpy_upsample_conv(x, kernel):
    """Nearest x2 upsampling, one zero pixel of padding, 3x3 correlation: written out."""
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    padded = np.pad(up, [(0, 0), (1, 1), (1, 1), (0, 0)])
    height, width = up.shape[1], up.shape[2]
    out = np.zeros(up.shape[:3] + (kernel.shape[-1],))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("bhwc,co->bhwo", padded[:, dy:dy + height, dx:dx + width],
                             kernel[dy, dx])
    return out


@pytest.mark.parametrize("shape", [(1, 8, 8, 5), (3, 9, 7, 4), (2, 16, 4, 6)])
def test_matches_numpy_oracle(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((3, 3, shape[-1], 6))
    expected = numpy_upsample_conv(x, kernel)
    got = upsample_conv.upsample_conv3x3(tf.constant(x, tf.float32),
                                         tf.constant(kernel, tf.float32)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    # float64 through the same code: the identity is exact, only rounding remains.
    got64 = upsample_conv.upsample_conv3x3(tf.constant(x), tf.constant(kernel)).numpy()
    np.testing.assert_allclose(got64, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("fast", [False, True])
def test_gradients_match_plain_ops(fast):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, 8, 8, 16)), tf.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, 16, 8)) * 0.1, tf.float32)
    weights = tf.constant(rng.standard_normal((2, 16, 16, 8)), tf.float32)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = tf.reduce_sum(fn(x, kernel) * weights)
        return tape.gradient(loss, [x, kernel])

    def plain(x, kernel):
        up = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        return tf.nn.conv2d(up, kernel, 1, "SAME")

    with fast_conv.enabled(fast):
        got = grads(upsample_conv.upsample_conv3x3)
    expected = grads(plain)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=0,
                                   atol=1e-5 * np.abs(e.numpy()).max())


def test_up_block_takes_the_phase_path_at_inference_from_8x8(monkeypatch):
    calls = []
    original = upsample_conv.upsample_conv3x3
    monkeypatch.setattr(upsample_conv, "upsample_conv3x3",
                        lambda x, k: calls.append(tuple(x.shape)) or original(x, k))
    block = layers.UpBlock(4)
    for shape in [(2, 4, 4, 8), (2, 8, 8, 8)]:
        x = tf.random.stateless_normal(shape, seed=(0, shape[1]))
        got = block(x, training=False)
        plain = block.glu(block.norm(block.conv(block.upsample(x)), training=False))
        np.testing.assert_allclose(got.numpy(), plain.numpy(), rtol=0, atol=1e-5)
    assert calls == [(2, 8, 8, 8)]
    # Training keeps the plain computation (it measured slower there).
    block(tf.zeros((2, 8, 8, 8)), training=True)
    assert calls == [(2, 8, 8, 8)]
    assert upsample_conv.applies((None, 8, 8, 3), (3, 3, 3, 4))
    assert not upsample_conv.applies((None, 4, 4, 3), (3, 3, 3, 4))
    assert not upsample_conv.applies((None, None, None, 3), (3, 3, 3, 4))
    assert not upsample_conv.applies((None, 8, 8, 3), (3, 3, 3, 4), tf.bfloat16)
