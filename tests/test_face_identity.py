"""The project's face-identity network: a short training run on a tiny prepared dataset
(through the trainer's command line), save/load round trip, held-out identification and the
face embedders."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_sf2f.data.corpus import draw_face
from keras_sf2f.data.prepare import DatasetWriter
from keras_sf2f.data.records import IMAGE_SIZES
from keras_sf2f.evaluation import embedders
from keras_sf2f.models.facenet import FaceNet
from keras_sf2f.training import face_identity as fi

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACEID_IDS, FACEID_FACES = 8, 4
TEST_IDS, TEST_FACES = 5, 3
TINY_NET = ["--face_net_width_multiplier=0.125", "--face_net_repeats=1,1,1",
            "--face_net_embedding_dim=32", "--face_net_dropout=0.0"]


def _pngs(image):
    """PNG bytes of a face at every stored size (PIL bilinear, as preparation does)."""
    out = {}
    for size in IMAGE_SIZES:
        buf = io.BytesIO()
        Image.fromarray(image).resize((size, size), Image.BILINEAR).save(buf, format="PNG")
        out[size] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """faceid: 8 identities x 4 faces; test: 5 other identities x 3 faces (corpus drawings)."""
    d = str(tmp_path_factory.mktemp("faceid_data"))
    faceid = [f"fid{i:02d}" for i in range(FACEID_IDS)]
    test = [f"tst{i:02d}" for i in range(TEST_IDS)]
    w = DatasetWriter(d, {"faceid": faceid, "test": test}, utterance_shards=1)
    for names, first, count in ((faceid, 1000, FACEID_FACES), (test, 2000, TEST_FACES)):
        for i, name in enumerate(names):
            for k in range(count):
                w.add_face(name, f"{name}_{k}", _pngs(draw_face(0, first + i, k, 128)))
    w.close()
    return d


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One short run of trainers/train_face_identity.py; returns (output dir, stdout)."""
    out = str(tmp_path_factory.mktemp("face_net"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "trainers", "train_face_identity.py"),
         f"--data_dir={data_dir}", f"--output_dir={out}", "--face_net_steps=24",
         "--face_net_batch_size=16", "--face_net_learning_rate=3e-3", *TINY_NET],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr


def test_training_writes_files_and_progress(trained):
    out, log = trained
    assert os.path.isfile(os.path.join(out, fi.WEIGHTS_FILE))
    with open(os.path.join(out, fi.INFO_FILE)) as f:
        info = json.load(f)
    assert info["format"] == fi.FORMAT
    assert info["architecture"] == {"embedding_dim": 32, "width_multiplier": 0.125,
                                    "repeats": [1, 1, 1], "dropout_rate": 0.0}
    assert info["image_size"] == 64 and info["training"]["steps"] == 24
    assert info["training"]["training_faces"] == FACEID_IDS * (FACEID_FACES - 1)
    assert "ETA" in log and "held-out 1-NN identity accuracy" in log
    assert set(info["heldout"]) == {"faceid", "test"}


def test_training_lowers_loss_and_beats_chance(trained):
    out, _ = trained
    with open(os.path.join(out, fi.INFO_FILE)) as f:
        info = json.load(f)
    t = info["training"]
    assert t["loss_window"] == 6
    assert t["loss_end"] < t["loss_start"] - 0.2, t
    for split, n in (("faceid", FACEID_IDS), ("test", TEST_IDS)):
        r = info["heldout"][split]
        assert r["identities"] == n and r["chance"] == pytest.approx(1 / n)
        assert r["accuracy"] > 2.0 / n, (split, r)
        assert r["mean_true_cosine"] > r["mean_other_cosine"]


def test_save_load_round_trip_gives_identical_embeddings(trained, data_dir, tmp_path):
    out, _ = trained
    model, info = fi.load_face_network(out)
    assert isinstance(model, FaceNet) and model.embedding_dim == 32
    faces = fi.load_faces(data_dir, "test", 64)
    images = fi.generator_space(faces.images).numpy()
    x = fi.face_preprocessing.facenet_inputs_from_generator_images(images)
    a = model(x, training=False).numpy()
    by_weights, _ = fi.load_face_network(os.path.join(out, fi.WEIGHTS_FILE))
    np.testing.assert_array_equal(a, by_weights(x, training=False).numpy())
    # Saving the loaded model again gives the same network.
    fi.save_face_network(model, {k: v for k, v in info.items() if k != "format"},
                         str(tmp_path))
    again, _ = fi.load_face_network(os.path.join(str(tmp_path), fi.INFO_FILE))
    np.testing.assert_array_equal(a, again(x, training=False).numpy())
    # The embedder (graph mode, batched) gives the same unit embeddings.
    e = embedders.FaceNetEmbedder.from_path(out, batch_size=4).embed(images)
    np.testing.assert_allclose(e, a / np.linalg.norm(a, axis=1, keepdims=True), atol=1e-6)
    # The held-out check recomputed from the loaded network matches the JSON.
    assert fi.heldout_identification(e, faces.labels)["accuracy"] == \
        pytest.approx(info["heldout"]["test"]["accuracy"])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="face_identity.json"):
        fi.load_face_network(str(tmp_path))
    (tmp_path / fi.INFO_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="format"):
        fi.load_face_network(str(tmp_path))


def test_facenet_embedder_shapes_unit_norm_and_batching():
    model = fi.build_face_network({"embedding_dim": 16, "width_multiplier": 0.125,
                                   "repeats": [1, 1, 1], "dropout_rate": 0.0})
    images = np.random.default_rng(0).normal(size=(5, 64, 64, 3)).astype(np.float32)
    e = embedders.FaceNetEmbedder(model, name="tiny", batch_size=2)
    out = e.embed(images)
    assert out.shape == (5, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    e.batch_size = 64  # batches of 2, 2, 1 and one of 5 share a single traced graph
    np.testing.assert_allclose(e.embed(images), out, atol=1e-5)
    assert len(e._functions) == 1
    assert e.embed(images[:0]).shape == (0, 16)
    with pytest.raises(ValueError, match="B, H, W, 3"):
        e.embed(images[0])


def test_augmentation_is_stateless_and_bounded():
    pixels = tf.constant(np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)), tf.float32)
    seed = tf.constant([3, 7], tf.int64)
    kw = dict(max_shift=0.04, brightness=0.1, contrast=0.1)
    a = fi.augment_pixels(pixels, seed, **kw).numpy()
    b = fi.augment_pixels(pixels, seed, **kw).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 64, 64, 3) and a.min() >= 0 and a.max() <= 255
    c = fi.augment_pixels(pixels, tf.constant([3, 8], tf.int64), **kw).numpy()
    assert not np.array_equal(a, c)
    # A pure shift moves content by whole pixels (edge-replicated at the border).
    shifted = fi.augment_pixels(pixels, seed, max_shift=0.04, brightness=0.0,
                                contrast=0.0).numpy()
    found = 0
    for i in range(4):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                src = pixels.numpy()[i, 4 + dy:60 + dy, 4 + dx:60 + dx]
                found += np.array_equal(shifted[i, 4:60, 4:60], src)
    assert found == 4


def test_heldout_identification_and_masks():
    labels = np.array([0, 0, 0, 1, 1, 2])
    assert fi.last_face_mask(labels).tolist() == [False, False, True, False, True, False]
    emb = np.array([[1, 0, 0], [1, 0.1, 0], [1, 0, 0.1],   # identity 0
                    [0, 1, 0], [0.2, 1, 0],                # identity 1
                    [0, 0, 1]], float)                     # identity 2: one face, no query
    r = fi.heldout_identification(emb, labels)
    assert r["identities"] == 2 and r["accuracy"] == 1.0 and r["chance"] == 0.5
    with pytest.raises(ValueError, match=">= 2 identities"):
        fi.heldout_identification(emb[:3], labels[:3])


@pytest.mark.skipif(not embedders.dlib_available(),
                    reason="dlib-bin / face_recognition_models not installed")
def test_dlib_embedder_separates_corpus_identities(data_dir):
    faces = fi.load_faces(data_dir, "test", 128)
    e = embedders.DlibEmbedder()
    out = e.embed(fi.generator_space(faces.images).numpy())
    assert out.shape == (TEST_IDS * TEST_FACES, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    chips = e.chips(fi.generator_space(faces.images[:2]).numpy())
    assert chips.shape == (2, 150, 150, 3) and chips.dtype == np.uint8
    r = fi.heldout_identification(out, faces.labels)
    assert r["accuracy"] > 2.0 / TEST_IDS, r
    # Each distinct chip goes through dlib's network once per embedder; repeats (an
    # untrained model's one face for every crop) come from the cache, identical.
    assert e.computed == len({c.tobytes() for c in e.chips(
        fi.generator_space(faces.images).numpy())})
    again = e.embed(fi.generator_space(faces.images[[3, 0, 3, 3]]).numpy())
    assert e.computed == TEST_IDS * TEST_FACES
    np.testing.assert_array_equal(again, out[[3, 0, 3, 3]])
    fresh = embedders.DlibEmbedder(batch_size=2)
    np.testing.assert_allclose(fresh.embed(fi.generator_space(faces.images[:5]).numpy()),
                               out[:5], atol=1e-6)
    assert fresh.computed == 5
