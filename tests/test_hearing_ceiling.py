"""The oracle for imperfect hearing (oracle.heard_mean_faces) and benchmarks/hearing_ceiling.py.

The ceiling is only a ceiling if (a) perfect hearing is exactly the evaluation's voice-only
mean-of-16 oracle, (b) no hearing draws faces that do not depend on the identity, (c) the
readings in between have the stated correlation, and (d) the script scores its rows with the
evaluation's own code. Each is checked here.
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import (load_script, save_tiny_face_network,  # noqa: E402
                      save_tiny_generator_checkpoint)
from keras_sf2f.data import records  # noqa: E402
from keras_sf2f.data.corpus.attributes import SHARED_FIELDS  # noqa: E402
from keras_sf2f.data.corpus.face import draw_face  # noqa: E402
from keras_sf2f.data.prepare import DatasetWriter  # noqa: E402
from keras_sf2f.data.procedural import face_pngs, identity_name  # noqa: E402
from keras_sf2f.evaluation import oracle  # noqa: E402
from keras_sf2f.models import builder  # noqa: E402

SEED = 5
FACTORS = len(SHARED_FIELDS)


def test_perfect_hearing_is_the_voice_only_mean_oracle():
    scale = oracle.factor_scale(SEED, range(40))
    donors = oracle.donor_draws((0, 40), 3, 2, 1)
    expected = oracle.mean_faces(SEED, [41, 42, 43], donors, 64)
    for rng_seed in (0, 1):  # no randomness is used when every factor is heard exactly
        np.testing.assert_array_equal(
            oracle.heard_mean_faces(SEED, [41, 42, 43], donors, 64, np.ones(FACTORS), scale,
                                    np.random.default_rng(rng_seed)), expected)


def test_no_hearing_draws_the_same_faces_for_every_identity():
    scale = oracle.factor_scale(SEED, range(40))
    donors = np.array([[3, 3], [7, 7]])  # two identities, the same donors
    deaf = [oracle.heard_mean_faces(SEED, [identity], donors[:, :1], 64, np.zeros(FACTORS),
                                    scale, np.random.default_rng(0)) for identity in (41, 42)]
    np.testing.assert_array_equal(deaf[0], deaf[1])
    # ... while any hearing tells the two apart.
    heard = oracle.heard_mean_faces(SEED, [41, 42], donors, 64, np.ones(FACTORS), scale,
                                    np.random.default_rng(0))
    assert not np.array_equal(heard[0], heard[1])


def test_readings_have_the_stated_correlation():
    rng = np.random.default_rng(0)
    r = np.array([0.0, 0.3, 0.5, 0.8, 0.95, 1.0])
    truth = rng.standard_normal((6000, FACTORS))
    draws = np.stack([oracle.read_factors(z, r, 2, rng) for z in truth])  # [n, 2, factors]
    for j, rj in enumerate(r):
        first, second = draws[:, 0, j], draws[:, 1, j]
        # Each draw is marginally standard normal; it correlates with the truth at r^2
        # (reading, then belief), and two draws share the reading at r^2 too.
        assert np.std(first) == pytest.approx(1.0, abs=0.04)
        assert np.corrcoef(first, truth[:, j])[0, 1] == pytest.approx(rj ** 2, abs=0.04)
        assert np.corrcoef(first, second)[0, 1] == pytest.approx(rj ** 2, abs=0.04)
    np.testing.assert_array_equal(draws[:, 0, -1], truth[:, -1])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        oracle.read_factors(np.zeros(2), np.array([0.5, 1.5]), 1, rng)
    with pytest.raises(ValueError, match="one length"):
        oracle.read_factors(np.zeros(3), np.ones(2), 1, rng)
    with pytest.raises(ValueError, match="a donor per identity"):
        oracle.heard_mean_faces(SEED, [1, 2], [[2]], 64, np.ones(FACTORS),
                                oracle.factor_scale(SEED, range(5)), rng)
    with pytest.raises(ValueError, match="one r per factor"):
        oracle.heard_mean_faces(SEED, [1], [[2]], 64, np.ones(3),
                                oracle.factor_scale(SEED, range(5)), rng)


def test_beliefs_stay_within_the_training_range():
    scale = oracle.factor_scale(SEED, range(30))
    assert np.all(scale.low <= scale.mean) and np.all(scale.mean <= scale.high)
    assert np.all(scale.std > 0)
    with pytest.raises(ValueError, match="two identities"):
        oracle.factor_scale(SEED, [3])


def test_hearing_flags_and_ridge_readout():
    script = load_script("benchmarks/hearing_ceiling.py")
    accuracy = script.parse_hearing("age=0.5, size=0.25")
    assert accuracy.tolist() == [1.0 if k not in ("age", "size") else
                                 {"age": 0.5, "size": 0.25}[k] for k in SHARED_FIELDS]
    for bad, words in (("agee=0.5", "factors among"), ("age=x", "not a number"),
                       ("age=1.5", "in \\[0, 1\\]"), ("age", "factor=r")):
        with pytest.raises(SystemExit, match=words):
            script.parse_hearing(bad)
    with pytest.raises(SystemExit, match="not a voice_attribute_probe.py output"):
        script.probe_hearing("/nonexistent/voice_probe.json")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8))
    y = np.c_[x[:, 0] + 0.1 * rng.standard_normal(400),  # planted in the embedding
              rng.standard_normal(400),                   # not in it
              np.zeros(400)]                              # constant
    r = script.ridge_hearing(x[:300], y[:300], x[300:], y[300:])
    assert r[0] > 0.95 and r[1] < 0.3 and r[2] == 0.0 and np.all(r >= 0)


RANGES = {"train": [0, 24], "val": [24, 36], "faceid": [36, 40]}


def _corpus(directory):
    """A procedural-layout dataset: the corpus's own faces, random speech."""
    rng = np.random.default_rng(0)
    names = {split: [identity_name(i) for i in range(*r)] for split, r in RANGES.items()}
    info = {"kind": "procedural", "seed": SEED, "ranges": RANGES,
            "spec": {"face_quality": "aligned"}}
    writer = DatasetWriter(str(directory), names, utterance_shards=1, source=info)
    for split, (lo, hi) in RANGES.items():
        for i in range(lo, hi):
            if split != "faceid":
                for u in range(2):
                    writer.add_utterance(identity_name(i), f"u{u}",
                                         rng.normal(size=(260, 40)).astype(np.float32))
            writer.add_face(identity_name(i), "f0",
                            face_pngs(draw_face(SEED, i, 0, 128), records.IMAGE_SIZES))
    writer.close()
    return str(directory)



@pytest.mark.slow  # evaluates six sets of faces and restores a model
def test_script_scores_its_rows_like_the_evaluation(tmp_path):
    from keras_sf2f.evaluation import evaluate as ev
    from keras_sf2f.evaluation.results import ORACLE_VOICE_MEAN_PROTOCOL

    script = load_script("benchmarks/hearing_ceiling.py")
    data = _corpus(tmp_path / "data")
    face_net = save_tiny_face_network(tmp_path / "face_net")
    probe = tmp_path / "voice_probe.json"
    probe.write_text(json.dumps({"val": {k: {"r": 0.5 if k == "age" else -0.2}
                                         for k in SHARED_FIELDS}}))
    out = tmp_path / "hearing.json"
    model_dir = save_tiny_generator_checkpoint(
        str(tmp_path / "model"),
        builder.ModelConfig(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=16,
                            image_discriminator_arch_64="", identity_classifier_arch_64=""),
        step=7)
    result = script.main([f"--data_dir={data}", f"--face_network={face_net}", "--split=val",
                          "--runs=2", "--no_dlib", "--hearing=age=0", f"--voice_probe={probe}",
                          f"--checkpoint_dir={model_dir}",
                          f"--output={out}", f"--faces_png={tmp_path / 'faces.png'}",
                          "--grid_identities=3"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    from PIL import Image
    with Image.open(tmp_path / "faces.png") as grid:  # 3 identities x (photo + 4 rows)
        assert grid.width > 5 * 128 and 3 * 128 < grid.height < 4 * 128 + 100
    rows = result["rows"]
    assert list(rows) == ["perfect", "hearing age=0", "voice_probe", "checkpoint"]
    assert rows["hearing age=0"]["accuracy"]["age"] == 0.0
    assert rows["voice_probe"]["accuracy"] == {k: 0.5 if k == "age" else 0.0
                                               for k in SHARED_FIELDS}
    assert all(0.0 <= v <= 1.0 for v in rows["checkpoint"]["accuracy"].values())
    for row in rows.values():
        assert set(row["recall@10"]) == {"face_identity_net"}
        assert 0.0 <= row["detection"] <= 1.0 and row["effective_templates"] > 0
    # The perfect row is the evaluation's own voice-only mean-of-16 oracle, same runs.
    config = ev.EvaluationConfig(data_dir=data, split="val", durations=(5.0,), runs=2,
                                 seed=0, detection=True, diversity=True)
    embedders, _ = ev.make_embedders(face_net, use_dlib=False)
    own = ev.Evaluator(config, embedders, 64).oracle()["results"][ORACLE_VOICE_MEAN_PROTOCOL]
    assert rows["perfect"]["recall@10"]["face_identity_net"]["mean"] == pytest.approx(
        own["face_identity_net"]["recall@10"]["mean"])
    with pytest.raises(SystemExit, match="not a procedural corpus"):
        other = tmp_path / "plain"
        writer = DatasetWriter(str(other), {"val": ["a", "b"]}, utterance_shards=1)
        for name in ("a", "b"):
            writer.add_utterance(name, "u", np.zeros((260, 40), np.float32))
            writer.add_face(name, "f", face_pngs(draw_face(SEED, 0, 0, 128),
                                                 records.IMAGE_SIZES))
        writer.close()
        script.main([f"--data_dir={other}", f"--face_network={face_net}", "--split=val",
                     "--runs=1", "--no_dlib", f"--checkpoint_dir={model_dir}"])
