"""keras_sf2f/image_ranges.py: the one source of the image value ranges and the uint8 rounding.

The float formulas are pinned against the ones they replaced (written out here in the same op
order), so the data pipelines, the FaceNet chain and the serving ``image`` output keep their
values bit for bit; the uint8 conversions follow one rule, clip and round half up.
"""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_sf2f import image_ranges as ir

MEAN = tf.constant((0.485, 0.456, 0.406))
STD = tf.constant((0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def generated():
    """Generator-space float32 images reaching past both ends of the range."""
    return np.random.default_rng(0).normal(0.0, 1.5, (3, 16, 16, 3)).astype(np.float32)


def test_pixels_to_normalized_is_the_pipelines_formula():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    expected = ((tf.cast(pixels, tf.float32) / 255.0 - MEAN) / STD).numpy()
    np.testing.assert_array_equal(ir.pixels_to_normalized(pixels).numpy(), expected)
    # Float pixels (augmented, in [0, 255]) take the same path.
    np.testing.assert_array_equal(ir.pixels_to_normalized(pixels.astype(np.float32)).numpy(),
                                  expected)
    standard = ir.pixels_to_normalized(pixels, "standard").numpy()
    np.testing.assert_allclose(standard, pixels / 127.5 - 1.0, atol=1e-6)


def test_normalized_to_unit_and_pixels_are_the_previous_formulas(generated):
    x = tf.constant(generated)
    np.testing.assert_array_equal(ir.normalized_to_unit(x).numpy(),
                                  tf.clip_by_value(x * STD + MEAN, 0.0, 1.0).numpy())
    np.testing.assert_array_equal(ir.normalized_to_pixels(x).numpy(),
                                  tf.clip_by_value((x * STD + MEAN) * 255.0, 0.0, 255.0).numpy())
    # dtype-preserving (the perceptual loss may run in float64 in the parity tests).
    assert ir.normalized_to_pixels(tf.cast(x, tf.float64)).dtype == tf.float64
    with pytest.raises(ValueError, match="normalize_method"):
        ir.normalized_to_unit(x, "bogus")


def test_uint8_rounds_half_up_and_clips():
    pixels = np.array([-3.0, 0.49, 0.5, 1.5, 2.5, 254.5, 254.49, 300.0], np.float32)
    expected = [0, 0, 1, 2, 3, 255, 254, 255]
    np.testing.assert_array_equal(ir.pixels_to_uint8_np(pixels), expected)
    np.testing.assert_array_equal(ir.pixels_to_uint8(pixels).numpy(), expected)
    unit = np.array([-0.1, 0.5 / 255, 2.5 / 255, 1.0, 1.2], np.float64)
    np.testing.assert_array_equal(ir.unit_to_uint8_np(unit), [0, 1, 3, 255, 255])
    np.testing.assert_array_equal(ir.unit_to_uint8(unit).numpy(), [0, 1, 3, 255, 255])
    # uint8 in, the same uint8 out.
    whole = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(ir.pixels_to_uint8_np(whole), whole)


def test_the_two_uint8_routes_agree_with_the_evaluation_rule(generated):
    """Serving (unit space, TF) and evaluation (pixel space, NumPy) give the same bytes, and
    both equal the evaluation's previous ``clip(x * std + mean, 0, 1) * 255 + 0.5``."""
    x = tf.constant(generated)
    previous = (tf.clip_by_value(x * STD + MEAN, 0.0, 1.0).numpy() * 255 + 0.5).astype(np.uint8)
    via_pixels = ir.normalized_to_uint8_np(generated)
    via_unit = ir.unit_to_uint8(ir.normalized_to_unit(x)).numpy()
    np.testing.assert_array_equal(via_pixels, previous)
    np.testing.assert_array_equal(via_unit, previous)
    np.testing.assert_array_equal(ir.unit_to_uint8_np(ir.normalized_to_unit(x).numpy()),
                                  previous)
    # Under tf.function (the SavedModel) too.
    graph = tf.function(lambda t: ir.unit_to_uint8(ir.normalized_to_unit(t)))
    np.testing.assert_array_equal(graph(x).numpy(), previous)


def test_uint8_round_trip_through_generator_space():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    for method in ("imagenet", "standard"):
        x = ir.pixels_to_normalized(pixels, method).numpy()
        np.testing.assert_array_equal(ir.normalized_to_uint8_np(x, method), pixels)
        np.testing.assert_array_equal(
            ir.unit_to_uint8(ir.normalized_to_unit(x, method)).numpy(), pixels)


def test_uint8_to_unit_np():
    pixels = np.array([0, 51, 255], np.uint8)
    out = ir.uint8_to_unit_np(pixels)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, pixels.astype(np.float32) / 255.0)
    assert ir.uint8_to_unit_np(pixels, np.float64).dtype == np.float64


def test_numpy_helpers_do_not_import_tensorflow():
    code = ("import sys, numpy as np\n"
            "from keras_sf2f import image_ranges as ir\n"
            "ir.unit_to_uint8_np(np.zeros(3)); ir.uint8_to_unit_np(np.zeros(3, np.uint8))\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
