"""The voice-attribute oracle: faces with one identity's voice-linked attributes and another's
face-only ones, and its reference rows in the evaluation.

The oracle is only meaningful if (a) drawing with an identity's own attributes reproduces its
corpus face exactly, (b) exactly the face-only attributes come from the donor, and (c) the
evaluation scores it against the same ground truth as a model. Each is checked here.
"""
import dataclasses
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_sf2f.data import records  # noqa: E402
from keras_sf2f.data.corpus.attributes import SHARED_FIELDS, identity_attributes  # noqa: E402
from keras_sf2f.data.corpus.face import draw_face  # noqa: E402
from keras_sf2f.data.prepare import DatasetWriter  # noqa: E402
from keras_sf2f.data.procedural import face_pngs, identity_name  # noqa: E402
from keras_sf2f.evaluation import oracle  # noqa: E402

SEED = 5


def test_own_attributes_reproduce_the_corpus_face():
    for identity, item in ((3, 0), (17, 2)):
        own = identity_attributes(SEED, identity)
        for size in (64, 128):
            np.testing.assert_array_equal(
                draw_face(SEED, identity, item, size, attributes=own),
                draw_face(SEED, identity, item, size))
    np.testing.assert_array_equal(oracle.oracle_faces(SEED, [3, 4], [3, 4], 64),
                                  np.stack([draw_face(SEED, 3, 0, 64),
                                            draw_face(SEED, 4, 0, 64)]))


def test_oracle_takes_exactly_the_face_only_attributes_from_the_donor():
    identity, donor = 11, 42
    mixed = oracle.oracle_attributes(SEED, identity, donor)
    own, other = identity_attributes(SEED, identity), identity_attributes(SEED, donor)
    for field in dataclasses.fields(mixed):
        expected = other if field.name in oracle.FACE_ONLY_ATTRIBUTES else own
        assert getattr(mixed, field.name) == getattr(expected, field.name), field.name
    # Every voice-linked factor stays the identity's; none of them is face-only.
    assert not set(SHARED_FIELDS) & set(oracle.FACE_ONLY_ATTRIBUTES)
    face = oracle.oracle_faces(SEED, [identity], [donor], 64)[0]
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    assert not np.array_equal(face, draw_face(SEED, donor, 0, 64))
    assert not np.array_equal(face, draw_face(SEED, identity, 0, 64))


def test_voice_only_oracle_keeps_only_the_voice_linked_factors():
    # Replaying an identity's own draws with its own factors is the identity itself, for
    # every kind of identity (the replay must not move the corpus's random stream).
    for identity in range(60):
        own = identity_attributes(SEED, identity)
        assert oracle.voice_only_attributes(SEED, identity, identity) == own
        assert identity_attributes(SEED, identity, shared=own) == own
    identity, donor = 11, 42
    own, other = identity_attributes(SEED, identity), identity_attributes(SEED, donor)
    mixed = oracle.voice_only_attributes(SEED, identity, donor)
    for name in SHARED_FIELDS:
        assert getattr(mixed, name) == getattr(own, name), name
    for name in oracle.FACE_ONLY_ATTRIBUTES:
        assert getattr(mixed, name) == getattr(other, name), name
    # The appearance draws are re-derived from the identity's factors with the donor's
    # randomness: not simply either identity's values.
    derived = ("skin_tone", "hair_colour", "hair_length", "greyness", "baldness", "beard",
               "brow_thickness")
    assert any(getattr(mixed, n) != getattr(own, n) for n in derived)
    assert any(getattr(mixed, n) != getattr(other, n) for n in derived)
    # What the factors decide holds: a female-like voice gets no beard and no baldness, and
    # the skin tone stays within the noise of the identity's accent.
    females = [i for i in range(60) if identity_attributes(SEED, i).gender < 0]
    for i in females[:10]:
        a = oracle.voice_only_attributes(SEED, i, donor)
        assert a.beard == 0.0 and a.baldness == 0.0
        assert abs(a.skin_tone - identity_attributes(SEED, i).accent) < 0.25


def test_mean_faces_average_voice_only_draws():
    identities, rows = [3, 4, 5], np.array([[20, 21, 22], [23, 24, 25], [26, 27, 28]])
    one = oracle.mean_faces(SEED, identities, rows[:1], 64)
    np.testing.assert_array_equal(one, oracle.oracle_faces(SEED, identities, rows[0], 64,
                                                           voice_only=True))
    mean = oracle.mean_faces(SEED, identities, rows, 64)
    stack = np.stack([oracle.oracle_faces(SEED, identities, r, 64, voice_only=True)
                      for r in rows]).astype(np.float64)
    assert mean.dtype == np.uint8 and mean.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(mean, np.floor(stack.mean(0) + 0.5).astype(np.uint8))
    with pytest.raises(ValueError, match="at least one row"):
        oracle.mean_faces(SEED, identities, rows[:0], 64)


def test_donor_draws_are_reproducible_distinct_and_in_range():
    a = oracle.donor_draws((0, 40), 10, 3, seed=1)
    np.testing.assert_array_equal(a, oracle.donor_draws((0, 40), 10, 3, seed=1))
    assert a.shape == (3, 10) and a.min() >= 0 and a.max() < 40
    assert all(len(set(run)) == 10 for run in a)
    assert not np.array_equal(a, oracle.donor_draws((0, 40), 10, 3, seed=2))
    with pytest.raises(ValueError, match="fewer than 10"):
        oracle.donor_draws((0, 9), 10, 1, seed=0)
    with pytest.raises(ValueError, match="3 identities but 2 donors"):
        oracle.oracle_faces(SEED, [1, 2, 3], [4, 5], 64)


TEST_RANGE = (30, 36)
TRAIN_RANGE = (0, 30)


def _procedural_dir(directory, names=None):
    """A prepared procedural corpus in miniature: corpus faces of the test identities, a
    dataset.json recording the corpus seed and identity ranges as prepare writes it."""
    names = names or {"test": [identity_name(i) for i in range(*TEST_RANGE)],
                      "faceid": [identity_name(i) for i in range(40, 44)]}
    source = {"kind": "procedural", "seed": SEED,
              "ranges": {"train": list(TRAIN_RANGE), "test": list(TEST_RANGE),
                         "faceid": [40, 44]},
              "spec": {"face_quality": "aligned"}}
    writer = DatasetWriter(directory, names, utterance_shards=1, source=source)
    rng = np.random.default_rng(0)
    for split, split_names in names.items():
        for name in split_names:
            identity = int(name[len("synth"):]) if name.startswith("synth") else 0
            if split == "test":
                for u in range(2):
                    writer.add_utterance(name, f"{name}_u{u}",
                                         rng.normal(size=(260, 40)).astype(np.float32))
            for k in range(2):
                writer.add_face(name, f"{name}_f{k}", face_pngs(
                    draw_face(SEED, identity, k, 128), records.IMAGE_SIZES))
    writer.close()
    return directory


def test_procedural_identities_reads_the_corpus_ranges(tmp_path):
    d = _procedural_dir(str(tmp_path / "p"))
    names = [identity_name(i) for i in range(*TEST_RANGE)]
    info = oracle.procedural_identities(d, "test", names)
    assert info == {"seed": SEED, "identities": list(range(*TEST_RANGE)),
                    "donor_range": TRAIN_RANGE, "quality": "aligned"}
    with pytest.raises(ValueError, match="do not follow the corpus range"):
        oracle.procedural_identities(d, "test", names[::-1])
    # Other data (no procedural source) has no oracle.
    other = tmp_path / "other"
    other.mkdir()
    with open(other / "dataset.json", "w") as f:
        json.dump({"source": {"kind": "voxceleb"}}, f)
    assert oracle.procedural_identities(str(other), "test", names) is None
    assert oracle.procedural_identities(str(tmp_path / "missing"), "test", names) is None


class _ColourEmbedder:
    """Mean colour of the central face region: sees skin tone (voice-linked), not clothes."""
    name = "centre_colour"

    def embed(self, images):
        x = np.asarray(images)[:, 20:44, 20:44].reshape(len(images), -1, 3)
        e = np.concatenate([x.mean(1), x.std(1)], 1)
        e = e - e.mean(0, keepdims=True) if len(e) > 1 else e
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def test_evaluator_scores_the_oracle_against_the_ground_truth(tmp_path):
    from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415

    d = _procedural_dir(str(tmp_path / "p"))
    config = ev.EvaluationConfig(data_dir=d, runs=3, durations=(1.25,))
    evaluator = ev.Evaluator(config, [_ColourEmbedder()], 64)
    lines = []
    from keras_sf2f.progress import Progress  # noqa: PLC0415
    out = evaluator.oracle(Progress(evaluator.oracle_runs, "voice-attribute oracle",
                                    unit="runs", write=lines.append))
    # Its runs are reported as they go (minutes on a slow machine): the last line says all.
    assert lines and lines[-1].startswith("voice-attribute oracle: 9/9 (100%)")
    kinds = [ev.ORACLE_PROTOCOL, ev.ORACLE_VOICE_ONLY_PROTOCOL, ev.ORACLE_VOICE_MEAN_PROTOCOL]
    assert list(out["results"]) == kinds and list(out["samples"]) == kinds
    for kind in kinds:
        assert out["results"][kind]["centre_colour"]["recall@5"]["runs"] == 3
    # The voice-only draws use the drawn oracle's donors; the mean has donors of its own.
    donors = oracle.donor_draws(TRAIN_RANGE, TEST_RANGE[1] - TEST_RANGE[0], 3, config.seed)
    from keras_sf2f.image_ranges import pixels_to_normalized  # noqa: PLC0415
    np.testing.assert_allclose(
        out["samples"][ev.ORACLE_VOICE_ONLY_PROTOCOL], pixels_to_normalized(
            oracle.oracle_faces(SEED, range(*TEST_RANGE), donors[0], 64, voice_only=True)
        ).numpy(), atol=1e-6)
    mean_donors = oracle.donor_draws(TRAIN_RANGE, TEST_RANGE[1] - TEST_RANGE[0],
                                     3 * oracle.MEAN_DRAWS, config.seed + 1)
    np.testing.assert_allclose(
        out["samples"][ev.ORACLE_VOICE_MEAN_PROTOCOL], pixels_to_normalized(
            oracle.mean_faces(SEED, range(*TEST_RANGE), mean_donors[:oracle.MEAN_DRAWS], 64)
        ).numpy(), atol=1e-6)
    cell = out["results"][ev.ORACLE_PROTOCOL]["centre_colour"]
    assert cell["recall@5"]["runs"] == 3
    assert 0.0 <= cell["recall@1"]["mean"] <= cell["recall@5"]["mean"] <= 1.0
    faces = out["samples"][ev.ORACLE_PROTOCOL]
    assert faces.shape == (TEST_RANGE[1] - TEST_RANGE[0], 64, 64, 3)
    # The samples are the first run's faces, normalised like the ground-truth faces.
    donors = oracle.donor_draws(TRAIN_RANGE, len(faces), 3, config.seed)[0]
    drawn = oracle.oracle_faces(SEED, range(*TEST_RANGE), donors, 64)
    from keras_sf2f.image_ranges import pixels_to_normalized  # noqa: PLC0415
    np.testing.assert_allclose(faces, pixels_to_normalized(drawn).numpy(), atol=1e-6)
    # Same embedder, same ground truth as the model rows: the identity's own first image
    # as the "oracle" retrieves itself perfectly, so the metric code is the shared one.
    own = pixels_to_normalized(
        oracle.oracle_faces(SEED, range(*TEST_RANGE), range(*TEST_RANGE), 64)).numpy()
    perfect, first = evaluator.score_runs([own])
    perfect = perfect["centre_colour"]
    assert first is own
    assert perfect["recall@5"]["mean"] == 1.0
    # A non-procedural split has no oracle.
    evaluator.config = dataclasses.replace(config, data_dir=str(tmp_path / "nowhere"))
    assert evaluator.oracle() is None


def test_ablation_tables_show_the_oracle_as_a_reference_row(tmp_path):
    from keras_sf2f.evaluation import ablations  # noqa: PLC0415

    for name, text in (("base.cfg", "--embedding_dim=32\n"), ("fuser.cfg", "--train_steps=3\n"),
                       ("v2f.cfg", "--embedding_dim=32\n")):
        (tmp_path / name).write_text(text)
    plan = ablations.Plan(output_dir=str(tmp_path / "out"), data_dir=str(tmp_path / "data"),
                          face_network="", base_config=str(tmp_path / "base.cfg"),
                          fuser_config=str(tmp_path / "fuser.cfg"),
                          voice2face_config=str(tmp_path / "v2f.cfg"), eval_runs=3)
    chosen = ablations.select(ablations.variants(32), ["sf2f"])

    def cell(mean):
        return {"mean": mean, "variance": 0.0004, "runs": 3}

    values = {"recall@1": cell(0.1), "recall@5": cell(0.4), "cosine_similarity": cell(0.2)}
    results = {"sf2f": {p: {"dlib_resnet": values} for p in ablations.TABLE_PROTOCOLS}}
    oracle = {"dlib_resnet": {"recall@1": cell(0.3), "recall@5": cell(0.7),
                              "cosine_similarity": cell(0.5)}}
    md_path, csv_path = ablations.write_tables(plan, chosen, results, {}, {},
                                               ["dlib_resnet"], 1.0, oracle=oracle)
    md = open(md_path).read()
    assert f"| {ablations.ORACLE_LABEL} | - | 0.500 ± 0.020 |" in md
    with open(csv_path) as f:
        import csv  # noqa: PLC0415
        rows = list(csv.DictReader(f))
    ref = [r for r in rows if r["variant"] == "oracle"]
    assert len(ref) == 1 and ref[0]["table"] == "reference" and ref[0]["protocol"] == "drawn"
    assert ref[0]["recall@5_mean"] == "0.700000" and ref[0]["runs"] == "3"
    # Without an oracle (other data, or partial tables) there is no such row.
    md_path, csv_path = ablations.write_tables(plan, chosen, results, {}, {},
                                               ["dlib_resnet"], 1.0)
    assert ablations.ORACLE_LABEL not in open(md_path).read()
