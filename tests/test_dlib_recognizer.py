"""dlib's recogniser in helper processes (keras_sf2f/evaluation/dlib_recognizer.py): the same
descriptors as in-process, no pickle on the pipes, TensorFlow never imported by a helper, and a
dead helper falls back to this process."""

import io
import subprocess
import sys

import numpy as np
import pytest

from keras_sf2f.evaluation import dlib_recognizer as dr
from keras_sf2f.evaluation import embedders

needs_dlib = pytest.mark.skipif(not embedders.dlib_available(),
                                reason="dlib-bin / face_recognition_models not installed")


def _chips(count, seed=0):
    """Face-like chips are not needed: the test is that the split changes no value."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, dr.CHIP_SIZE, dr.CHIP_SIZE, 3), dtype=np.uint8)


def test_pipe_protocol_round_trips_arrays_and_refuses_pickles():
    stream = io.BytesIO()
    dr.write_array(stream, np.arange(6, dtype=np.int64).reshape(2, 3))
    dr.write_array(stream, np.zeros([0, 128], np.float32))
    stream.seek(0)
    first = dr.read_array(stream)
    assert first.dtype == np.int64 and first.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert dr.read_array(stream).shape == (0, 128)
    assert dr.read_array(stream) is None                  # a clean end
    stream = io.BytesIO()
    dr.write_array(stream, np.arange(3))
    truncated = io.BytesIO(stream.getvalue()[:-2])
    with pytest.raises(EOFError, match="short"):
        dr.read_array(truncated)
    # An object array would need pickle: refused on both sides of the pipe.
    with pytest.raises(ValueError):
        dr.write_array(io.BytesIO(), np.array([{"a": 1}], dtype=object))


@needs_dlib
def test_helpers_give_the_in_process_descriptors_bit_for_bit():
    chips = _chips(11)
    alone = dr.DlibRecognizer(processes=1)
    helped = dr.DlibRecognizer(processes=2)
    try:
        expected = alone.compute(chips)
        assert expected.shape == (11, 128) and expected.dtype == np.float32
        got = helped.compute(chips)
        assert len(helped._helpers) == 2                  # the batch was split
        np.testing.assert_array_equal(got, expected)
        # Again on the running helpers, and a batch too small to split (in this process).
        np.testing.assert_array_equal(helped.compute(chips[::-1]), expected[::-1])
        np.testing.assert_array_equal(helped.compute(chips[:3]), expected[:3])
        assert helped.compute(chips[:0]).shape == (0, 128)
    finally:
        helped.close()
    assert not helped._helpers
    with pytest.raises(ValueError, match="uint8"):
        helped.compute(chips.astype(np.float32))


@needs_dlib
def test_a_dead_helper_falls_back_to_this_process(caplog):
    chips = _chips(8, seed=1)
    expected = dr.DlibRecognizer(processes=1).compute(chips)
    helped = dr.DlibRecognizer(processes=2)
    try:
        helped.compute(chips)
        helped._helpers[1].process.kill()
        helped._helpers[1].process.wait()
        with caplog.at_level("WARNING"):
            got = helped.compute(chips)
        np.testing.assert_array_equal(got, expected)
        assert "computing in this process" in caplog.text
        assert helped.processes == 1 and not helped._helpers
    finally:
        helped.close()


@needs_dlib
def test_a_helper_imports_no_tensorflow():
    code = ("import sys; "
            "import keras_sf2f.evaluation.dlib_recognizer as d; "
            "d.load_network(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


@needs_dlib
def test_the_embedder_splits_its_batches_without_changing_them():
    images = np.random.default_rng(2).normal(size=(9, 32, 32, 3)).astype(np.float32)
    one = embedders.DlibEmbedder(processes=1)
    two = embedders.DlibEmbedder(processes=2)
    try:
        np.testing.assert_array_equal(two.embed(images), one.embed(images))
        assert two.computed == one.computed == 9
    finally:
        two.close()


@needs_dlib
def test_aligned_chips_are_dlibs_own_alignment_and_differ_from_whole_pictures():
    """DlibEmbedder(align=True) gives the recogniser the chip dlib's stock pipeline cuts
    (compute_face_descriptor with the 5 landmarks aligns internally): same descriptors, an
    independent oracle; and those chips are not the whole-picture chips."""
    import dlib  # noqa: PLC0415

    from keras_sf2f.data.corpus import draw_face  # noqa: PLC0415
    from keras_sf2f.evaluation.detection import FaceDetector  # noqa: PLC0415

    faces = np.stack([draw_face(0, i, 0, 64, "aligned") for i in range(450, 456)])
    # One picture with no face in it: its landmarks are sought in the whole picture.
    faces = np.concatenate([faces, np.full([1, 64, 64, 3], 128, np.uint8)])
    aligned = embedders.DlibEmbedder(name="dlib_aligned", align=True, processes=1)
    whole = embedders.DlibEmbedder(processes=1)
    chips = aligned.chips(_generator_space(faces))
    assert chips.shape == (7, dr.CHIP_SIZE, dr.CHIP_SIZE, 3) and chips.dtype == np.uint8
    assert not np.array_equal(chips, whole.chips(_generator_space(faces)))

    detector = FaceDetector()
    landmarks = dlib.shape_predictor(dr.dlib_model_path(dr.LANDMARK_MODEL))
    network = dlib.face_recognition_model_v1(dr.dlib_model_path())
    big = detector.prepare(faces)
    found = 0
    expected = []
    for picture in big:
        boxes = dlib.get_frontal_face_detector()(picture, 0)
        found += len(boxes) > 0
        box = boxes[0] if len(boxes) else dlib.rectangle(0, 0, 255, 255)
        d = np.asarray(network.compute_face_descriptor(picture, landmarks(picture, box)))
        expected.append(d / np.linalg.norm(d))
    assert found >= 4  # most corpus faces are found, the grey picture is not
    got = aligned.embed(_generator_space(faces))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)


def _generator_space(pixels):
    """uint8 pictures in the generator's (ImageNet-normalised) space, as embedders take them."""
    from keras_sf2f.image_ranges import pixels_to_normalized  # noqa: PLC0415
    return np.asarray(pixels_to_normalized(pixels.astype(np.float32), "imagenet"))
