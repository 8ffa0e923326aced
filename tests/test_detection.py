"""The face detection rate: dlib's HOG detector finds the corpus's drawn faces, at 64 and 128
px and from generator-space input alike, and finds nothing in noise, flat grey or white."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("dlib")

from keras_sf2f.data.corpus import draw_face  # noqa: E402
from keras_sf2f.evaluation import detection  # noqa: E402

IDENTITIES = range(450, 470)


@pytest.fixture(scope="module")
def detector():
    return detection.FaceDetector()


@pytest.fixture(scope="module")
def faces64():
    return np.stack([draw_face(0, i, 0, 64, "aligned") for i in IDENTITIES])


def test_finds_faces_in_corpus_faces(detector, faces64):
    # On the demo corpus the HOG model finds ~88 % of aligned faces (a few tilted heads and
    # fringes are rejected); 20 faces at 64 and at 128 px.
    rate64 = detector.rate(faces64)
    faces128 = np.stack([draw_face(0, i, 0, 128, "aligned") for i in IDENTITIES])
    rate128 = detector.rate(faces128)
    assert rate64 >= 0.75 and rate128 >= 0.75, (rate64, rate128)
    # The module-level helper is the same detector with its defaults.
    assert detection.detection_rate(faces64) == rate64


def test_generator_space_input_reads_like_uint8(detector, faces64):
    import tensorflow as tf
    from keras_sf2f.image_ranges import pixels_to_normalized

    floats = pixels_to_normalized(tf.constant(faces64)).numpy()
    np.testing.assert_array_equal(detection.to_uint8_images(floats), faces64)
    np.testing.assert_array_equal(detector.detect(floats), detector.detect(faces64))
    scores = detector.scores(faces64)
    found = detector.detect(faces64)
    assert np.all(scores[found] > 0) and np.all(np.isneginf(scores[~found]))


def test_upscaling_is_what_makes_64px_faces_detectable(faces64):
    # Without the upscale the 80 px HOG window cannot fit a 64 px face: the reason for 256 px.
    assert detection.FaceDetector(size=64).rate(faces64) == 0.0


def test_nothing_found_in_noise_or_flat_images(detector):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8), 8, 1),
                       8, 2)
    flat = np.stack([np.full((64, 64, 3), v, np.uint8) for v in (128, 255, 0)])
    for name, images in (("noise", noise), ("blocky noise", smooth), ("flat", flat)):
        assert detector.rate(images) == 0.0, name
    assert detector.rate(np.zeros((0, 64, 64, 3), np.uint8)) == 0.0


def test_input_checks():
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        detection.to_uint8_images(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        detection.to_uint8_images(np.zeros((1, 8, 8, 3), np.int32))
    single = np.zeros((8, 8, 3), np.uint8)
    assert detection.to_uint8_images(single).shape == (1, 8, 8, 3)


def test_face_centre_brightness_follows_the_corpus_skin_tone(faces64):
    from keras_sf2f.data.corpus.attributes import identity_attributes
    brightness = detection.face_centre_brightness(faces64)
    tone = np.array([identity_attributes(0, i).skin_tone for i in IDENTITIES])
    # skin_tone 0 is the lightest, 1 the darkest; the centre box sees skin, not hair or beard.
    assert np.corrcoef(brightness, tone)[0, 1] < -0.9
    # The same figure from generator-space input and at 128 px.
    space = detection.to_uint8_images(faces64).astype(np.float32) / 255.0
    imagenet = (space - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(detection.face_centre_brightness(imagenet.astype(np.float32)),
                               brightness, atol=1.0)
    faces128 = np.stack([draw_face(0, i, 0, 128, "aligned") for i in IDENTITIES])
    assert np.corrcoef(detection.face_centre_brightness(faces128), brightness)[0, 1] > 0.95


def test_brightness_thirds_split_by_rank():
    b = np.array([50.0, 200.0, 10.0, 120.0, 90.0, 250.0, 30.0])
    thirds = detection.brightness_thirds(b)
    # Ranks 0-6 (darkest first) -> 0, 0, 0, 1, 1, 2, 2.
    np.testing.assert_array_equal(thirds, [0, 2, 0, 1, 1, 2, 0])
    assert np.bincount(detection.brightness_thirds(np.zeros(9)), minlength=3).tolist() == [3, 3, 3]
    assert detection.brightness_thirds(np.zeros(0)).shape == (0,)


def test_rates_by_third():
    found = np.array([True, False, True, True, False, False, True])
    thirds = np.array([0, 0, 1, 1, 2, 2, 2])
    assert detection.rates_by_third(found, thirds) == {
        "detection_rate_darkest_third": 0.5, "detection_rate_middle_third": 1.0,
        "detection_rate_lightest_third": pytest.approx(1 / 3)}
    # A third without faces is left out; an empty result rates 0.
    assert list(detection.rates_by_third(found[:2], thirds[:2])) == [
        "detection_rate_darkest_third"]
    assert detection.found_rate(np.zeros(0, bool)) == 0.0
