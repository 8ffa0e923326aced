"""The tf.data pipelines: reference sampling semantics, statelessness and resumption."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_sf2f.audio.features import MEL_PAD_VALUE
from keras_sf2f.data import pipelines, table
from keras_sf2f.data.prepare import DatasetWriter
from keras_sf2f.data.procedural import face_pngs
from keras_sf2f.data.records import IMAGE_SIZES
from keras_sf2f.image_ranges import normalized_to_unit

NUM_IDS = 12
# Utterance lengths per identity (frames); identity 3 has only short speech.
LENGTHS = {i: [130 + 17 * i, 260, 90 + i] for i in range(NUM_IDS)}
LENGTHS[3] = [60, 70]


def _mel(identity, utt, n):
    """Rows [identity, utterance, frame, frame, ...]: exact in float16 and self-describing."""
    m = np.empty([n, 40], np.float32)
    m[:, 0] = identity
    m[:, 1] = utt
    m[:, 2:] = np.arange(n)[:, None]
    return m


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("prepared"))
    names = [f"spk{i:02d}" for i in range(NUM_IDS)]
    w = DatasetWriter(d, {"train": names}, utterance_shards=2)
    for i, name in enumerate(names):
        for u, n in enumerate(LENGTHS[i]):
            w.add_utterance(name, f"{name}_u{u}", _mel(i, u, n))
        for k in range(2):  # faces whose colour encodes (identity, face)
            img = np.full([128, 128, 3], (10 * i, 100 + 50 * k, 7), np.uint8)
            w.add_face(name, f"{name}_f{k}", face_pngs(img, IMAGE_SIZES))
    w.close()
    return d


@pytest.fixture(scope="module")
def train(data_dir):
    return table.load_split(data_dir, "train")


def _identity_of(image):
    rgb = normalized_to_unit(tf.constant(image)).numpy() * 255
    return int(round(rgb[0, 0, 0] / 10)), int(round((rgb[0, 0, 1] - 100) / 50))


def test_table_groups_by_identity(train):
    assert train.names == [f"spk{i:02d}" for i in range(NUM_IDS)]
    assert train.id_utt_count.numpy().tolist() == [len(LENGTHS[i]) for i in range(NUM_IDS)]
    assert train.id_face_count.numpy().tolist() == [2] * NUM_IDS
    assert train.utterance_ids[:3] == ["spk00_u0", "spk00_u1", "spk00_u2"]


def test_stage1_batches_follow_the_reference(train):
    ds = pipelines.stage1_dataset(train, batch_size=4, image_size=64, seed=7, num_steps=6)
    seen = []
    for images, mels, labels in ds.as_numpy_iterator():
        assert images.shape == (4, 64, 64, 3)
        t = mels.shape[1]
        assert 100 <= t <= 150 and mels.shape == (4, t, 40)
        for image, mel, label in zip(images, mels, labels):
            assert _identity_of(image)[0] == label
            real = mel[:, 0] != np.float32(MEL_PAD_VALUE)
            assert (mel[real, 0] == label).all()
            frames = mel[real, 2]
            # A contiguous crop of one utterance, padded only at the end.
            assert (np.diff(frames) == 1).all() and real[:real.sum()].all()
            utt = int(mel[0, 1])
            n = LENGTHS[label][utt]
            assert real.sum() == min(n, t)
            assert frames[-1] <= n - 1
        seen.append(labels)
    # 12 identities, batch 4: every identity exactly once per 3-step epoch.
    for epoch in (seen[:3], seen[3:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(NUM_IDS))
    assert not all((a == b).all() for a, b in zip(seen[:3], seen[3:])), "no reshuffle per epoch"


def test_stage1_is_a_function_of_seed_and_step(train):
    def batches(seed, start, n):
        ds = pipelines.stage1_dataset(train, batch_size=4, image_size=128, seed=seed,
                                      start_step=start, num_steps=n)
        return list(ds.as_numpy_iterator())

    full = batches(3, 0, 5)
    resumed = batches(3, 2, 3)
    for a, b in zip(full[2:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    other = batches(4, 0, 5)
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(full, other))


def test_too_few_identities_for_a_batch_is_a_clear_error(train):
    with pytest.raises(table.DataError, match="fewer than one batch"):
        pipelines.stage1_dataset(train, batch_size=64, image_size=64, seed=0)


def test_fuser_windows_sorted_protocol(train):
    for identity in range(NUM_IDS):
        segs, mask = pipelines.identity_windows(train, tf.constant(identity, tf.int64))
        segs, mask = segs.numpy(), mask.numpy()
        expected = [(u, w) for u, n in enumerate(LENGTHS[identity])
                    for w in range(1 + (n - 125) // 125 if n >= 125 else 0)][:20]
        assert mask.sum() == len(expected)
        assert segs.shape == (20, 125, 40)
        for row, (u, w) in zip(segs[mask], expected):
            assert (row[:, 1] == u).all()
            np.testing.assert_array_equal(row[:, 2], np.arange(w * 125, (w + 1) * 125))
        assert (segs[~mask] == np.float32(MEL_PAD_VALUE)).all()


def test_fuser_windows_random_start_and_order(train):
    seeds = [tf.constant([5, i], tf.int64) for i in range(8)]
    starts = set()
    for s in seeds:
        segs, mask = pipelines.identity_windows(train, tf.constant(5, tf.int64), seed_tensor=s)
        for row in segs.numpy()[mask.numpy()]:
            assert (np.diff(row[:, 2]) == 1).all()
            starts.add((int(row[0, 1]), int(row[0, 2]) % 125))
    assert len(starts) > 2, "random start should vary the window offsets"


def test_fuser_dataset_shapes(train):
    ds = pipelines.fuser_dataset(train, batch_size=3, image_size=64, seed=1, num_steps=2)
    images, segs, mask, labels = next(iter(ds))
    assert images.shape == (3, 64, 64, 3)
    assert segs.shape == (3, 20, 125, 40) and mask.shape == (3, 20)
    counts = mask.numpy().sum(1)
    for c, label in zip(counts, labels.numpy()):
        assert (c == 0) == (label == 3)  # identity 3 has no 125-frame window at all


def test_evaluation_crops_are_deterministic_and_cross_utterances(train):
    ds = pipelines.evaluation_crops(train, frames=500, crops_per_identity=10, seed=0, run=0)
    first = list(ds.as_numpy_iterator())
    again = list(pipelines.evaluation_crops(train, frames=500, crops_per_identity=10, seed=0,
                                            run=0).as_numpy_iterator())
    other = list(pipelines.evaluation_crops(train, frames=500, crops_per_identity=10, seed=0,
                                            run=1).as_numpy_iterator())
    assert len(first) == NUM_IDS
    for (a, label, n), (b, _, _), (c, _, _) in zip(first, again, other):
        assert a.shape == (10, 500, 40)
        np.testing.assert_array_equal(a, b)
        assert n == sum(LENGTHS[label])
        if n > 500:
            assert not np.array_equal(a, c)
            assert (a[:, :, 0] == label).all()
        else:  # shorter than a crop: the whole speech, then padding
            assert (a[:, n:, 0] == np.float32(MEL_PAD_VALUE)).all()


def test_faces_dataset_lists_every_face(train):
    out = list(pipelines.faces_dataset(train, image_size=64).as_numpy_iterator())
    assert len(out) == 2 * NUM_IDS
    assert [_identity_of(img) for img, _ in out] == [(i, k) for i in range(NUM_IDS)
                                                      for k in range(2)]


def test_missing_split_and_directory_errors(data_dir, tmp_path):
    with pytest.raises(table.DataError, match="no split named 'test'"):
        table.load_split(data_dir, "test")
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        table.load_split(str(tmp_path), "train")


def test_face_pngs_resize_with_antialiasing():
    img = np.zeros([256, 256, 3], np.uint8)
    img[:, ::2] = 255  # a pattern that aliases without a low-pass filter
    pngs = face_pngs(img, IMAGE_SIZES)
    small = np.asarray(Image.open(io.BytesIO(pngs[64])))
    assert small.shape == (64, 64, 3)
    assert abs(small.mean() - 127.5) < 3 and small.std() < 10
