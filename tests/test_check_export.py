"""benchmarks/check_export.py, the independent check of an export: it reads the records and
cuts the windows itself, so its faces are compared with the package's own reading of the same
split (data.table + data.pipelines) through the same SavedModel; its recall is checked on
planted descriptors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_script, write_tiny_dataset
from keras_sf2f.data import pipelines, table
from test_export import REPO, SUBPROCESS_ENV, exported_tiny_model

pytestmark = pytest.mark.slow

check_export = load_script("benchmarks/check_export.py")


def test_recall_counts_an_identity_when_its_truth_is_among_the_ten_nearest():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(12, 128))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    # Generated descriptor of identity i: its own truth, except identities 0 and 1 whose
    # descriptors are another identity's truth (their own then ranks by chance among 12).
    generated = truth.copy()
    generated[0], generated[1] = truth[5], truth[6]
    assert check_export.recall_at_10(truth, truth) == 1.0
    own_rank = [(truth[5] @ truth.T > truth[5] @ truth[0]).sum(),
                (truth[6] @ truth.T > truth[6] @ truth[1]).sum()]
    expected = (10 + sum(int(r < 10) for r in own_rank)) / 12
    assert check_export.recall_at_10(generated, truth) == pytest.approx(expected)


def test_its_faces_are_the_exports_faces_of_the_packages_windows(tmp_path_factory, tmp_path):
    tiny = exported_tiny_model(tmp_path_factory)
    names = {"test": [f"id{i:02d}" for i in range(11)]}
    data_dir = write_tiny_dataset(str(tmp_path / "data"), names, utterances=2, frames=600)
    out, npz = tmp_path / "check.json", tmp_path / "faces.npz"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "check_export.py"),
         f"--data_dir={data_dir}", f"--export_dir={tiny.version_dir}", "--runs=2",
         f"--output={out}", f"--faces_npz={npz}"],
        env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["identities"] == 11 and figures["chance_recall@10"] == pytest.approx(10 / 11)
    for protocol in (figures["all_windows"], {k: v["mean"] for k, v in
                                              figures["crops_5s"].items()}):
        for value in (protocol["detection"], protocol["dlib_recall@10"]):
            assert 0.0 <= value <= 1.0
        assert protocol["pixel_diversity_ratio"] > 0.0  # the tiny model draws different faces

    faces = np.load(npz)
    split = table.load_split(data_dir, "test")
    assert list(faces["identities"]) == split.names
    predict = tiny.loaded.signatures["predict_mel"]
    for i in range(split.num_identities):
        segments, mask = pipelines.identity_windows(split, tf.constant(i, tf.int64))
        windows = segments.numpy()[mask.numpy()]
        assert len(windows) == 8  # 2 utterances x 4 whole windows of 600 frames
        expected = np.clip(predict(log_mel=tf.constant(windows[None]))["image"].numpy()[0],
                           0, 1)
        np.testing.assert_allclose(faces["all_windows"][i], expected, atol=1e-6)
    assert faces["crops_5s"].shape == (2, 11) + faces["all_windows"].shape[1:]
