"""``train(config)``: data, checkpoints, resumption, signals, summaries and validation around
the GAN step of ``keras_sf2f.training.trainer``.

Model directory layout (``config.model_dir``)::

    ckpt-<step>.index/.data-*, checkpoint   tf.train.CheckpointManager: generator, every
                                            discriminator (builder.checkpoint_objects names),
                                            the optimizers, step, best metric values
    best_l1/ best_cosine/ best_recall_at_10/  each a CheckpointManager (max_to_keep=1) of the
                                            models + step at the best validation value so far,
                                            and best.json (step, value, every metric)
    train/ val/                             TensorBoard event files (scalars, images, HParams)
    train_config.json                       the TrainConfig; the entry point adds flags.cfg
                                            (a flagfile) and flags.json

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
import shutil
import signal
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging

from keras_sf2f.data import pipelines
from keras_sf2f.data.table import DataError, load_split
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


# -- face network ---------------------------------------------------------------------------

def load_face_network(path: str):
    """The perceptual loss's face network from ``path`` (anything
    ``face_identity.load_face_network`` reads: the project's face-identity network or a
    ``.keras`` FaceNet such as imported VGGFace2 weights), without its description."""
    from keras_sf2f.training.face_identity import load_face_network as load  # noqa: PLC0415
    model, _ = load(path)
    return model


# -- checkpoints ----------------------------------------------------------------------------

def _checkpoint_prefix(path: str) -> str:
    if tf.io.gfile.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise ValueError(f"no checkpoint in directory {path}")
        return prefix
    if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"{path} is neither a checkpoint directory nor a checkpoint prefix")
    return path


def _checkpoint_has_object(prefix: str, path: tuple) -> bool:
    """Whether the checkpoint's object graph has the object at ``path`` (child names from the
    root, e.g. ("generator", "encoder", "fuser"))."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2  # noqa: PLC0415
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(
        "_CHECKPOINTABLE_OBJECT_GRAPH"))
    node = 0
    for name in path:
        children = {c.local_name: c.node_id for c in graph.nodes[node].children}
        if name not in children:
            return False
        node = children[name]
    return True


def _generator_without_fuser(generator):
    """A stand-in for the generator in the checkpoint object graph, without its fuser."""
    encoder_children = {name: child for name, child in
                        generator.encoder._trackable_children().items() if name != "fuser"}
    children = dict(generator._trackable_children())
    children["encoder"] = tf.train.Checkpoint(**encoder_children)
    return tf.train.Checkpoint(**children)


def restore_models(path: str, model_objects: dict) -> str:
    """Restores the models (not optimizers) from a checkpoint directory or prefix written by
    training or by the reference importer -- e.g. a stage-1 checkpoint into a stage-2 model,
    whose fresh fuser is absent from it. Every variable of every model found in the checkpoint
    must be restored (the fuser excepted when the checkpoint has none); models missing from it
    keep their initialisation, with a warning. Returns the checkpoint prefix."""
    prefix = _checkpoint_prefix(path)
    restorable = {name: obj for name, obj in model_objects.items()
                  if _checkpoint_has_object(prefix, (name,))}
    if "generator" not in restorable:
        raise ValueError(f"{prefix} has no generator: not a keras-sf2f training or import "
                         f"checkpoint")
    for name in sorted(set(model_objects) - set(restorable)):
        logging.warning("init checkpoint %s has no %s: it keeps its fresh initialisation",
                        prefix, name)
    generator = restorable["generator"]
    if generator.fuser is not None and not _checkpoint_has_object(
            prefix, ("generator", "encoder", "fuser")):
        logging.info("init checkpoint %s has no fuser (stage 1): the fuser starts fresh", prefix)
        restorable["generator"] = _generator_without_fuser(generator)
    status = tf.train.Checkpoint(**restorable).restore(prefix)
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"{prefix} does not match the model flags: {e}") from None
    return prefix


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

def _metrics_module():
    from keras_sf2f.evaluation import metrics  # noqa: PLC0415 - another developer's module
    return metrics


def face_grid(real, fake) -> np.ndarray:
    """[k,S,S,3] real and generated (generator space) -> one [1, 2S, kS, 3] picture in [0,1]:
    real faces on top, generated below."""
    rows = [np.concatenate(list(pipelines.imagenet_denormalize(tf.constant(x)).numpy()), axis=1)
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
            self.ground_truth = np.asarray(_metrics_module().ground_truth_embeddings(
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
            metrics = _metrics_module()
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
    try:
        from tensorboard.plugins.hparams import api as hp  # noqa: PLC0415
    except ImportError:  # pragma: no cover - tensorboard is pinned in requirements.txt
        logging.warning("tensorboard's HParams plugin is not installed: hyperparameters "
                        "are not written")
        return
    with writer.as_default():
        hp.hparams(_hparams(config), trial_id=os.path.basename(
            os.path.abspath(config.model_dir)))
    writer.flush()


# -- the loop -------------------------------------------------------------------------------

def _write_text(path: str, text: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
      extra_files: {file name: text} written into model_dir by the chief (e.g. flags.cfg).
      handle_signals: install the SIGTERM/SIGINT save-and-stop handler (main thread only).
    Returns a TrainResult. Raises NonFiniteLossError, DataError or ValueError.
    """
    config.validate()
    # MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = make_strategy(config.strategy)
    _, task_id, is_chief = worker_info(strategy)
    model_dir = config.model_dir
    os.makedirs(model_dir, exist_ok=True)
    if is_chief:
        _write_text(os.path.join(model_dir, "train_config.json"), config.to_json() + "\n")
        for name, text in (extra_files or {}).items():
            _write_text(os.path.join(model_dir, name), text)

    train_table = load_split(config.data_dir, "train")
    if config.model.identity_classifier_arch_64 or config.model.identity_classifier_arch_128:
        if config.model.num_train_identities != train_table.num_identities:
            raise DataError(
                f"the training split of {config.data_dir} has {train_table.num_identities} "
                f"identities but the identity classifiers are "
                f"{config.model.num_train_identities} wide: set "
                f"--num_train_identities={train_table.num_identities}")
    val_table = load_split(config.data_dir, config.val_split) if config.eval_every_steps else None

    import keras  # noqa: PLC0415
    keras.utils.set_random_seed(config.seed)
    if face_network is None and config.face_network:
        path = config.face_network
        face_network = lambda: load_face_network(path)  # noqa: E731
    trainer = GanTrainer(config, strategy, face_network=face_network)
    logging.info("replicas: %d, global batch %d, generator variables trained: %d",
                 trainer.num_replicas, trainer.global_batch_size,
                 len(trainer.generator_variables))

    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_vars = {name: tf.Variable(-math.inf if higher else math.inf, dtype=tf.float64,
                                   trainable=False, name=f"best_{name}")
                 for name, (higher, _) in BEST_METRICS.items()}
    checkpoint = tf.train.Checkpoint(step=step_var, **{f"best_{k}": v for k, v in
                                                       best_vars.items()},
                                     **trainer.checkpoint_objects())
    manager = _CheckpointWriter(checkpoint, model_dir, config.keep_checkpoints, is_chief,
                                task_id)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise ValueError(f"cannot resume from {latest}: it does not match the current "
                             f"flags (the run's were saved in {model_dir}/flags.cfg): "
                             f"{e}") from None
        logging.info("resuming from %s (step %d)", latest, int(step_var.numpy()))
    elif config.init_checkpoint:
        prefix = restore_models(config.init_checkpoint, trainer.model_objects())
        logging.info("initialised the models from %s (optimizers start fresh)", prefix)
        fuser = trainer.models.generator.fuser
        if config.fuser_init == "average" and fuser is not None and not \
                _checkpoint_has_object(prefix, ("generator", "encoder", "fuser")):
            fuser.initialize_as_average()
            logging.info("the fresh fuser starts as an average of the segment embeddings "
                         "(--fuser_init=average)")
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
        _write_hparams(config, train_writer)
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
                tf.summary.scalar(f"val/{name.replace('@', '_at_')}", value)
            for res, grid in grids.items():
                tf.summary.image(f"val/faces_{res}", grid, max_outputs=1)
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
                    _write_text(os.path.join(model_dir, f"best_{name}", "best.json"),
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
            values = {name: float(value)
                      for name, value in trainer.train_step(iterator).items()}
            stop_everywhere = values.pop("control/stop", 0.0) > 0
            step += 1
            interval_steps += 1
            step_var.assign(step)
            bad = _first_non_finite(values)
            if bad is not None:
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
            progress.update(1, extra=f"G {values['loss/total_loss']:.4f}" + (
                f" D {values['d_loss/total_loss']:.4f}" if "d_loss/total_loss" in values
                else ""))
            if step_callback is not None:
                step_callback(step, values)
            if step % config.checkpoint_every_steps == 0:
                last_saved = manager.save(step)
            if stop_everywhere:
                if stop.signum is None:
                    stop.signum = signal.SIGTERM
                    logging.warning("another worker is stopping: saving and stopping too")
                break
            if validator is not None and step % config.eval_every_steps == 0:
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
