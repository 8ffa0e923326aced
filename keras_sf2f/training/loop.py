"""``train(config)``: data, checkpoints, resumption, signals, summaries and validation around
the GAN step of ``keras_sf2f.training.trainer``.

Model directory layout (``config.model_dir``)::

    ckpt-<step>.index/.data-*, checkpoint   tf.train.CheckpointManager: generator, every
                                            discriminator (builder.checkpoint_objects names),
                                            the optimizers, step, best metric values
    best_l1/ best_cosine/ best_recall_at_10/  each a CheckpointManager (max_to_keep=1) of the
                                            models + step at the best validation value so far,
                                            and best.json (step, value, every metric)
    train/ val/                             TensorBoard runs: train/ the training scalars
                                            (loss/, d_loss/, d_acc/, lr/, perf/), val/ the
                                            validation scalars and face grids (Validation/)
                                            and the HParams session; tag names in
                                            keras_sf2f.evaluation.summaries
    flags.cfg                               the effective configuration (TrainConfig, model
                                            included) as a flagfile: what keras_sf2f.runs
                                            and --flagfile read back

Resumption: the data pipelines are stateless functions of (seed, step), so the data position
is the step; re-running the same command restores the latest checkpoint and continues with
exactly the batches an uninterrupted run would have seen. SIGTERM / SIGINT set a flag that is
checked between steps: the loop saves a checkpoint and returns normally (a second Ctrl-C
aborts at once). A kill -9 loses at most ``checkpoint_every_steps`` steps.

A non-finite loss raises :class:`NonFiniteLossError` naming the loss and the step; nothing is
saved after it, so the latest checkpoint is the last good state.

Validation (every ``eval_every_steps`` and at the end): one generated face per validation
identity from its deterministic window stack (``pipelines.identity_windows`` without a seed:
sorted utterances, 1.25 s windows from frame 0, at most ``eval_max_windows``; window
embeddings fused by the fuser, or averaged by stage-1 models -- the reference's
``average_voice_embedding`` mode), compared with the identity's first face (pixel L1 per output
resolution) and, with a face network, the face network's embedding of the largest output against
the identity's ground truth (all its validation faces): cosine similarity, L1/L2 distances and
recall@K via ``keras_sf2f.evaluation.metrics``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_sf2f import files, runs
from keras_sf2f.data import pipelines
from keras_sf2f.data.table import DataError, load_split
from keras_sf2f.evaluation import metrics, summaries
from keras_sf2f.image_ranges import normalized_to_unit
from keras_sf2f.models import builder
from keras_sf2f.models.face_network import load_face_network
from keras_sf2f.progress import Progress
from keras_sf2f.training import losses
from keras_sf2f.training.config import TrainConfig
from keras_sf2f.training.trainer import GanTrainer, make_strategy, worker_info

# name -> (higher is better, validation result key or None for the configured L1)
BEST_METRICS = {
    "l1": (False, None),
    "cosine": (True, "cosine_similarity"),
    "recall_at_10": (True, "recall@10"),
}


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped without saving that state."""

    def __init__(self, name: str, step: int, value: float, checkpoint: str | None):
        self.name, self.step, self.value, self.checkpoint = name, step, value, checkpoint
        kept = (f"the last good checkpoint is {checkpoint}" if checkpoint
                else "no checkpoint had been saved yet")
        super().__init__(f"non-finite loss {name} = {value} at step {step}; training stopped "
                         f"without saving this state ({kept})")


@dataclasses.dataclass
class TrainResult:
    step: int                   # the step reached (and saved)
    stopped_by_signal: bool
    last_values: dict           # the last step's scalars
    last_validation: dict       # the last validation metrics ({} if none)
    checkpoint: str | None      # path of the latest checkpoint
    trainer: GanTrainer


# -- checkpoints ----------------------------------------------------------------------------

def restore_models(path: str, model_objects: dict) -> str:
    """Training's --init_checkpoint: ``runs.restore_models`` with the fuser allowed to start
    fresh (stage 2 from a stage-1 checkpoint, whose fuser does not exist yet). Every other
    variable is matched both ways; models the checkpoint does not hold keep their
    initialisation, with a warning. Returns the checkpoint prefix."""
    return runs.restore_models(path, model_objects, fresh_fuser=True)


class _CheckpointWriter:
    """A CheckpointManager that, under multi-worker training, lets every worker take part in
    saving (non-chief workers write to a scratch directory that is deleted afterwards)."""

    def __init__(self, checkpoint, directory, max_to_keep, is_chief, task_id):
        self.is_chief = is_chief
        self.directory = directory if is_chief else os.path.join(
            directory, f".worker_{task_id}_scratch")
        self.manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                                  max_to_keep=max_to_keep)

    @property
    def latest_checkpoint(self):
        return self.manager.latest_checkpoint

    def save(self, step: int) -> str:
        path = self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            tf.io.gfile.rmtree(self.directory)
        return path


# Regular checkpoints kept at least: when the newest one turns out unreadable (a full disk, a
# crash while it was copied), the one before it is what training resumes from.
MIN_KEPT_CHECKPOINTS = 2
UNREADABLE_SUFFIX = ".unreadable"
_REGULAR_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


def checkpoint_problem(prefix: str) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be read back, or None when it can.

    Parses the index and reads every tensor, which checks that each data file is as long as
    the index says and that every tensor's checksum matches. A truncated data file raises
    ``IndexError`` inside TensorFlow's reader, a truncated index an ``OpError``; both, and any
    missing file, come back as a one-line reason.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError, OSError) as e:
        return f"{type(e).__name__}: {runs.one_line(e)}"
    return None


def _regular_checkpoints(model_dir: str) -> list:
    """``(step, prefix)`` of the regular checkpoints of ``model_dir``, newest first: every
    ``ckpt-<n>.index`` on disk and every entry of the ``checkpoint`` state file (which may
    name one whose index never got written). A lost or unreadable state file therefore does
    not make training start over."""
    found = {}
    if tf.io.gfile.isdir(model_dir):
        for name in tf.io.gfile.listdir(model_dir):
            match = _REGULAR_INDEX.match(name)
            if match:
                found[int(match.group(1))] = os.path.join(model_dir, name[:-len(".index")])
    state = tf.train.get_checkpoint_state(model_dir)
    for path in (state.all_model_checkpoint_paths if state else ()):
        match = re.search(r"ckpt-(\d+)$", path)
        if match and os.path.dirname(os.path.abspath(path)) == os.path.abspath(model_dir):
            found.setdefault(int(match.group(1)), path)
    return sorted(found.items(), reverse=True)


def _set_aside(prefix: str) -> list:
    """Renames the files of an unreadable checkpoint to ``*.unreadable`` (kept for inspection,
    out of the way of a later save at the same step). Returns the new names."""
    moved = []
    for path in tf.io.gfile.glob(prefix + ".index") + tf.io.gfile.glob(prefix + ".data-*"):
        tf.io.gfile.rename(path, path + UNREADABLE_SUFFIX, overwrite=True)
        moved.append(path + UNREADABLE_SUFFIX)
    return moved


def _rewrite_checkpoint_state(model_dir: str, kept: list) -> None:
    """Points the ``checkpoint`` state file at ``kept`` (prefixes, oldest first; the last one
    is where training resumes), keeping their save times so CheckpointManager still rotates
    them out in order."""
    state = tf.train.get_checkpoint_state(model_dir)
    times = {}
    if state is not None:
        times = {os.path.basename(path): stamp for path, stamp in
                 zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)}
    names = [os.path.basename(prefix) for prefix in kept]
    timestamps = []
    for name, prefix in zip(names, kept):
        if name in times:
            timestamps.append(times[name])
        else:  # state file lost: the index file's modification time is the save time
            timestamps.append(tf.io.gfile.stat(prefix + ".index").mtime_nsec / 1e9)
    preserved = state.last_preserved_timestamp if state is not None and \
        state.last_preserved_timestamp else min(timestamps) - 1.0
    # Written by hand (the CheckpointState text format) with paths relative to model_dir, as
    # CheckpointManager writes them, so the directory stays movable.
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    lines += [f"all_model_checkpoint_timestamps: {stamp!r}" for stamp in timestamps]
    lines.append(f"last_preserved_timestamp: {preserved!r}")
    path = os.path.join(model_dir, "checkpoint")
    files.write_text(path, "\n".join(lines) + "\n")


def newest_readable_checkpoint(model_dir: str, *, set_aside: bool = True) -> str | None:
    """The prefix of the newest regular checkpoint of ``model_dir`` that reads back whole, or
    None when the directory has none.

    Newer checkpoints that cannot be read are reported (which file, why, which steps are
    trained again) and, with ``set_aside`` (the chief), renamed to ``*.unreadable`` with the
    state file pointed at the one resumed from. Raises ValueError when checkpoints exist but
    none is readable: starting over silently would throw the run away.
    """
    candidates = _regular_checkpoints(model_dir)
    unreadable = []
    chosen = None
    for step, prefix in candidates:
        problem = checkpoint_problem(prefix)
        if problem is None:
            chosen = (step, prefix)
            break
        unreadable.append((step, prefix, problem))
    if not unreadable:
        return chosen[1] if chosen else None
    if chosen is None:
        listed = "; ".join(f"{prefix}: {problem}" for _, prefix, problem in unreadable)
        raise ValueError(
            f"no readable checkpoint in {model_dir} ({listed}). Move these checkpoint files "
            f"away to start training from scratch, or restore a copy of the directory")
    for step, prefix, problem in unreadable:
        moved = _set_aside(prefix) if set_aside else []
        logging.warning("checkpoint %s is unreadable (%s)%s", prefix, problem,
                        f"; its files were renamed to {', '.join(moved)}" if moved else "")
    newest = unreadable[0][0]
    logging.warning("resuming from %s, the newest readable checkpoint: steps %d-%d are "
                    "trained again", chosen[1], chosen[0] + 1, newest)
    if set_aside:
        kept = [prefix for step, prefix in reversed(candidates) if step <= chosen[0]]
        _rewrite_checkpoint_state(model_dir, kept)
    return chosen[1]


# -- signals --------------------------------------------------------------------------------

class _StopRequest:
    """SIGTERM / SIGINT handler: asks the loop to save and stop after the current step."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __call__(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: give up at once
        self.signum = signum
        logging.warning("received %s: saving a checkpoint after this step and stopping",
                        signal.Signals(signum).name)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self)
        return self

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


# -- validation -----------------------------------------------------------------------------

def face_grid(real, fake) -> np.ndarray:
    """[k,S,S,3] real and generated (generator space) -> one [1, 2S, kS, 3] picture in [0,1]:
    real faces on top, generated below."""
    rows = [np.concatenate(list(normalized_to_unit(tf.constant(x)).numpy()), axis=1)
            for x in (real, fake)]
    return np.concatenate(rows, axis=0)[None]


class Validator:
    """Deterministic validation of a trainer's generator on one split (module docstring)."""

    def __init__(self, trainer: GanTrainer, table, config: TrainConfig):
        self.trainer = trainer
        self.num_identities = table.num_identities
        self.resolutions = trainer.resolutions
        size = config.model.image_size
        self.num_image_identities = min(config.num_image_identities, table.num_identities)

        def identity_item(identity):
            segments, mask = pipelines.identity_windows(table, identity,
                                                        max_windows=config.eval_max_windows)
            face = pipelines.decode_face(table.face_png[size][table.id_face_first[identity]],
                                         size)
            return segments, mask, face

        self.dataset = tf.data.Dataset.range(table.num_identities).map(
            identity_item, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        ).batch(config.eval_batch_size).prefetch(1)
        self.ground_truth = None
        if trainer.face_network is not None:
            faces = pipelines.faces_dataset(table, image_size=size).batch(config.eval_batch_size)
            embeddings, labels = [], []
            for images, label in faces:
                embeddings.append(trainer.embed_faces(images).numpy())
                labels.append(label.numpy())
            self.ground_truth = np.asarray(metrics.ground_truth_embeddings(
                np.concatenate(embeddings), np.concatenate(labels), table.num_identities),
                np.float32)

    def evaluate(self):
        """-> (metrics dict, {resolution: grid image})."""
        l1 = {res: [] for res in self.resolutions}
        predicted, grids = [], {}
        for segments, mask, faces in self.dataset:
            images = self.trainer.generate(segments, mask)
            for res, image in zip(self.resolutions, images):
                target = losses.downsample_nearest(faces, res)
                l1[res].append(losses.l1_pixel_loss(image, target).numpy())
                if res not in grids and self.num_image_identities:
                    k = self.num_image_identities
                    grids[res] = face_grid(target[:k].numpy(), image[:k].numpy())
            if self.ground_truth is not None:
                predicted.append(self.trainer.embed_faces(images[-1]).numpy())
        results = {f"pixel_l1_{res}": float(np.mean(np.concatenate(l1[res])))
                   for res in self.resolutions}
        results["pixel_l1"] = results[f"pixel_l1_{self.resolutions[-1]}"]
        if self.ground_truth is not None:
            predicted = np.concatenate(predicted).astype(np.float32)
            for name, value in metrics.similarity_metrics(predicted, self.ground_truth).items():
                results[name] = float(value)
            ks = tuple(k for k in (1, 5, 10) if k <= self.num_identities)
            if ks:
                for name, value in metrics.recall_at_k(predicted, self.ground_truth,
                                                       ks=ks).items():
                    results[name] = float(value)
        return results, grids


# -- summaries ------------------------------------------------------------------------------

def _hparams(config: TrainConfig) -> dict:
    values = {}
    for name, value in config.to_dict().items():
        if name == "model":
            for model_name, model_value in value.items():
                values[f"model.{model_name}"] = model_value
        else:
            values[name] = value
    out = {}
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif value is None:
            value = ""
        out[name] = value
    return out


def _write_hparams(config: TrainConfig, writer):
    """The HParams session of this run, in the validation run (``summaries`` says why)."""
    summaries.write_hparams(writer, _hparams(config),
                            trial_id=os.path.basename(os.path.abspath(config.model_dir)))


# -- the loop -------------------------------------------------------------------------------


def _first_non_finite(values: dict):
    """The first non-finite loss, preferring individual terms over totals."""
    names = sorted((n for n in values if n.startswith(("loss/", "d_loss/"))),
                   key=lambda n: (n.endswith("total_loss"), n))
    for name in names:
        if not math.isfinite(values[name]):
            return name
    return None


def train(config: TrainConfig, *, face_network=None, step_callback=None,
          extra_files: dict | None = None, handle_signals: bool = True) -> TrainResult:
    """Trains (or resumes) ``config`` until ``config.train_steps``.

    Args:
      config: the TrainConfig (validated here).
      face_network: the perceptual loss's face network (a Keras model or a zero-argument
        callable); default ``load_face_network(config.face_network)`` when one is configured.
      step_callback: ``f(step, values)`` after every step (values: the step's scalars).
      extra_files: {file name: text} written into model_dir by the chief, after flags.cfg.
      handle_signals: install the SIGTERM/SIGINT save-and-stop handler (main thread only).
    Returns a TrainResult. Raises NonFiniteLossError, DataError or ValueError.
    """
    config.validate()
    # MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = make_strategy(config.strategy)
    _, task_id, is_chief = worker_info(strategy)
    model_dir = config.model_dir
    # Nothing is written into model_dir before the data, the face network and the checkpoint
    # to start from have loaded: a mistyped path must not leave a run directory behind, nor
    # overwrite the flags of the run being resumed.

    quality = config.model.voice_quality_channels
    train_table = load_split(config.data_dir, "train", voice_quality=quality)
    if config.model.identity_classifier_arch_64 or config.model.identity_classifier_arch_128:
        if config.model.num_train_identities != train_table.num_identities:
            raise DataError(
                f"the training split of {config.data_dir} has {train_table.num_identities} "
                f"identities but the identity classifiers are "
                f"{config.model.num_train_identities} wide: set "
                f"--num_train_identities={train_table.num_identities}")
    val_table = (load_split(config.data_dir, config.val_split, voice_quality=quality)
                 if config.eval_every_steps else None)

    keras.utils.set_random_seed(config.seed)
    if face_network is None and config.face_network:
        path = config.face_network
        face_network = lambda: load_face_network(path)[0]  # noqa: E731
    trainer = GanTrainer(config, strategy, face_network=face_network)
    logging.info("replicas: %d, global batch %d, generator variables trained: %d",
                 trainer.num_replicas, trainer.global_batch_size,
                 len(trainer.generator_variables))
    logging.info("precision %s%s, XLA %s, %s", config.mixed_precision,
                 " with dynamic loss scaling" if trainer.loss_scaling else "",
                 "on" if config.jit_compile else "off", trainer.fast_conv_reason)

    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_vars = {name: tf.Variable(-math.inf if higher else math.inf, dtype=tf.float64,
                                   trainable=False, name=f"best_{name}")
                 for name, (higher, _) in BEST_METRICS.items()}
    # Before the manager exists: it reads the state file that setting an unreadable newest
    # checkpoint aside rewrites.
    latest = newest_readable_checkpoint(model_dir, set_aside=is_chief)
    if latest:
        # Before the checkpoint object takes the optimizers: this may rebuild some.
        adopted = trainer.adopt_checkpoint_learning_rates(latest)
        if adopted:
            logging.info("%s: built with the learning-rate schedule, as %s saved them (an "
                         "older run's form)", ", ".join(adopted), latest)
    checkpoint = tf.train.Checkpoint(step=step_var, **{f"best_{k}": v for k, v in
                                                       best_vars.items()},
                                     **trainer.checkpoint_objects())
    keep = max(config.keep_checkpoints, MIN_KEPT_CHECKPOINTS)
    if keep != config.keep_checkpoints:
        logging.info("keeping %d regular checkpoints instead of %d, so that an unreadable "
                     "newest checkpoint leaves one to resume from", keep,
                     config.keep_checkpoints)
    manager = _CheckpointWriter(checkpoint, model_dir, keep, is_chief, task_id)
    if latest:
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
            # The other direction too: a value of the run's models that nothing took (e.g. a
            # fuser, or a moving average, these flags do not have) would be dropped silently.
            unused = runs.unused_model_values(latest, trainer.model_objects(), every_model=True)
            if unused:
                raise ValueError(f"the checkpoint holds values no model takes: "
                                 f"{', '.join(unused[:5])}")
        except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:
            raise ValueError(f"cannot resume from {latest}: it does not match the current "
                             f"flags (the run's were saved in {model_dir}/flags.cfg): "
                             f"{e}") from None
        logging.info("resuming from %s (step %d)", latest, int(step_var.numpy()))
    elif config.init_checkpoint:
        # The models without this run's own moving average: that one starts at the restored
        # generator (copy_generator_to_ema below).
        prefix = restore_models(config.init_checkpoint,
                                builder.checkpoint_objects(trainer.models))
        logging.info("initialised the models from %s (optimizers start fresh)", prefix)
        fuser = trainer.models.generator.fuser
        if config.fuser_init == "average" and fuser is not None and not \
                runs.checkpoint_has_object(prefix, ("generator", "encoder", "fuser")):
            fuser.initialize_as_average()
            logging.info("the fresh fuser starts as an average of the segment embeddings "
                         "(--fuser_init=average)")
        trainer.copy_generator_to_ema()
    os.makedirs(model_dir, exist_ok=True)
    if is_chief:
        files.write_text(os.path.join(model_dir, runs.FLAGS_FILE), config.to_flagfile())
        for name, text in (extra_files or {}).items():
            files.write_text(os.path.join(model_dir, name), text)
    step = int(step_var.numpy())
    last_saved = latest

    best_writers = {}
    if val_table is not None:
        for name in BEST_METRICS:
            best_ckpt = tf.train.Checkpoint(step=step_var, **trainer.model_objects())
            best_writers[name] = _CheckpointWriter(best_ckpt, os.path.join(model_dir,
                                                                           f"best_{name}"),
                                                   1, is_chief, task_id)

    if is_chief:
        train_writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
        val_writer = tf.summary.create_file_writer(os.path.join(model_dir, "val"))
        _write_hparams(config, val_writer)
    else:
        train_writer = val_writer = tf.summary.create_noop_writer()

    result = TrainResult(step=step, stopped_by_signal=False, last_values={},
                         last_validation={}, checkpoint=latest, trainer=trainer)
    if step >= config.train_steps:
        logging.info("already trained to step %d (train_steps=%d): nothing to do", step,
                     config.train_steps)
        return result

    validator = Validator(trainer, val_table, config) if val_table is not None else None

    def validate(at_step):
        metrics, grids = validator.evaluate()
        with val_writer.as_default(step=at_step):
            for name, value in metrics.items():
                tf.summary.scalar(summaries.validation_tag(name), value)
            for res, grid in grids.items():
                tf.summary.image(summaries.faces_image_tag(res), summaries.labelled_face_grid(
                    grid, step=at_step, resolution=res, split=config.val_split),
                    max_outputs=1, description=summaries.FACE_GRID_DESCRIPTION)
        val_writer.flush()
        values = dict(metrics)
        values["l1"] = metrics["pixel_l1"] if config.best_l1_metric == "pixel" else \
            metrics.get("l1_distance")
        for name, (higher, key) in BEST_METRICS.items():
            value = values.get(key or "l1")
            if value is None:
                continue
            current = float(best_vars[name].numpy())
            if (value > current) if higher else (value < current):
                best_vars[name].assign(value)
                path = best_writers[name].save(at_step)
                if is_chief:
                    files.write_text(os.path.join(model_dir, f"best_{name}", "best.json"),
                                json.dumps({"step": at_step, "metric": name, "value": value,
                                            "validation": metrics}, indent=2) + "\n")
                logging.info("new best %s = %.5f at step %d -> %s", name, value, at_step, path)
        logging.info("validation at step %d: %s", at_step,
                     ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
        return metrics

    def dataset_fn():
        common = dict(batch_size=config.batch_size, image_size=config.model.image_size,
                      seed=config.seed, start_step=step, num_steps=config.train_steps - step)
        if trainer.uses_fuser_batches:
            return pipelines.fuser_dataset(train_table, max_windows=config.fuser_windows,
                                           **common)
        return pipelines.stage1_dataset(train_table, min_frames=config.crop_frames_min,
                                        max_frames=config.crop_frames_max, **common)

    iterator = iter(trainer.distribute(dataset_fn))
    stop = _StopRequest()
    if handle_signals:
        stop.install()
    progress = Progress(config.train_steps, "train", unit="steps",
                        interval=config.log_every_seconds, start=step, write=logging.info)
    interval_start, interval_steps = time.monotonic(), 0
    try:
        while step < config.train_steps:
            if stop.signum is not None:
                if not trainer.sync_stop:
                    break
                trainer.stop_flag.assign(1.0)  # the other workers learn it in this step
            # --decoder_pretrain_steps, then --voice_pretrain_steps: the first steps train
            # the decoder alone, then the voice encoder alone.
            phase = ("decoder" if step < config.decoder_pretrain_steps else
                     "voice" if step < config.pretrain_steps else "generator")
            run_step = {"decoder": trainer.decoder_pretrain_step,
                        "voice": trainer.voice_pretrain_step,
                        "generator": trainer.train_step}[phase]
            values = {name: float(value) for name, value in run_step(iterator).items()}
            stop_everywhere = values.pop("control/stop", 0.0) > 0
            step += 1
            interval_steps += 1
            step_var.assign(step)
            bad = _first_non_finite(values)
            if bad is not None:
                # Under mixed_float16 a non-finite *gradient* only skips the step (loss
                # scaling); a non-finite loss is a forward-pass overflow and stops here too.
                raise NonFiniteLossError(bad, step, values[bad], last_saved)
            result.last_values = values
            if step % config.summary_every_steps == 0 or step == config.train_steps or \
                    interval_steps == 1 and step == result.step + 1:
                elapsed = time.monotonic() - interval_start
                step_time = elapsed / max(interval_steps, 1)
                with train_writer.as_default(step=step):
                    for name, value in values.items():
                        tf.summary.scalar(name, value)
                    for name, value in trainer.learning_rates().items():
                        tf.summary.scalar(name, value)
                    tf.summary.scalar("perf/step_time_s", step_time)
                    tf.summary.scalar("perf/examples_per_s",
                                      config.batch_size / step_time if step_time > 0 else 0.0)
                interval_start, interval_steps = time.monotonic(), 0
            if phase == "decoder":
                progress.update(1, extra="decoder pre-training, loss "
                                f"{values['decoder_pretrain/total_loss']:.4f}")
                if step == config.decoder_pretrain_steps:
                    logging.info("decoder pre-training done at step %d", step)
            elif phase == "voice":
                progress.update(1, extra="voice pre-training, cosine distance "
                                f"{values['voice_pretrain/cosine_distance']:.4f}")
            else:
                progress.update(1, extra=f"G {values['loss/total_loss']:.4f}" + (
                    f" D {values['d_loss/total_loss']:.4f}" if "d_loss/total_loss" in values
                    else ""))
            if phase != "generator" and step == config.pretrain_steps:
                # The moving average (if any) starts from the pre-trained generator.
                trainer.copy_generator_to_ema()
                logging.info("pre-training done at step %d; the generator's losses take over",
                             step)
            if step_callback is not None:
                step_callback(step, values)
            if step % config.checkpoint_every_steps == 0:
                last_saved = manager.save(step)
            if stop_everywhere:
                if stop.signum is None:
                    stop.signum = signal.SIGTERM
                    logging.warning("another worker is stopping: saving and stopping too")
                break
            # No validation while a part of the generator trains alone: the voice does not
            # reach the faces yet.
            if validator is not None and step % config.eval_every_steps == 0 and \
                    step > config.pretrain_steps:
                result.last_validation = validate(step)
        if last_saved is None or int(last_saved.rsplit("-", 1)[-1]) != step:
            last_saved = manager.save(step)
        if validator is not None and stop.signum is None and \
                step % config.eval_every_steps != 0:
            result.last_validation = validate(step)
    finally:
        stop.uninstall()
        train_writer.flush()
        val_writer.flush()
    if stop.signum is not None:
        logging.warning("stopped by %s at step %d; checkpoint %s",
                        signal.Signals(stop.signum).name, step, last_saved)
    else:
        logging.info("trained to step %d; checkpoint %s", step, last_saved)
    if not is_chief:
        shutil.rmtree(os.path.join(model_dir, f".worker_{task_id}_scratch"), ignore_errors=True)
    result.step = step
    result.stopped_by_signal = stop.signum is not None
    result.checkpoint = last_saved
    return result
