r"""Trains SF2F (stage 1, stage 2 = fuser only, or the voice2face baseline).

    python trainers/train.py --flagfile=configs/sf2f_64.cfg --data_dir=DATA --model_dir=DIR \
        --face_network=FACE_NET
    python trainers/train.py --flagfile=configs/sf2f_64_fuser.cfg --data_dir=DATA \
        --model_dir=DIR2 --init_checkpoint=DIR/best_l1 --face_network=FACE_NET
    python trainers/train.py --flagfile=configs/demo.cfg --data_dir=runs/demo/data \
        --model_dir=runs/demo/sf2f_64 --face_network=runs/demo/face_identity

Flags after --flagfile override it; a flagfile's options of other tools (configs/demo.cfg's
data preparation options) are skipped. An overlay flagfile given alone
(configs/demo_fuser.cfg, which adds the fuser to configs/demo.cfg) is refused, naming what it
goes on top of. Re-running the same command resumes from the latest checkpoint in --model_dir;
the model flags must then be the run's own (its flags.cfg), and ones that contradict them stop
the command with the differences named (resume with --flagfile=DIR/flags.cfg). SIGTERM or
Ctrl-C saves a checkpoint and exits 0. The effective configuration (model and training options)
is written to --model_dir as flags.cfg, a flagfile.
TensorBoard: ``tensorboard --logdir DIR``. Multi-worker: --strategy=multi_worker with TF_CONFIG
set in every worker's environment. Exit status 1 with a message on a non-finite loss (the last
good checkpoint is kept) or on bad data/configuration. Paths that do not exist (--data_dir,
--face_network, --init_checkpoint) are reported in one line each before TensorFlow starts, and
nothing is written into --model_dir then.
"""

import os
import sys

from absl import app, logging

from keras_sf2f import runs
from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags
from keras_sf2f.models.builder import ModelConfig
from keras_sf2f.training.config import TrainConfig

FLAGS = ToolFlags("train")


def _local(path: str) -> bool:
    """Paths this check can see; remote file systems (gs://...) are left to TensorFlow."""
    return "://" not in path


def _has_checkpoint(model_dir: str) -> bool:
    if not os.path.isdir(model_dir):
        return False
    return any(name == "checkpoint" or (name.startswith("ckpt-") and name.endswith(".index"))
               for name in os.listdir(model_dir))


def input_problems(config: TrainConfig) -> list:
    """What the run would read that does not exist, and a run to resume whose own model flags
    differ from these (``runs.resume_problem``), one line each. Plain file reads, so that a
    mistyped path or a wrong flagfile is reported before TensorFlow is imported (no start-up
    noise) and before anything is written into the model directory."""
    problems = []
    data_dir = config.data_dir
    if _local(data_dir):
        if not os.path.isdir(data_dir):
            problems.append(f"--data_dir={data_dir} does not exist (a directory written by "
                            f"trainers/prepare_data.py)")
        # splits.json: keras_sf2f.data.records.SPLITS_FILE (that module imports TensorFlow).
        elif not os.path.isfile(os.path.join(data_dir, "splits.json")):
            problems.append(f"--data_dir={data_dir} is not a prepared data directory (no "
                            f"splits.json): run trainers/prepare_data.py --data_dir={data_dir}")
    face_network = config.face_network
    if face_network and _local(face_network) and not os.path.exists(face_network):
        problems.append(f"--face_network={face_network} does not exist (a directory written by "
                        f"trainers/train_face_identity.py, or a .keras FaceNet file)")
    init = config.init_checkpoint
    resuming = _local(config.model_dir) and _has_checkpoint(config.model_dir)
    # Only read when the model directory has no checkpoint to resume from.
    if init and _local(init) and not resuming and not (
            os.path.isdir(init) or os.path.isfile(init + ".index")):
        problems.append(f"--init_checkpoint={init} does not exist (a training or import "
                        f"directory, or a checkpoint prefix such as DIR/ckpt-1000)")
    if resuming:
        try:
            problem = runs.resume_problem(config.model_dir, config.model)
        except runs.RunError as e:  # the run's configuration file is unreadable
            problem = str(e)
        if problem:
            problems.append(problem)
    return problems


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    # First: an overlay alone makes every other message about the wrong model.
    overlay = runs.overlay_problem(FLAGS.flagfiles, FLAGS.given(ModelConfig))
    if overlay:
        print(f"error: {overlay}", file=sys.stderr)
        return 1
    try:
        config = FLAGS.config(TrainConfig).validate()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    problems = input_problems(config)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1

    from keras_sf2f.data.table import DataError  # noqa: PLC0415 - imports TensorFlow
    from keras_sf2f.training import loop  # noqa: PLC0415

    try:
        result = loop.train(config)
    except (loop.NonFiniteLossError, DataError, ValueError, FileNotFoundError) as e:
        # Expected failures (bad data, flags, files): the message, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.stopped_by_signal:
        print(f"Stopped at step {result.step}; checkpoint {result.checkpoint}. "
              f"Run the same command again to resume.")
    else:
        print(f"Trained to step {result.step}; checkpoint {result.checkpoint}.")
    return 0


def run():
    """sf2f-train and trainers/train.py."""
    run_absl_tool(__name__)
