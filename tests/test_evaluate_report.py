"""The evaluation report around the metrics: reference galleries on small splits, the
Figure-1 grid with and without a baseline, TensorBoard scalars under training's validation
tags, and finding a checkpoint's model configuration and step.

A tiny prepared split (5 test identities, 4 face-only identities) and tiny untrained
generators keep it fast; what is checked is where every picture and number lands.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import (load_script, save_tiny_face_network,  # noqa: E402
                      save_tiny_generator_checkpoint)
from keras_sf2f.data import records  # noqa: E402
from keras_sf2f.data.prepare import DatasetWriter  # noqa: E402
from keras_sf2f.data.procedural import face_pngs  # noqa: E402
from keras_sf2f.evaluation import evaluate as ev  # noqa: E402
from keras_sf2f.image_ranges import normalized_to_uint8_np  # noqa: E402
from keras_sf2f.evaluation.embedders import FaceNetEmbedder  # noqa: E402
from keras_sf2f.models import builder  # noqa: E402
from keras_sf2f.models.facenet import FaceNet  # noqa: E402

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

NUM_TEST = 5
TINY = dict(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
            image_discriminator_arch_64="", identity_classifier_arch_64="")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("eval_data"))
    names = {"test": [f"te{i}" for i in range(NUM_TEST)],
             "faceid": [f"fi{i}" for i in range(4)]}
    rng = np.random.default_rng(0)
    writer = DatasetWriter(d, names, utterance_shards=1)
    for i, name in enumerate(names["test"]):
        for u in range(2):  # 2 x 260 frames: a 5 s crop exists
            writer.add_utterance(name, f"{name}_u{u}",
                                 rng.normal(size=(260, 40)).astype(np.float32) + 0.3 * i)
    for split in names:
        for i, name in enumerate(names[split]):
            for k in range(2):
                image = np.full([128, 128, 3], (30 * i + 10, 100 + 50 * k, 60), np.uint8)
                image[40:90, 40:90] = (200 - 20 * i, 80, 40 * k)
                writer.add_face(name, f"{name}_f{k}", face_pngs(image, records.IMAGE_SIZES))
    writer.close()
    return d


@pytest.fixture(scope="module")
def embedder():
    model = FaceNet(embedding_dim=16, width_multiplier=0.0625, repeats=(1, 1, 1),
                    dropout_rate=0.0)
    model.build((None, 140, 140, 3))
    return FaceNetEmbedder(model, name="face_identity_net")


@pytest.fixture(scope="module")
def evaluated(data_dir, embedder):
    """Two differently initialised tiny generators evaluated with 2 runs per duration."""
    import keras
    config = ev.EvaluationConfig(data_dir=data_dir, runs=2, durations=(1.25, 5.0))
    evaluator = ev.Evaluator(config, [embedder], 64)
    results, samples = {}, {}
    for seed, name in ((1, "SF2F"), (2, "voice2face")):
        keras.utils.set_random_seed(seed)
        generator = builder.build_generator(builder.ModelConfig(**TINY))
        out = evaluator.evaluate(ev.FaceGenerator(generator, 8))
        results[name], samples[name] = out["results"], out["samples"]
    return config, evaluator, results, samples


def test_reference_galleries_refused_on_a_split_below_100(data_dir, embedder):
    config = ev.EvaluationConfig(data_dir=data_dir, runs=1, galleries="reference")
    with pytest.raises(ValueError, match=f"only {NUM_TEST}.*not be comparable"):
        ev.Evaluator(config, [embedder], 64)
    with pytest.raises(ValueError, match="galleries"):
        ev.Evaluator(ev.EvaluationConfig(data_dir=data_dir, galleries="all"), [embedder], 64)
    # The reference's K values replace the default ones only with its galleries.
    assert ev.EvaluationConfig(data_dir=data_dir, galleries="reference"
                               ).effective_recall_ks() == (1, 2, 5, 10, 20, 50)
    assert ev.EvaluationConfig(data_dir=data_dir).effective_recall_ks() == (1, 5, 10)


def test_recall_ks_beyond_the_split_are_dropped(evaluated):
    _, evaluator, results, _ = evaluated
    assert evaluator.recall_ks == (1, 5)  # K=10 > 5 identities
    keys = set(results["SF2F"]["crops_1.25s"]["face_identity_net"])
    assert {"recall@1", "recall@5"} <= keys and "recall@10" not in keys
    # Recall@5 over 5 identities is always a hit.
    assert results["SF2F"]["crops_5s"]["face_identity_net"]["recall@5"]["mean"] == 1.0


def _cell_origin(column, row, rows, columns):
    """Top-left corner of a Figure-1 picture (write_figure1's layout, cell 128)."""
    pad, caption, title_h, head_h, cell = 8, 14, 22, 16, 128
    group, r = divmod(row, rows)
    group_w = columns * cell + (columns - 1) * 2
    x = pad + group * (group_w + 2 * pad) + column * (cell + 2)
    y = title_h + head_h + r * (cell + caption + pad)
    return x, y


def _picture(sheet, column, row, rows, columns):
    x, y = _cell_origin(column, row, rows, columns)
    return sheet[y:y + 128, x:x + 128]


def test_figure1_with_baseline_column(evaluated, tmp_path):
    config, evaluator, results, samples = evaluated
    columns = [("SF2F", "SF2F", None), ("voice2face", "voice2face", None)]
    ev.write_report(str(tmp_path), config, evaluator, results, samples, ["a note"],
                    figure_columns=columns, summary_dir=str(tmp_path / "tb"))
    report = (tmp_path / "report.md").read_text()
    for name in ("figure1_1.25s.png", "figure1_5s.png", "figure1_all_windows.png"):
        assert f"]({name})" in report
        assert (tmp_path / name).is_file()
    assert "ground truth | SF2F | voice2face" in report and "Not shown" not in report
    sheet = np.asarray(Image.open(tmp_path / "figure1_5s.png").convert("RGB"))
    rows = 3  # 5 identities in two groups
    first = evaluator.first_faces
    for i in range(NUM_TEST):
        expected = [normalized_to_uint8_np(evaluator.faces[first[i]][None])[0],
                    normalized_to_uint8_np(samples["SF2F"]["5 s"][i][None])[0],
                    normalized_to_uint8_np(samples["voice2face"]["5 s"][i][None])[0]]
        for column, picture in enumerate(expected):
            big = np.asarray(Image.fromarray(picture).resize((128, 128), Image.NEAREST))
            np.testing.assert_array_equal(_picture(sheet, column, i, rows, 3), big,
                                          err_msg=f"identity {i}, column {column}")
    saved = np.load(tmp_path / "samples.npz")
    assert {"ground_truth", "SF2F|1.25 s", "voice2face|all windows", "names"} <= set(saved)
    assert list(saved["names"]) == [f"te{i}" for i in range(NUM_TEST)]
    with open(tmp_path / "metrics.json") as f:
        meta = json.load(f)
    assert meta["recall"] == {"ks": [1, 5], "galleries": None, "gallery_size": NUM_TEST}
    assert set(meta["results"]) == {"SF2F", "voice2face"}


def test_figure1_without_baseline_says_why(evaluated, tmp_path):
    config, evaluator, results, samples = evaluated
    columns = [("SF2F", "SF2F", None),
               ("voice2face", None, "no --baseline_checkpoint_dir given")]
    only = {"SF2F": samples["SF2F"]}
    ev.write_report(str(tmp_path), config, evaluator, {"SF2F": results["SF2F"]}, only, [],
                    figure_columns=columns)
    report = (tmp_path / "report.md").read_text()
    assert "no voice2face column: no --baseline_checkpoint_dir given" in report
    sheet = np.asarray(Image.open(tmp_path / "figure1_1.25s.png").convert("RGB"))
    expected_width = _cell_origin(0, 3, 3, 2)[0] + 2 * 128 + 2 + 2 * 8
    assert sheet.shape[1] == expected_width  # two picture columns per group
    generated = normalized_to_uint8_np(samples["SF2F"]["1.25 s"][4][None])[0]
    big = np.asarray(Image.fromarray(generated).resize((128, 128), Image.NEAREST))
    np.testing.assert_array_equal(_picture(sheet, 1, 4, 3, 2), big)


def test_faces_grid_shows_64px_faces_at_128px_nearest_neighbour(evaluated, tmp_path):
    config, evaluator, results, samples = evaluated
    ev.write_report(str(tmp_path), config, evaluator, results, samples, [],
                    results_page=False)
    assert not (tmp_path / "index.html").exists()
    report = (tmp_path / "report.md").read_text()
    assert report.count("they are shown at 128 px with nearest-neighbour upscaling") == 2
    sheet = np.asarray(Image.open(tmp_path / "faces.png").convert("RGB"))
    label_w, step, n = 100, 128 + 6, NUM_TEST
    columns = [evaluator.faces[evaluator.first_faces]] + [
        samples[m][p] for m in ("SF2F", "voice2face") for p in ("1.25 s", "5 s", "all windows")]
    assert sheet.shape[1] == label_w + len(columns) * step
    head = sheet.shape[0] - n * step
    for i in (0, n - 1):
        for j, images in enumerate(columns):
            face = normalized_to_uint8_np(images[i:i + 1])[0]
            big = np.asarray(Image.fromarray(face).resize((128, 128), Image.NEAREST))
            x, y = label_w + j * step, head + i * step
            np.testing.assert_array_equal(sheet[y:y + 128, x:x + 128], big)


def test_summaries_sit_under_training_validation_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cell = lambda mean, var, runs: {"mean": mean, "variance": var, "runs": runs}  # noqa: E731
    results = {"SF2F": {
        "crops_5s": {"face_identity_net": {"recall@10": cell(0.4, 0.01, 10),
                                           "cosine_similarity": cell(0.2, 0.0, 10)},
                     "dlib_resnet": {"recall@10": cell(0.3, 0.04, 10)}},
        "fuser_all_windows": {"face_identity_net": {"recall@10": cell(0.5, 0.0, 1)}}}}
    runs = ev.write_summaries(str(tmp_path), results, {"SF2F": 600},
                              training_embedder="face_identity_net")
    assert sorted(os.path.relpath(r, tmp_path) for r in runs) == [
        os.path.join("SF2F", "crops_5s"), os.path.join("SF2F", "fuser_all_windows")]

    def scalars(run):
        acc = EventAccumulator(str(tmp_path / "SF2F" / run), size_guidance={"tensors": 0})
        acc.Reload()
        return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in
                      acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}

    five = scalars("crops_5s")
    assert five["Validation/recall_at_10"] == [(600, pytest.approx(0.4))]
    assert five["Validation_std/recall_at_10"] == [(600, pytest.approx(0.1))]
    assert five["Validation/cosine_similarity"] == [(600, pytest.approx(0.2))]
    assert five["Validation_dlib_resnet/recall_at_10"] == [(600, pytest.approx(0.3))]
    assert five["Validation_dlib_resnet_std/recall_at_10"] == [(600, pytest.approx(0.2))]
    windows = scalars("fuser_all_windows")
    assert set(windows) == {"Validation/recall_at_10"}  # one run: no standard deviation


def test_model_config_and_step_of_a_checkpoint(tmp_path):
    model_dir = tmp_path / "model"
    (model_dir / "best_l1").mkdir(parents=True)
    assert ev.model_config_for_checkpoint(str(model_dir)) == (None, None)
    config = builder.ModelConfig(**TINY, decoder="deconv_64",
                                 deconv_decoder_channels=(16, 8, 8, 4, 4))
    (model_dir / "train_config.json").write_text(json.dumps({"model": config.to_dict()}))
    for where in (model_dir, model_dir / "best_l1"):
        found, source = ev.model_config_for_checkpoint(str(where))
        assert found == config and source == str(model_dir / "train_config.json")

    step = tf.Variable(42, dtype=tf.int64)
    prefix = tf.train.Checkpoint(step=step).write(str(tmp_path / "ckpt-7"))
    assert ev.checkpoint_step(prefix) == 42  # the step variable wins over the name
    other = tf.train.Checkpoint(x=tf.Variable(1.0)).write(str(tmp_path / "imported-13"))
    assert ev.checkpoint_step(other) == 13
    plain = tf.train.Checkpoint(x=tf.Variable(1.0)).write(str(tmp_path / "weights"))
    assert ev.checkpoint_step(plain) == 0


# -- face figures: detection rate, diversity, attribute reader ------------------------------

def test_figures_are_off_unless_asked(evaluated):
    _, evaluator, _, samples = evaluated
    assert not evaluator.wants_figures
    assert evaluator.figures(samples["SF2F"]["5 s"]) == {}
    assert evaluator.ground_truth_figures() == {}


@pytest.fixture(scope="module")
def with_figures(data_dir, embedder):
    import keras
    pytest.importorskip("dlib")
    config = ev.EvaluationConfig(data_dir=data_dir, runs=2, durations=(1.25, 5.0),
                                 detection=True, diversity=True, attributes=True)
    evaluator = ev.Evaluator(config, [embedder], 64)
    keras.utils.set_random_seed(1)
    generator = builder.build_generator(builder.ModelConfig(**TINY))
    out = evaluator.evaluate(ev.FaceGenerator(generator, 8))
    return config, evaluator, out


def test_face_figures_per_protocol_and_for_the_ground_truth(with_figures):
    _, evaluator, out = with_figures
    assert set(out["figures"]) == {"crops_1.25s", "crops_5s", "fuser_all_windows"}
    for protocol, figures in out["figures"].items():
        assert {"detection_rate", "diversity_ratio_pixels",
                "diversity_ratio_face_identity_net", "templates", "effective_templates",
                "collapsed"} <= set(figures), protocol
        runs = 1 if protocol == "fuser_all_windows" else 2
        assert figures["detection_rate"]["runs"] == runs
        # The rate per brightness third of the identities' photos (squares: never a face).
        for name in ("darkest", "middle", "lightest"):
            assert figures[f"detection_rate_{name}_third"]["mean"] == 0.0, protocol
    thirds = evaluator.brightness_thirds
    assert len(thirds) == NUM_TEST and np.ptp(np.bincount(thirds, minlength=3)) <= 1
    # The test data are coloured squares, not the procedural corpus: no attributes to read.
    assert not any(k.startswith("attribute_") for k in out["figures"]["crops_5s"])
    assert any("No attribute reader" in n for n in evaluator.figure_notes)
    gt = evaluator.ground_truth_figures()[ev.GROUND_TRUTH_PROTOCOL]
    # Run k = photo k of every identity: photo 0 is the reference itself.
    assert gt["diversity_ratio_pixels"]["runs"] == 2
    assert gt["templates"]["mean"] == NUM_TEST and gt["collapsed"]["mean"] == 0.0
    assert gt["detection_rate"]["mean"] == 0.0  # squares are not faces
    # The first run's figures are those of the pictured faces.
    first = evaluator.figures(out["samples"]["5 s"])
    assert first["diversity_ratio_pixels"] == pytest.approx(
        out["figures"]["crops_5s"]["diversity_ratio_pixels"]["mean"], abs=1e-6)


def test_face_figures_in_report_metrics_and_tensorboard(with_figures, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from keras_sf2f.evaluation import face_report

    config, evaluator, out = with_figures
    figures = {ev.GROUND_TRUTH_MODEL: evaluator.ground_truth_figures(), "SF2F": out["figures"]}
    ev.write_report(str(tmp_path), config, evaluator, {"SF2F": out["results"]},
                    {"SF2F": out["samples"]}, [], figures_by_model=figures)
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Are they faces? Face detection rate", "## Diversity and collapse"):
        assert heading in report
    assert face_report.DETECTION_TEXT in report and face_report.DIVERSITY_TEXT in report
    assert "## What the faces carry" not in report  # no attributes in this data
    assert "| ground truth | photos | 0.000 ± 0.000 |" in report
    with open(tmp_path / "metrics.json") as f:
        meta = json.load(f)
    assert set(meta["face_figures"]) == {ev.GROUND_TRUTH_MODEL, "SF2F"}
    assert meta["face_figures"]["SF2F"]["crops_5s"] == out["figures"]["crops_5s"]
    expected = face_report.collapse_sentences(figures, NUM_TEST)
    assert meta["collapse"] == expected
    assert not any("ground truth" in s for s in expected)
    for sentence in expected:
        assert sentence in report
    if not expected:
        assert "No model's faces collapsed" in report
    # Collapse is flagged exactly where the documented thresholds say.
    for protocol, f in out["figures"].items():
        flagged = any(s.startswith(f"**SF2F ({face_report._words(protocol)})")
                      for s in expected)
        assert flagged == (f["diversity_ratio_pixels"]["mean"] < 0.3
                           or f["effective_templates"]["mean"] < 0.2 * NUM_TEST)

    runs = ev.write_summaries(str(tmp_path / "tb"), {"SF2F": out["results"]}, {"SF2F": 5},
                              training_embedder="face_identity_net",
                              figures_by_model={"SF2F": out["figures"]})
    assert len(runs) == 3
    acc = EventAccumulator(str(tmp_path / "tb" / "SF2F" / "crops_5s"),
                           size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"Validation/recall_at_5", "Validation_faces/detection_rate",
            "Validation_faces/diversity_ratio_pixels",
            "Validation_faces_std/diversity_ratio_pixels"} <= tags


def test_attribute_sentence_in_words():
    from keras_sf2f.evaluation import face_report

    cell = lambda v: {"mean": v, "variance": 0.0, "runs": 3}  # noqa: E731
    model = {f"attribute_r_{k}": cell(v) for k, v in (
        ("gender", 0.8), ("skin_tone", 0.5), ("age", 0.2), ("size", 0.05),
        ("breathiness", 0.4), ("eye_spacing", 0.02))}
    model["attribute_gender_accuracy"] = cell(0.9)
    ceiling = {f"attribute_r_{k}": cell(v) for k, v in (
        ("gender", 0.95), ("skin_tone", 0.99), ("age", 0.9), ("size", 0.5),
        ("breathiness", 0.04), ("eye_spacing", 0.8))}
    text = face_report.attribute_sentence("SF2F", "crops_5s", model, ceiling)
    assert text.startswith("SF2F (5 s crops): the faces carry gender (r=0.80, sign right for "
                           "90 %), skin tone (r=0.50); weakly age (r=0.20); not body size "
                           "(r=0.05).")
    assert "Face-only controls (a voice cannot carry them; near 0 expected): eye spacing " \
           "r=0.02." in text
    # Breathiness cannot be read on the photos themselves: named apart, not credited.
    assert "Not readable even on the photos, so not judged: breathiness (photos r=0.04)." in text


def test_demo_quality_script(data_dir, tmp_path):
    """benchmarks/demo_quality.py on a saved tiny checkpoint: JSON with the detection rate,
    diversity and recall per embedder for the checkpoint and the ground truth."""
    pytest.importorskip("dlib")
    demo_quality = load_script("benchmarks/demo_quality.py")

    model_dir = save_tiny_generator_checkpoint(str(tmp_path / "model"),
                                               builder.ModelConfig(**TINY), step=9)
    face_net = save_tiny_face_network(tmp_path / "face_net")
    out = demo_quality.main([f"--checkpoint_dir={model_dir}",
                             f"--data_dir={data_dir}", f"--face_network={face_net}",
                             "--split=test", "--runs=2", "--k=5",
                             "--ground_truth", f"--output={tmp_path / 'q.json'}"])
    assert json.loads((tmp_path / "q.json").read_text()) == json.loads(json.dumps(out))
    assert out["step"] == 9 and out["identities"] == NUM_TEST and out["chance_recall"] == 1.0
    row = out["models"]["model"]["crops_5s"]
    assert set(row["recall@5"]) == {"face_identity_net", "dlib_resnet", "dlib_aligned"}
    assert row["recall@5"]["dlib_resnet"]["mean"] == 1.0  # K = N: always a hit
    assert row["recall@5"]["dlib_aligned"]["mean"] == 1.0
    for key in ("detection_rate", "diversity_ratio_pixels", "templates", "collapsed"):
        assert row[key]["runs"] == 2 and set(row[key]) == {"mean", "std", "runs"}
    assert set(out["models"]) == {"model", ev.GROUND_TRUTH_MODEL}
    gt = out["models"][ev.GROUND_TRUTH_MODEL]["photos"]
    assert gt["templates"]["mean"] == NUM_TEST and "recall@5" not in gt


def test_detection_section_gives_the_brightness_thirds():
    from keras_sf2f.evaluation import face_report

    cell = lambda v: {"mean": v, "variance": 0.0, "runs": 1}  # noqa: E731
    thirds = {"detection_rate": cell(0.8), "detection_rate_darkest_third": cell(0.5),
              "detection_rate_middle_third": cell(0.9), "detection_rate_lightest_third": cell(1.0)}
    figures = {"SF2F": {"crops_5s": thirds}, "ground truth": {"photos": dict(thirds)}}
    lines = face_report.sections(figures, 50)
    assert ("| model | protocol | detection rate | darkest third | middle third | "
            "lightest third |") in lines
    assert "| SF2F | 5 s crops | 0.800 | 0.50 | 0.90 | 1.00 |" in lines
    # Figures without the thirds (older metrics): the table keeps its one column.
    lines = face_report.sections({"SF2F": {"crops_5s": {"detection_rate": cell(0.8)}}}, 50)
    assert "| model | protocol | detection rate |" in lines
    assert "| SF2F | 5 s crops | 0.800 |" in lines


def test_attribute_section_table_and_sentences():
    from keras_sf2f.evaluation import attribute_reader as ar
    from keras_sf2f.evaluation import face_report

    cell = lambda v: {"mean": v, "variance": 0.01, "runs": 2}  # noqa: E731

    def read(base):
        out = {f"attribute_r_{n}": cell(base) for n in ar.READ_ATTRIBUTES}
        out.update(attribute_gender_accuracy=cell(0.5 + base / 2),
                   attribute_r_shared_mean=cell(base), attribute_r_face_only_mean=cell(base))
        return out

    figures = {ev.GROUND_TRUTH_MODEL: {"photos": read(0.9)}, "SF2F": {"crops_5s": read(0.4)},
               "untrained": {"crops_5s": read(0.0)}}
    lines = "\n".join(face_report.sections(figures, 50))
    assert "## What the faces carry: attribute reader" in lines
    assert ("| attribute | kind | ground truth (photos) | SF2F (5 s crops) | "
            "untrained (5 s crops) |") in lines
    assert "| gender | voice-linked | 0.90 ± 0.10 | 0.40 ± 0.10 | 0.00 ± 0.10 |" in lines
    assert "| eye_spacing | face-only (control) |" in lines
    assert ("| gender sign accuracy | summary | 0.95 ± 0.10 | 0.70 ± 0.10 | 0.50 ± 0.10 |"
            in lines)
    assert ("- SF2F (5 s crops): the faces carry gender (r=0.40, sign right for 70 %)"
            in lines)
    assert "- untrained (5 s crops): the faces carry no attribute measurably" in lines
    assert "- ground truth" not in lines  # the ceiling gets no sentence
    assert face_report.attribute_sentences(figures)[0].startswith("SF2F (5 s crops)")
    # No detection or diversity figures given: only the attribute section.
    assert "## Are they faces" not in lines and "## Diversity" not in lines
