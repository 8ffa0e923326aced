"""The training loop on a tiny prepared dataset: finite losses, one trace, checkpoints and
summaries, exact resumption after an interruption, stage 2 (fuser only), non-finite losses,
SIGTERM to the entry point, and the training flags/configs.

Models are tiny (8-channel encoder, 32-d embedding, 2-layer discriminators, a 1/16-width FaceNet)
so that each run traces in seconds; the runs are module fixtures shared by several tests.
"""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from keras_sf2f import runs  # noqa: E402
from keras_sf2f.flags import ToolFlags  # noqa: E402
from keras_sf2f.models import builder  # noqa: E402
from keras_sf2f.models.facenet import FaceNet  # noqa: E402
from keras_sf2f.training import loop  # noqa: E402
from keras_sf2f.training import losses as losses_lib  # noqa: E402
from keras_sf2f.training.config import TrainConfig  # noqa: E402
from conftest import write_tiny_dataset  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ToolFlags("train")
# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

NUM_TRAIN, NUM_VAL = 6, 10
TINY_MODEL_FLAGS = dict(
    encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
    image_discriminator_arch_64="C4-4-2,C4-8-2", identity_classifier_arch_64="C4-4-2,C4-8-2",
    num_train_identities=NUM_TRAIN)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """6 training and 10 validation identities, 2 utterances of 260 frames (2 windows each)
    and 2 faces per identity."""
    names = {"train": [f"tr{i}" for i in range(NUM_TRAIN)],
             "val": [f"va{i}" for i in range(NUM_VAL)]}
    return write_tiny_dataset(str(tmp_path_factory.mktemp("prepared")), names)


def tiny_facenet():
    model = FaceNet(embedding_dim=16, width_multiplier=0.0625, repeats=(1, 1, 1),
                    dropout_rate=0.0)
    model.build((None, 140, 140, 3))
    return model


def make_config(model_dir, data_dir, **overrides):
    model = builder.ModelConfig(**{**TINY_MODEL_FLAGS, **overrides.pop("model", {})})
    values = dict(model_dir=str(model_dir), data_dir=data_dir, model=model, batch_size=3,
                  train_steps=5, checkpoint_every_steps=2, eval_every_steps=0,
                  eval_batch_size=8, perceptual_weight=0.0, summary_every_steps=1,
                  log_every_seconds=60.0, num_image_identities=3)
    values.update(overrides)
    return TrainConfig(**values)


def run(config, **kwargs):
    """train() recording every step's values; returns (result, {step: values})."""
    seen = {}
    user_callback = kwargs.pop("step_callback", None)

    def callback(step, values):
        seen[step] = dict(values)
        if user_callback is not None:
            user_callback(step, values)

    return loop.train(config, step_callback=callback, **kwargs), seen


# -- run A: 5 uninterrupted steps, validation every 2 ------------------------------------------

@pytest.fixture(scope="module")
def run_a(data_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run_a")
    config = make_config(model_dir, data_dir, eval_every_steps=2)
    result, seen = run(config, face_network=tiny_facenet)
    return config, result, seen


def test_trains_with_finite_losses_and_traces_once(run_a):
    config, result, seen = run_a
    assert result.step == 5 and not result.stopped_by_signal
    assert sorted(seen) == [1, 2, 3, 4, 5]
    for values in seen.values():
        assert all(math.isfinite(v) for v in values.values())
        assert {"loss/l1_pixel_loss_64", "loss/g_gan_img_loss_64", "loss/ac_loss_64",
                "loss/g_gan_ac_loss_64", "loss/total_loss", "d_loss/d_img_gan_loss_64",
                "d_loss/d_ac_gan_loss_64", "d_loss/d_ac_loss_real_64",
                "d_acc/img_real_64", "d_acc/ac_identity_64"} <= set(values)
    # Perceptual weight 0 switches the term off.
    assert not any("perceptual" in name for name in seen[1])
    # One trace for five steps (optimizer slots were built before the first step).
    assert result.trainer.train_step.experimental_get_tracing_count() == 1
    # Checkpoints every 2 steps and at the end, keep_checkpoints=3.
    assert result.checkpoint.endswith("ckpt-5")
    state = tf.train.get_checkpoint_state(config.model_dir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-2", "ckpt-4", "ckpt-5"]
    keys = {name.split("/")[0] for name, _ in tf.train.list_variables(result.checkpoint)}
    assert {"generator", "image_discriminator_64", "identity_classifier_64",
            "generator_optimizer", "image_discriminator_optimizer",
            "identity_classifier_optimizer", "step", "best_l1", "best_cosine",
            "best_recall_at_10"} <= keys


def test_summaries_validation_and_best_checkpoints(run_a):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config, result, _ = run_a
    tags = {}
    for run_name in ("train", "val"):
        accumulator = EventAccumulator(os.path.join(config.model_dir, run_name),
                                       size_guidance={"tensors": 0})
        accumulator.Reload()
        tags[run_name] = set(accumulator.Tags()["tensors"])
        if run_name == "val":
            steps = [e.step for e in accumulator.Tensors("Validation/pixel_l1")]
    assert {"loss/l1_pixel_loss_64", "loss/total_loss", "d_loss/d_img_gan_loss_64",
            "d_acc/img_fake_64", "lr/generator", "lr/image_discriminator",
            "lr/identity_classifier", "perf/step_time_s", "perf/examples_per_s"} <= tags["train"]
    assert {"Validation/pixel_l1", "Validation/pixel_l1_64", "Validation/cosine_similarity",
            "Validation/l1_distance", "Validation/recall_at_10", "Validation/faces_64",
            "_hparams_/experiment", "_hparams_/session_start_info"} <= tags["val"]
    assert steps == [2, 4, 5]
    assert set(result.last_validation) >= {"pixel_l1", "cosine_similarity", "recall@10"}
    for name in ("l1", "cosine", "recall_at_10"):
        directory = os.path.join(config.model_dir, f"best_{name}")
        assert tf.train.latest_checkpoint(directory) is not None, name
        with open(os.path.join(directory, "best.json")) as f:
            best = json.load(f)
        assert best["metric"] == name and best["step"] in (2, 4, 5)
    # One configuration file: flags.cfg, which reads back as the run's configuration.
    assert not os.path.exists(os.path.join(config.model_dir, "train_config.json"))
    assert _parse(f"--flagfile={os.path.join(config.model_dir, 'flags.cfg')}") == config
    assert runs.load_run(config.model_dir).model_config.embedding_dim == 32


# -- run B: interrupted by SIGTERM at step 2, resumed; then a non-finite loss -------------------

@pytest.fixture(scope="module")
def run_b(data_dir, tmp_path_factory, run_a):
    model_dir = tmp_path_factory.mktemp("run_b")

    def interrupt(step, values):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first, first_seen = run(make_config(model_dir, data_dir, checkpoint_every_steps=100),
                            step_callback=interrupt)
    # Resume with train_steps=7; l1 is multiplied by a variable that turns NaN after step 5.
    factor = tf.Variable(1.0)
    original = losses_lib.l1_pixel_loss
    patch = pytest.MonkeyPatch()
    patch.setattr(losses_lib, "l1_pixel_loss", lambda p, t: original(p, t) * factor)

    def poison(step, values):
        if step == 5:
            factor.assign(float("nan"))

    error, seen = None, {}
    try:
        second = make_config(model_dir, data_dir, train_steps=7)
        try:
            run_result = loop.train(second, step_callback=lambda s, v: (
                seen.__setitem__(s, dict(v)), poison(s, v)))
        except loop.NonFiniteLossError as e:
            error, run_result = e, None
    finally:
        patch.undo()
    return dict(model_dir=str(model_dir), first=first, first_seen=first_seen, seen=seen,
                error=error, result=run_result)


def test_sigterm_saves_and_returns(run_b):
    first = run_b["first"]
    assert first.stopped_by_signal and first.step == 2
    assert first.checkpoint.endswith("ckpt-2")  # saved by the stop, not by the schedule
    assert sorted(run_b["first_seen"]) == [1, 2]


def test_resume_continues_with_identical_losses(run_a, run_b):
    _, _, uninterrupted = run_a
    seen = run_b["seen"]
    assert min(seen) == 3  # continued at the saved step
    for step in (3, 4, 5):
        for name, value in uninterrupted[step].items():
            assert seen[step][name] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, name)
    for step in (1, 2):
        for name, value in uninterrupted[step].items():
            assert run_b["first_seen"][step][name] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_non_finite_loss_stops_with_message_and_keeps_last_good_checkpoint(run_b):
    error = run_b["error"]
    assert error is not None, "training did not stop on a NaN loss"
    assert error.name == "loss/l1_pixel_loss_64" and error.step == 6
    assert "non-finite loss loss/l1_pixel_loss_64" in str(error) and "step 6" in str(error)
    latest = tf.train.latest_checkpoint(run_b["model_dir"])
    assert latest.endswith("ckpt-4") and error.checkpoint == latest
    assert sorted(run_b["seen"]) == [3, 4, 5]  # the bad step is never reported as done
    restored = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(step=restored).restore(latest).expect_partial()
    assert int(restored.numpy()) == 4


# -- stage 2 -----------------------------------------------------------------------------------

def test_stage2_trains_only_the_fuser(data_dir, tmp_path, run_a):
    config_a = run_a[0]
    config = make_config(tmp_path / "stage2", data_dir, model={"fuser": "attention"},
                         train_fuser_only=True, init_checkpoint=config_a.model_dir,
                         learning_rate=1e-3, train_steps=2, fuser_windows=3)
    result, seen = run(config)
    assert result.step == 2 and all(math.isfinite(v) for v in seen[2].values())
    trainer = result.trainer
    generator = trainer.models.generator
    fuser_ids = {id(v) for v in generator.fuser.weights}
    assert {id(v) for v in trainer.generator_variables} == {
        id(v) for v in generator.fuser.trainable_weights}

    # The state before stage 2: the stage-1 checkpoint restored into the same configuration
    # (same seed, so the fuser's fresh initialisation is the same too).
    import keras
    keras.utils.set_random_seed(config.seed)
    before = builder.build_models(config.model)
    loop.restore_models(config_a.model_dir, builder.checkpoint_objects(before))
    changed, unchanged_bn = [], 0
    for old, new in zip(before.generator.weights, generator.weights):
        assert old.path == new.path
        same = np.array_equal(old.numpy(), new.numpy())
        if id(new) in fuser_ids:
            changed.append(not same)
        else:
            assert same, f"{new.path} changed in stage 2"
            unchanged_bn += "moving_" in new.path
    assert changed and all(changed), "the fuser did not train"
    assert unchanged_bn > 0  # BatchNorm moving statistics are among the frozen weights
    # The discriminators keep training (as in the reference).
    d_before = before.image_discriminators[0].weights
    d_after = trainer.models.image_discriminators[0].weights
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(d_before, d_after))


# -- the entry point -----------------------------------------------------------------------------

def _entry_point_args(data_dir, model_dir, *extra):
    return [sys.executable, os.path.join(REPO_ROOT, "trainers", "train.py"),
            f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--encoder=cnn",
            "--encoder_channels=8,8,8,8", "--embedding_dim=32",
            "--image_discriminator_arch_64=C4-4-2,C4-8-2",
            "--identity_classifier_arch_64=C4-4-2,C4-8-2",
            f"--num_train_identities={NUM_TRAIN}", "--batch_size=3", "--perceptual_weight=0",
            "--eval_every_steps=0", "--log_every_seconds=0", *extra]


def test_sigterm_to_entry_point_saves_and_exits_zero(data_dir, tmp_path):
    model_dir = tmp_path / "sigterm"
    process = subprocess.Popen(
        _entry_point_args(data_dir, model_dir, "--train_steps=100000",
                          "--checkpoint_every_steps=100000"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines, deadline = [], time.monotonic() + 100
    try:
        for line in process.stdout:
            lines.append(line)
            if "train: 3/100000" in line:
                process.send_signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 0, output[-3000:]
    assert "Stopped at step" in output
    step = int(output.split("Stopped at step ")[1].split(";")[0])
    assert step >= 3
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{step}")
    assert not (model_dir / "flags.json").exists()
    text = (model_dir / "flags.cfg").read_text()
    assert "--train_steps=100000" in text and "--encoder=cnn" in text
    # Only the run's own options: no data preparation, evaluation or server options.
    assert "--num_workers" not in text and "--review_port" not in text


# -- flags and configurations ----------------------------------------------------------------------

def _parse(*argv):
    FLAGS.unparse_flags()
    try:
        FLAGS(["test", *argv])
        return FLAGS.config(TrainConfig)
    finally:
        FLAGS.unparse_flags()


def test_training_flags_are_train_config():
    assert _parse() == TrainConfig()


@pytest.mark.parametrize("name,checks", [
    ("sf2f_64", dict(l1_weight=10.0, ac_weight=0.05, perceptual_weight=100.0,
                     learning_rate=5e-4, batch_size=256, train_fuser_only=False)),
    ("sf2f_128", dict(l1_weight=100.0, gan_weight=1.0, perceptual_weight=100.0)),
    ("sf2f_64_fuser", dict(learning_rate=1e-4, train_fuser_only=True, l1_weight=10.0)),
    ("sf2f_128_fuser", dict(learning_rate=1e-4, train_fuser_only=True, l1_weight=100.0)),
    ("voice2face_64", dict(l1_weight=100.0, ac_weight=1.0, perceptual_weight=0.0)),
    ("demo", dict(l1_weight=10.0, gan_weight=0.0, ac_weight=0.0, perceptual_weight=10.0,
                  batch_size=32, train_fuser_only=False, voice_pretrain_steps=1200,
                  decoder_pretrain_steps=2400)),
    ("demo+demo_fuser", dict(train_fuser_only=True, learning_rate=1e-4,
                             voice_pretrain_steps=0, decoder_pretrain_steps=0)),
])
def test_configs_parse_and_validate(name, checks):
    flagfiles = [f"--flagfile={os.path.join(REPO_ROOT, 'configs', part + '.cfg')}"
                 for part in name.split("+")]
    config = _parse(*flagfiles, "--model_dir=m", "--data_dir=d", "--face_network=f",
                    "--init_checkpoint=c", "--train_steps=3607")
    assert config.train_steps == 3607  # command-line flags after --flagfile override it
    for field, value in checks.items():
        assert getattr(config, field) == value, field
    config.validate()


def test_bad_flags_stop_with_clear_messages():
    with pytest.raises(absl_flags.UnrecognizedFlagError, match="bogus"):
        _parse("--bogus=1")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="batch_size"):
        _parse("--batch_size=0")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="crop_frames_max"):
        _parse("--crop_frames_min=150", "--crop_frames_max=100")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="mixed_precision"):
        _parse("--mixed_precision=float16")
    config = _parse("--model_dir=m", "--data_dir=d")
    with pytest.raises(ValueError, match="--face_network"):
        config.validate()
    config = _parse("--model_dir=m", "--data_dir=d", "--perceptual_weight=0",
                    "--fuser=attention", "--train_fuser_only")
    with pytest.raises(ValueError, match="init_checkpoint"):
        config.validate()


def test_identity_count_mismatch_is_reported(data_dir, tmp_path):
    config = make_config(tmp_path / "mismatch", data_dir,
                         model={"num_train_identities": NUM_TRAIN + 1})
    with pytest.raises(loop.DataError, match=f"--num_train_identities={NUM_TRAIN}"):
        loop.train(config)


# -- TensorBoard: HParams, validation tags, face grids ----------------------------------------

def _accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def test_hparams_config_declares_the_validation_metrics_written(run_a):
    from tensorboard.plugins.hparams import api_pb2, metadata
    from keras_sf2f.evaluation import summaries

    config, result, _ = run_a
    val = _accumulator(os.path.join(config.model_dir, "val"))
    experiment = metadata.parse_experiment_plugin_data(
        val.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
    declared = {m.name.tag: m for m in experiment.metric_infos}
    # The three answers to "is it learning?" first, in the session's own run (group "").
    assert [m.name.tag for m in experiment.metric_infos][:3] == [
        "Validation/recall_at_10", "Validation/cosine_similarity", "Validation/pixel_l1"]
    assert all(m.name.group == "" for m in experiment.metric_infos)
    assert declared["Validation/recall_at_10"].display_name == "val recall@10"
    # Every metric validation produced is declared (pixel L1 for the largest output only),
    # and written under the declared tag.
    scalars = set(val.Tags()["tensors"])
    assert {"recall@10", "cosine_similarity", "pixel_l1"} <= set(result.last_validation)
    for key in result.last_validation:
        assert summaries.validation_tag(key) in scalars, key
        if not key.startswith("pixel_l1_"):
            assert summaries.validation_tag(key) in declared, key
    infos = {h.name: h for h in experiment.hparam_infos}
    assert infos["train_steps"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["train_fuser_only"].type == api_pb2.DATA_TYPE_BOOL
    assert infos["model.fuser"].type == api_pb2.DATA_TYPE_STRING
    assert {h.name for h in experiment.hparam_infos if h.differs} == set(
        summaries.LEADING_HPARAMS)
    # The session (hyper-parameter values) sits in the same run as the metrics.
    start = metadata.parse_session_start_info_plugin_data(
        val.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
    assert start.group_name == os.path.basename(config.model_dir)
    assert start.hparams["train_steps"].number_value == 5
    train = _accumulator(os.path.join(config.model_dir, "train"))
    assert not any(t.startswith("_hparams_/") for t in train.Tags()["tensors"])


def _hparams_api(logdir, route, request):
    """A request to TensorBoard's HParams plugin (as the dashboard makes it) over ``logdir``."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug.test import Client

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    plugin = hparams_plugin.HParamsPlugin(base_plugin.TBContext(
        logdir=logdir, multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir)))
    response = Client(plugin.get_plugin_apps()[route]).post(
        "/", data=json.dumps(request), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data(as_text=True))


@pytest.mark.filterwarnings(  # TensorBoard's vendored bleach, imported by the plugin
    "ignore:html5lib's sanitizer is deprecated:DeprecationWarning")
def test_hparams_dashboard_shows_both_stages_with_validation_metrics(data_dir, tmp_path,
                                                                      run_a):
    """The demo's layout (runs/demo/stage1, runs/demo/stage2) as TensorBoard's HParams plugin
    reads it: one session per stage, each with its hyper-parameters and validation values;
    stage 2's validation scalars carry stage 1's tags, so they share the charts."""
    config_a = run_a[0]
    logdir = tmp_path / "demo"
    logdir.mkdir()
    os.symlink(config_a.model_dir, logdir / "stage1")
    stage2 = make_config(logdir / "stage2", data_dir, model={"fuser": "attention"},
                         train_fuser_only=True, init_checkpoint=config_a.model_dir,
                         learning_rate=1e-3, train_steps=2, fuser_windows=3, eval_every_steps=1)
    result, _ = run(stage2, face_network=tiny_facenet)
    assert set(_accumulator(str(logdir / "stage2" / "val")).Tags()["tensors"]) >= set(
        t for t in _accumulator(str(logdir / "stage1" / "val")).Tags()["tensors"]
        if t.startswith("Validation/"))

    experiment = _hparams_api(str(logdir), "/experiment", {})
    metrics = [m["name"] for m in experiment["metricInfos"]]
    assert {"tag": "Validation/recall_at_10", "group": ""} in metrics
    groups = _hparams_api(str(logdir), "/session_groups", {
        "colParams": [{"metric": m} for m in metrics],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"],
        "startIndex": 0, "sliceSize": 10})
    # One group per run, named by its model_dir (trial id), holding the session of its val/.
    by_name = {}
    for group in groups["sessionGroups"]:
        (session,) = group["sessions"]
        by_name[session["name"].split("/")[0]] = group
    assert set(by_name) == {"stage1", "stage2"}
    assert [by_name[n]["sessions"][0]["name"] for n in ("stage1", "stage2")] == [
        "stage1/val", "stage2/val"]
    assert by_name["stage2"]["name"] == "stage2"
    assert by_name["stage1"]["hparams"]["train_fuser_only"] is False
    assert by_name["stage2"]["hparams"]["train_fuser_only"] is True
    for name, group in by_name.items():
        values = {v["name"]["tag"]: v for v in group["metricValues"]}
        last = (run_a[1] if name == "stage1" else result).last_validation
        for key in ("recall@10", "cosine_similarity", "pixel_l1"):
            value = values[f"Validation/{key.replace('@', '_at_')}"]
            assert value["value"] == pytest.approx(last[key], rel=1e-5), (name, key)
            assert value["trainingStep"] == (5 if name == "stage1" else 2)


def test_validation_face_grid_is_labelled_with_rows_and_step(run_a):
    from PIL import Image
    from keras_sf2f.evaluation import summaries

    config, _, _ = run_a
    val = _accumulator(os.path.join(config.model_dir, "val"))
    events = val.Tensors("Validation/faces_64")
    assert [e.step for e in events] == [2, 4, 5]
    assert "ground truth" in val.SummaryMetadata("Validation/faces_64").summary_description
    pictures = [np.asarray(Image.open(io.BytesIO(tf.make_ndarray(e.tensor_proto)[2])))
                for e in events]
    k = config.num_image_identities
    for picture in pictures:
        # Two rows of k faces, widened by the row labels and heightened by the header.
        assert picture.shape[0] > 2 * 64 + 10 and picture.shape[1] > k * 64 + 40
    header = slice(0, 12)
    assert (pictures[0][header] < 100).any()  # text in the header
    assert not np.array_equal(pictures[0][header], pictures[1][header])  # another step

    # The faces themselves are unchanged; the labels sit left of them, the header above.
    real = np.random.default_rng(0).random((k, 64, 64, 3))
    fake = np.random.default_rng(1).random((k, 64, 64, 3))
    grid = np.concatenate([np.concatenate(list(real), 1), np.concatenate(list(fake), 1)])[None]
    labelled = summaries.labelled_face_grid(grid, step=7, resolution=64)[0]
    expected = (grid[0] * 255 + 0.5).astype(np.uint8)

    def find(block):  # (row, column) of block's top-left pixel in the labelled picture
        for y in range(labelled.shape[0]):
            x = labelled[y].tobytes().find(block[0].tobytes())
            if x >= 0 and x % 3 == 0:
                return y, x // 3
        raise AssertionError("faces not found")

    y_real, x_real = find(expected[:64])
    y_fake, x_fake = find(expected[64:])
    assert y_real > 10 and x_real > 40 and x_fake == x_real and y_fake >= y_real + 64
    assert np.array_equal(labelled[y_real:y_real + 64, x_real:x_real + k * 64], expected[:64])
    assert np.array_equal(labelled[y_fake:y_fake + 64, x_fake:x_fake + k * 64], expected[64:])
    assert (labelled[y_real:y_real + 64, :x_real] < 100).any()  # "ground truth"
    assert (labelled[y_fake:y_fake + 64, :x_real] < 100).any()  # "generated"
    step8 = summaries.labelled_face_grid(grid, step=8, resolution=64)[0]
    assert not np.array_equal(labelled[:y_real], step8[:y_real])
