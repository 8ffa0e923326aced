"""Training faults that must fail safe: an unreadable newest checkpoint, a damaged TFRecord
shard, and paths that do not exist.

* A truncated data file or index of the newest checkpoint: training says which checkpoint is
  unreadable and resumes from the newest readable one (losing one more interval, no more).
* A truncated or corrupted shard: the error names the file and the record; preparation
  records a sha256 per shard and ``prepare_data.py --verify`` names bad shards.
* ``train.py --data_dir=/nonexistent`` / ``--face_network=/nonexistent``: one line on stderr,
  a non-zero exit, nothing written into the model directory.

Tiny models and datasets (as tests/test_training.py) so that each run takes seconds.
"""

import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from conftest import write_tiny_dataset  # noqa: E402
from keras_sf2f import files  # noqa: E402
from keras_sf2f.cli import prepare_data as prepare_data_command  # noqa: E402
from keras_sf2f.cli import train as train_command  # noqa: E402
from keras_sf2f.data import records, table  # noqa: E402
from keras_sf2f.models import builder  # noqa: E402
from keras_sf2f.training import loop  # noqa: E402
from keras_sf2f.training.config import TrainConfig  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow
NUM_TRAIN = 4
TINY_MODEL = dict(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
                  image_discriminator_arch_64="C4-4-2,C4-8-2",
                  identity_classifier_arch_64="C4-4-2,C4-8-2", num_train_identities=NUM_TRAIN)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    names = {"train": [f"tr{i}" for i in range(NUM_TRAIN)], "val": ["va0", "va1"]}
    return write_tiny_dataset(str(tmp_path_factory.mktemp("prepared")), names)


def make_config(model_dir, data_dir, **overrides):
    values = dict(model_dir=str(model_dir), data_dir=data_dir,
                  model=builder.ModelConfig(**TINY_MODEL), batch_size=2, train_steps=4,
                  checkpoint_every_steps=2, keep_checkpoints=1, eval_every_steps=0,
                  perceptual_weight=0.0, summary_every_steps=100, log_every_seconds=60.0)
    values.update(overrides)
    return TrainConfig(**values)


def _truncate(path, keep_fraction=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep_fraction))


# -- checkpoints ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A run to step 4 with checkpoints every 2 steps and --keep_checkpoints=1, and the
    losses of each step."""
    model_dir = tmp_path_factory.mktemp("trained")
    seen = {}
    result = loop.train(make_config(model_dir, data_dir),
                        step_callback=lambda step, values: seen.__setitem__(step, dict(values)))
    assert result.step == 4
    return str(model_dir), seen


def test_at_least_two_checkpoints_are_kept(trained):
    model_dir, _ = trained
    # --keep_checkpoints=1 asked for one; the previous one is what a corrupt newest leaves.
    state = tf.train.get_checkpoint_state(model_dir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-2",
                                                                                "ckpt-4"]


@pytest.mark.parametrize("damage", ["data", "index"])
def test_unreadable_newest_checkpoint_resumes_from_the_previous_one(
        trained, data_dir, tmp_path, monkeypatch, damage):
    source, uninterrupted = trained
    model_dir = str(tmp_path / "run")
    shutil.copytree(source, model_dir)
    damaged = os.path.join(model_dir, "ckpt-4.index") if damage == "index" else \
        tf.io.gfile.glob(os.path.join(model_dir, "ckpt-4.data-*"))[0]
    _truncate(damaged)
    assert loop.checkpoint_problem(os.path.join(model_dir, "ckpt-4")) is not None
    assert loop.checkpoint_problem(os.path.join(model_dir, "ckpt-2")) is None

    warnings = []
    monkeypatch.setattr(loop.logging, "warning",
                        lambda message, *args: warnings.append(message % args))
    seen = {}
    result = loop.train(make_config(model_dir, data_dir, train_steps=5),
                        step_callback=lambda step, values: seen.__setitem__(step, dict(values)))
    # Resumed at step 2: steps 3-4 are trained again, exactly as the first time.
    assert sorted(seen) == [3, 4, 5] and result.step == 5
    for step in (3, 4):
        for name, value in uninterrupted[step].items():
            assert seen[step][name] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, name)
    said = "\n".join(warnings)
    assert "ckpt-4 is unreadable" in said
    expected = "not an sstable" if damage == "index" else "Read less bytes than requested"
    assert expected in said
    assert "resuming from" in said and "ckpt-2" in said and "steps 3-4 are trained again" in said
    # The damaged files are set aside (not deleted), out of the way of the new ckpt-4.
    assert os.path.exists(damaged + loop.UNREADABLE_SUFFIX)
    assert loop.checkpoint_problem(os.path.join(model_dir, "ckpt-4")) is None
    state = tf.train.get_checkpoint_state(model_dir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-4",
                                                                                "ckpt-5"]


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(trained, tmp_path):
    source, _ = trained
    model_dir = str(tmp_path / "run")
    shutil.copytree(source, model_dir)
    for step in (2, 4):
        _truncate(tf.io.gfile.glob(os.path.join(model_dir, f"ckpt-{step}.data-*"))[0])
    with pytest.raises(ValueError, match=r"no readable checkpoint in .*ckpt-4: IndexError"):
        loop.newest_readable_checkpoint(model_dir)
    # A lost state file does not hide the checkpoints either.
    shutil.rmtree(model_dir)
    shutil.copytree(source, model_dir)
    os.remove(os.path.join(model_dir, "checkpoint"))
    assert loop.newest_readable_checkpoint(model_dir).endswith("ckpt-4")


def test_unreadable_init_checkpoint_is_named(trained, tmp_path):
    source, _ = trained
    model_dir = str(tmp_path / "run")
    shutil.copytree(source, model_dir)
    _truncate(tf.io.gfile.glob(os.path.join(model_dir, "ckpt-4.data-*"))[0])
    models = builder.build_models(builder.ModelConfig(**TINY_MODEL))
    with pytest.raises(ValueError, match=r"checkpoint .*ckpt-4 is unreadable \(IndexError"):
        loop.restore_models(model_dir, builder.checkpoint_objects(models))


# -- shards --------------------------------------------------------------------------------------

def _record_offsets(path):
    """Start offset of each record: TFRecord frames a record as length (8 bytes), its CRC (4),
    the data, the data's CRC (4)."""
    offsets, position = [], 0
    for record in tf.data.TFRecordDataset(path):
        offsets.append(position)
        position += 16 + len(record.numpy())
    return offsets


def test_preparation_records_a_checksum_per_shard(data_dir):
    with open(os.path.join(data_dir, records.DATASET_FILE)) as f:
        shards = json.load(f)["shards"]
    on_disk = sorted(n for n in os.listdir(data_dir) if n.endswith(".tfrecord"))
    assert sorted(shards) == on_disk and len(on_disk) == 4
    for name, entry in shards.items():
        path = os.path.join(data_dir, name)
        assert entry["sha256"] == files.sha256(path)
        assert entry["bytes"] == os.path.getsize(path)
        assert entry["records"] == len(_record_offsets(path))
    assert records.verify_data_dir(data_dir) == {"checked": 4, "checksums": True,
                                                 "problems": []}


@pytest.fixture
def damaged_data(data_dir, tmp_path):
    """A copy of the dataset with its training utterance shard cut inside record #6 and a byte
    of its training face shard flipped inside record #3."""
    copy = str(tmp_path / "data")
    shutil.copytree(data_dir, copy)
    utterances = records.shard_paths(copy, "train", "utterances")[0]
    offsets = _record_offsets(utterances)
    cut = offsets[5]
    with open(utterances, "r+b") as f:
        f.truncate(cut + 100)
    faces = records.shard_paths(copy, "train", "faces")[0]
    offsets = _record_offsets(faces)
    data = bytearray(open(faces, "rb").read())
    data[offsets[2] + 40] ^= 0xFF
    with open(faces, "wb") as f:
        f.write(bytes(data))
    return copy, utterances, faces, cut


def test_damaged_shard_is_named_with_its_record(damaged_data):
    copy, utterances, faces, cut = damaged_data
    with pytest.raises(table.DataError) as error:
        table.load_split(copy, "train")
    message = str(error.value)
    assert utterances in message and "record #6 " in message
    assert f"truncated record at byte {cut}" in message
    assert "--verify" in message
    # Cut exactly between records #5 and #6: TFRecord reads 5 good records and stops, and only
    # the count recorded at preparation shows that the rest is gone.
    with open(utterances, "r+b") as f:
        f.truncate(cut)
    assert records.scan_records(utterances) == (5, None)
    with pytest.raises(table.DataError, match=r"record #6 \(counting from 1\) is missing: "
                                              r"the file holds 5 records where preparation "
                                              r"wrote 8"):
        table.load_split(copy, "train")
    problems = records.verify_data_dir(copy)["problems"]
    assert any(p.startswith(utterances) and "ends cleanly after 5 of 8 records" in p
               for p in problems), problems
    # The face shard (read after the utterances by load_split) on its own: a flipped byte.
    with pytest.raises(records.CorruptShardError) as error:
        list(records.read_examples([faces], records.parse_face))
    assert error.value.path == faces and error.value.record == 2
    assert "corrupted record at byte" in str(error.value)


def test_verify_names_bad_and_stray_shards(damaged_data, data_dir, capsys):
    copy, utterances, faces, _ = damaged_data
    # A shard left over from an earlier preparation with another shard count.
    stray = os.path.join(copy, "train-utterances-00001-of-00002.tfrecord")
    shutil.copy(os.path.join(data_dir, os.path.basename(utterances)), stray)
    problems = records.verify_data_dir(copy)["problems"]
    assert len(problems) == 3, problems
    (bad_faces,) = [p for p in problems if p.startswith(faces)]
    assert "same size but different content" in bad_faces and "record #3 " in bad_faces
    (bad_utterances,) = [p for p in problems if p.startswith(utterances)]
    assert "bytes instead of" in bad_utterances and "record #6 " in bad_utterances
    (bad_stray,) = [p for p in problems if p.startswith(stray)]
    assert "not written by the preparation" in bad_stray

    command = prepare_data_command
    FLAGS = command.FLAGS
    for directory, expected in ((copy, 1), (data_dir, 0)):
        FLAGS.unparse_flags()
        try:
            FLAGS(["prepare_data", "--verify", f"--data_dir={directory}"])
            assert command.main(["prepare_data"]) == expected
        finally:
            FLAGS.unparse_flags()
        captured = capsys.readouterr()
        if expected:
            bad = [line for line in captured.err.splitlines() if line.startswith("bad: ")]
            assert len(bad) == 3 and any(faces in line for line in bad)
            assert "3 problem(s) in 4 shards" in captured.err
        else:
            assert "all 4 shards OK" in captured.out and not captured.err


def test_verify_without_recorded_checksums_reads_every_record(damaged_data):
    copy, utterances, faces, _ = damaged_data
    path = os.path.join(copy, records.DATASET_FILE)
    with open(path) as f:
        info = json.load(f)
    del info["shards"]  # as prepared before checksums were recorded
    files.write_json(path, info)
    result = records.verify_data_dir(copy)
    assert not result["checksums"] and result["checked"] == 4
    assert sorted(p.split(":")[0] for p in result["problems"]) == sorted([utterances, faces])


# -- paths that do not exist -------------------------------------------------------------------

def _train_args(data_dir, model_dir, *extra):
    return [f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--encoder=cnn",
            "--encoder_channels=8,8,8,8", "--embedding_dim=32",
            "--image_discriminator_arch_64=C4-4-2,C4-8-2",
            "--identity_classifier_arch_64=C4-4-2,C4-8-2",
            f"--num_train_identities={NUM_TRAIN}", "--batch_size=2", *extra]


def test_missing_data_dir_is_one_line_and_writes_nothing(tmp_path):
    model_dir = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "trainers", "train.py"),
         *_train_args("/nonexistent", model_dir, "--perceptual_weight=0")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --data_dir=/nonexistent does not exist (a directory written by "
                      "trainers/prepare_data.py)"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not model_dir.exists()


def test_missing_face_network_and_init_checkpoint_are_one_line_each(data_dir, tmp_path,
                                                                     capsys):
    command = train_command
    FLAGS = command.FLAGS
    model_dir = tmp_path / "model"
    for extra, needle in (
            (["--face_network=/nonexistent"], "--face_network=/nonexistent does not exist"),
            (["--perceptual_weight=0", "--init_checkpoint=/nonexistent/ckpt-7"],
             "--init_checkpoint=/nonexistent/ckpt-7 does not exist")):
        FLAGS.unparse_flags()
        try:
            FLAGS(["train", *_train_args(data_dir, model_dir, *extra)])
            assert command.main(["train"]) == 1
        finally:
            FLAGS.unparse_flags()
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [captured.err.strip()]
        assert captured.err.startswith("error: ") and needle in captured.err
        assert not model_dir.exists()


def test_library_train_writes_nothing_before_its_inputs_load(data_dir, tmp_path):
    # The same guarantee for callers of loop.train: the face network fails to load, and no
    # flags.cfg is left behind.
    model_dir = tmp_path / "model"
    config = make_config(model_dir, data_dir, face_network=str(tmp_path / "missing_face_net"))
    with pytest.raises(FileNotFoundError, match="missing_face_net"):
        loop.train(config, extra_files={"flags.cfg": "--x\n"})
    assert not model_dir.exists()
