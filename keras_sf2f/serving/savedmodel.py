"""Writes a TF-Serving model version from a training checkpoint.

Layout written by :func:`export_checkpoint` (``export_dir`` = ``<base>/<name>``)::

    <base>/<name>/<version>/
        saved_model.pb, fingerprint.pb, variables/     the SavedModel (signatures below)
        assets.extra/tf_serving_warmup_requests        PredictionLog records TF-Serving replays
                                                       at load time (one per signature)
        assets.extra/sf2f_export.json                  what was exported and how the graph
                                                       treats audio (energy gate, windows, ...)
        assets.extra/voice_typicality.json             the voice-typicality calibration (only
                                                       when the export had the prepared data)

The version directory appears atomically: everything is written to a hidden temporary
directory next to it (``.tmp-export-*``, ignored by TF-Serving, which only loads numeric
directories), checked, then renamed. An existing version is never overwritten; without an
explicit version the next free number (highest + 1) is used.

The SavedModel holds the generator's variables as plain tracked ``tf.Variable``s (no Keras
object is saved), so that the C++ loader restores them: it runs in
TF-Serving and in ``saved_model_cli run``, not only after ``tf.saved_model.load`` in Python.
Signatures (``tensorflow/serving/predict``): ``serving_default`` (WAV bytes -> PNG + image),
``predict_waveform`` and ``predict_mel`` (see keras_sf2f/serving/inference.py).

Model configuration and checkpoint: the run's own, as every tool reads them
(``keras_sf2f.runs.load_run``: ``flags.cfg`` of the checkpoint directory, or of its run for a
``best_*`` sub-directory, else its ``train_config.json``); only a checkpoint without either takes
what the caller passes (the entry point's ``--flagfile``).

Voice typicality (the ``voice_typicality`` output, see keras_sf2f/serving/inference.py): the
export embeds the prepared data's training and validation identities with the very serving
functions it exports (:func:`typicality_reference`) and stores the reference bank and the
calibration in the SavedModel. The data directory is ``data_dir`` (the export tool's
``--data_dir``), by default the one the run's ``flags.cfg`` names; when there is none, or it is
gone, the export goes ahead WITHOUT the output and says so in the log and in the metadata.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import re
import shutil
import tempfile
from typing import Mapping, NamedTuple

import keras
import numpy as np
import soundfile as sf
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import op_def_registry
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from keras_sf2f import runs
from keras_sf2f.audio.features import MEL_PAD_VALUE
from keras_sf2f.data.pipelines import WINDOW_FRAMES, identity_windows
from keras_sf2f.data.table import DataError, load_split
from keras_sf2f.models import builder
from keras_sf2f.runs import model_config_from_flagfile
from keras_sf2f.serving.inference import (DEFAULT_TYPICALITY_WARNING_BELOW, SIGNATURES,
                                          TYPICALITY_DEFINITION, TYPICALITY_OUTPUT,
                                          TYPICALITY_THRESHOLD_KEY, FaceFromVoice,
                                          ServingConfig, TypicalityReference)

__all__ = ["ExportError", "Exported", "existing_versions", "next_version", "export_generator",
           "export_run", "export_checkpoint", "typicality_reference", "voice_distances",
           "warmup_requests", "write_warmup_file", "read_warmup_file", "warmup_wav",
           "speech_like",
           # keras_sf2f.runs' reader, also reachable here for the benchmarks that use it
           "model_config_from_flagfile"]

WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "sf2f_export.json"
TYPICALITY_FILE = "voice_typicality.json"
# The bank vector of a training identity averages at most this many of its windows (in fused
# chunks of the serving window capacity): bounds the export's time on large corpora.
BANK_MAX_WINDOWS = 200
_TMP_PREFIX = ".tmp-export-"


class ExportError(ValueError):
    """A problem with the export's inputs (message meant for the user)."""


# --------------------------------------------------------------------------------------------
# Voice typicality: reference bank and calibration from the prepared data
# --------------------------------------------------------------------------------------------

def voice_distances(queries: np.ndarray, bank: np.ndarray,
                    exclude: np.ndarray | None = None) -> np.ndarray:
    """``d(e) = 1 - max_i cos(e, bank_i)`` for unit-norm ``queries`` ``[Q, D]`` and ``bank``
    ``[N, D]`` (float32, as the graph computes it). ``exclude[q]`` (>= 0) is a bank row left
    out of query ``q``'s search: leave-one-out for the bank's own identities."""
    similarity = np.asarray(queries, np.float32) @ np.asarray(bank, np.float32).T
    if exclude is not None:
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        similarity[rows, np.asarray(exclude)[rows]] = -np.inf
    return (np.float32(1.0) - similarity.max(axis=1)).astype(np.float32)


def _window_counts(table) -> np.ndarray:
    """Each identity's 125-frame windows as ``pipelines.identity_windows`` cuts them without
    a seed (``length // 125`` from frame 0 of each utterance)."""
    lengths = np.asarray(table.utt_length)
    first, count = np.asarray(table.id_utt_first), np.asarray(table.id_utt_count)
    return np.asarray([int((lengths[a:a + n] // WINDOW_FRAMES).sum())
                       for a, n in zip(first, count)], np.int64)


def _chunk_embeddings(module: FaceFromVoice, table, max_windows: int, batch: int = 16):
    """Every identity's first ``max_windows`` windows (``pipelines.identity_windows``, no
    seed: the evaluation's fuser protocol), in chunks of the serving window capacity, each
    chunk fused by ``module.embed`` exactly as serving fuses a request's windows.

    Returns ``(windows per identity [I], {identity: ([chunks, D] embeddings, [chunks] window
    counts)})``; identities without a whole window are absent. Chunk 0 of an identity is
    what serving embeds from its speech (the first ``max_windows`` of the serving config)."""
    cfg = module.config
    if cfg.window_frames != WINDOW_FRAMES:
        raise ExportError(f"voice typicality: the serving windows have {cfg.window_frames} "
                          f"frames, the prepared data's fuser windows {WINDOW_FRAMES}")
    capacity = cfg.window_capacity
    embed = tf.function(module.embed, autograph=False, input_signature=[
        tf.TensorSpec([None, capacity, cfg.window_frames, module.num_mel_bins], tf.float32),
        tf.TensorSpec([None, capacity], tf.bool)])
    counts = np.minimum(_window_counts(table), max_windows)
    chunks = []                    # (identity, windows [k, 125, mels]) with k <= capacity
    for identity in np.flatnonzero(counts > 0):
        segments, valid = identity_windows(table, tf.constant(identity, tf.int64),
                                           max_windows=int(counts[identity]))
        segments = segments.numpy()[valid.numpy()]
        for start in range(0, len(segments), capacity):
            chunks.append((int(identity), segments[start:start + capacity]))
    embedded = {}
    for start in range(0, len(chunks), batch):
        part = chunks[start:start + batch]
        windows = np.full([len(part), capacity, cfg.window_frames, module.num_mel_bins],
                          MEL_PAD_VALUE, np.float32)
        mask = np.zeros([len(part), capacity], bool)
        for row, (_, segments) in enumerate(part):
            windows[row, :len(segments)] = segments
            mask[row, :len(segments)] = True
        vectors = embed(tf.constant(windows), tf.constant(mask)).numpy()
        for row, (identity, segments) in enumerate(part):
            embedded.setdefault(identity, ([], []))
            embedded[identity][0].append(vectors[row])
            embedded[identity][1].append(len(segments))
    return counts, {i: (np.stack(v), np.asarray(n, np.float32)) for i, (v, n) in
                    embedded.items()}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(
        np.float32)


def typicality_reference(generator, data_dir: str,
                         serving_config: ServingConfig | None = None,
                         val_split: str = "val",
                         warning_below: float = DEFAULT_TYPICALITY_WARNING_BELOW,
                         bank_max_windows: int = BANK_MAX_WINDOWS) -> TypicalityReference:
    """The bank and the calibration of ``voice_typicality`` (inference.py) from the prepared
    data in ``data_dir``, embedded by the serving functions of ``generator`` and
    ``serving_config`` (so calibration and serving agree to the last op):

    * bank: per training identity, the fused embeddings of its windows (at most
      ``bank_max_windows``, in chunks of the serving capacity) averaged, weighted by their
      window counts, and re-normalised;
    * calibration: each training identity's serving embedding (its first ``max_windows``
      windows, fused) against the bank without its own vector (leave-one-out: measured like a
      voice the model never heard, so the calibration is not optimistic), and each identity of
      ``val_split`` against the whole bank.

    Raises ExportError when the data cannot be read or gives no calibration.
    """
    module = FaceFromVoice(generator, serving_config)
    capacity = module.config.window_capacity
    try:
        train = load_split(data_dir, "train", require_utterances=False, require_faces=False,
                           voice_quality=module.voice_quality_channels > 0)
    except (DataError, OSError, ValueError) as e:
        raise ExportError(f"voice typicality: cannot read the training split of {data_dir}: "
                          f"{e}") from None
    counts, chunks = _chunk_embeddings(module, train, max(bank_max_windows, capacity))
    bank_ids = sorted(chunks)
    if not bank_ids:
        raise ExportError(f"voice typicality: no training identity of {data_dir} has a whole "
                          f"125-frame window of speech")
    bank = _unit(np.stack([(chunks[i][0] * chunks[i][1][:, None]).sum(0) for i in bank_ids]))
    identities, distances = [], []
    if len(bank_ids) >= 2:
        train_queries = np.stack([chunks[i][0][0] for i in bank_ids])
        own = voice_distances(train_queries, bank, exclude=np.arange(len(bank_ids)))
        for row, i in enumerate(bank_ids):
            identities.append({"split": "train", "name": train.names[i],
                               "distance": float(own[row]),
                               "windows": int(min(counts[i], capacity))})
        distances.append(own)
    val_note = ""
    try:
        val = load_split(data_dir, val_split, require_utterances=False, require_faces=False,
                         voice_quality=module.voice_quality_channels > 0)
    except DataError as e:
        val = None
        val_note = str(e)
        logging.warning("voice typicality: calibrating without validation identities: %s", e)
    val_used = 0
    if val is not None:
        val_counts, val_chunks = _chunk_embeddings(module, val, capacity)
        val_ids = sorted(val_chunks)
        if val_ids:
            queries = np.stack([val_chunks[i][0][0] for i in val_ids])
            theirs = voice_distances(queries, bank)
            for row, i in enumerate(val_ids):
                identities.append({"split": val_split, "name": val.names[i],
                                   "distance": float(theirs[row]),
                                   "windows": int(val_counts[i])})
            distances.append(theirs)
            val_used = len(val_ids)
    if not distances:
        raise ExportError(f"voice typicality: {data_dir} gives no calibration identity (one "
                          f"training identity and no validation identity with speech)")
    calibration = np.sort(np.concatenate(distances))
    skipped = int((counts == 0).sum())
    info = {
        "data_dir": os.path.abspath(data_dir),
        "bank": {"split": "train", "identities": len(bank_ids),
                 "max_windows_per_identity": int(max(bank_max_windows, capacity)),
                 "identities_without_a_window": skipped},
        "calibration": {"train_leave_one_out": len(bank_ids) if len(bank_ids) >= 2 else 0,
                        val_split: val_used, "windows_per_identity": capacity},
        "file": f"assets.extra/{TYPICALITY_FILE}",
    }
    if val_note:
        info["calibration"]["validation_note"] = val_note
    return TypicalityReference(bank=bank, calibration=calibration, warning_below=warning_below,
                               info=info, bank_names=[train.names[i] for i in bank_ids],
                               calibration_identities=identities)


def _typicality_file(module: FaceFromVoice) -> dict:
    """assets.extra/voice_typicality.json: the calibration in full (the bank itself is in the
    SavedModel's variables)."""
    ref = module.typicality
    return {
        "output": TYPICALITY_OUTPUT,
        "definition": TYPICALITY_DEFINITION,
        TYPICALITY_THRESHOLD_KEY: ref.warning_below,
        "calibration_distances_sorted": [float(x) for x in ref.calibration],
        "calibration_identities": ref.calibration_identities,
        "bank_identities": ref.bank_names,
        **ref.info,
    }


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------

def existing_versions(export_dir: str) -> list[int]:
    """Numeric version directories under ``export_dir`` (sorted)."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(name) for name in os.listdir(export_dir)
                  if re.fullmatch(r"[0-9]+", name)
                  and os.path.isdir(os.path.join(export_dir, name)))


def next_version(export_dir: str) -> int:
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


# --------------------------------------------------------------------------------------------
# Warm-up requests
# --------------------------------------------------------------------------------------------

def speech_like(seconds: float, sample_rate: int = 16000, seed: int = 0,
                f0: float = 140.0) -> np.ndarray:
    """A deterministic voiced test signal on the int16 scale: a glottal-like harmonic series
    with vibrato and a syllable-rate loudness modulation that stays within 12 dB (so the
    energy gate keeps all of it)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / sample_rate
    x = np.zeros(n)
    for k in range(1, 40):
        if k * f0 * 1.05 >= sample_rate / 2:
            break
        # A crude vowel: harmonics near 700 Hz and 1200 Hz emphasised.
        gain = (1.0 / k) * (1 + 3 * np.exp(-((k * f0 - 700) / 250) ** 2)
                            + 2 * np.exp(-((k * f0 - 1200) / 300) ** 2))
        x += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    x *= 0.625 + 0.375 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 2 * np.pi))
    x += rng.normal(scale=0.002, size=n)
    return (x / np.max(np.abs(x)) * 12000.0).astype(np.float32)


def warmup_wav(seconds: float = 2.6, sample_rate: int = 16000) -> bytes:
    """A 16-bit PCM mono WAV of :func:`speech_like` (2.6 s: two 1.25 s windows)."""
    buffer = io.BytesIO()
    samples = np.clip(np.rint(speech_like(seconds, sample_rate)), -32768, 32767)
    sf.write(buffer, samples.astype(np.int16), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def warmup_requests(model_name: str, num_mel_bins: int = 40) -> list:
    """One PredictionLog per signature, with inputs that pass every check."""
    waveform = speech_like(2.6, 22050, seed=1)[None, :]
    log_mel = np.random.default_rng(2).normal(size=(1, 2, 125, num_mel_bins)).astype(np.float32)
    inputs = {
        "serving_default": {"audio": tf.make_tensor_proto([warmup_wav()], dtype=tf.string)},
        "predict_waveform": {"waveform": tf.make_tensor_proto(waveform, dtype=tf.float32),
                             "sample_rate": tf.make_tensor_proto(22050, dtype=tf.int32)},
        "predict_mel": {"log_mel": tf.make_tensor_proto(log_mel, dtype=tf.float32)},
    }
    logs = []
    for signature in SIGNATURES:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        for key, proto in inputs[signature].items():
            request.inputs[key].CopyFrom(proto)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_file(version_dir: str, logs: list) -> str:
    directory = os.path.join(version_dir, "assets.extra")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(version_dir: str) -> list:
    path = os.path.join(version_dir, "assets.extra", WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path):
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


def _replay_warmup(version_dir: str):
    """Loads the SavedModel and runs every warm-up request, as TF-Serving does when it loads
    the version; returns (the loaded SavedModel, {signature: {output: shape}}). Raises
    ExportError on any failure."""
    loaded = tf.saved_model.load(version_dir)
    missing = [name for name in SIGNATURES if name not in loaded.signatures]
    if missing:
        raise ExportError(f"export check: signatures {missing} missing from the SavedModel")
    shapes = {}
    for log in read_warmup_file(version_dir):
        request = log.predict_log.request
        inputs = {key: tf.constant(tf.make_ndarray(proto))
                  for key, proto in request.inputs.items()}
        try:
            outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        except tf.errors.OpError as e:
            raise ExportError(f"export check: warm-up request for "
                              f"{request.model_spec.signature_name} failed: {e.message}") from None
        for key, value in outputs.items():
            if value.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(value))):
                raise ExportError(f"export check: {request.model_spec.signature_name} output "
                                  f"{key} is not finite")
        typicality = outputs.get(TYPICALITY_OUTPUT)
        if typicality is not None and not bool(tf.reduce_all((typicality >= 0.0)
                                                             & (typicality <= 1.0))):
            raise ExportError(f"export check: {request.model_spec.signature_name} output "
                              f"{TYPICALITY_OUTPUT} is outside [0, 1]")
        shapes[request.model_spec.signature_name] = {k: list(v.shape)
                                                     for k, v in outputs.items()}
    return loaded, shapes


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

class Exported(NamedTuple):
    """What an export produced: the version directory, the serving functions it was traced
    from (usable in Python, already traced) and, when verified, the reloaded SavedModel."""
    path: str
    module: FaceFromVoice
    loaded: object = None


def _raw_variable(variable):
    """The ``tf.Variable`` behind a Keras 3 variable (TF backend)."""
    raw = getattr(variable, "value", variable)
    if not isinstance(raw, tf.Variable):
        raise ExportError(f"cannot export variable {getattr(variable, 'path', variable)}: not "
                          f"backed by a tf.Variable (is the Keras backend TensorFlow?)")
    return raw


def _write_savedmodel(module: FaceFromVoice, path: str) -> None:
    """The SavedModel: one concrete function per signature, traced once, and the generator's
    variables as plain tracked ``tf.Variable``s. The C++ loader restores
    them (TF-Serving, ``saved_model_cli run``); no Keras object is saved. (Going through
    ``keras.export.ExportArchive`` works too, but makes ``tf.saved_model.save`` trace every
    endpoint a second time: about twice the export time for the same graph.)"""
    signatures = {name: module.function(name).get_concrete_function() for name in SIGNATURES}
    root = tf.Module()
    root.model_variables = [_raw_variable(v) for v in module.generator.variables]
    # The typicality bank and calibration (none without them): restored like the weights.
    root.typicality_variables = list(module.typicality_variables)
    tf.saved_model.save(root, path, signatures=signatures)


def export_generator(generator, export_dir: str, version: int | None = None,
                     serving_config: ServingConfig | None = None,
                     model_config: builder.ModelConfig | None = None,
                     extra_metadata: Mapping | None = None, verify: bool = True,
                     typicality: TypicalityReference | None = None,
                     typicality_reason: str = "") -> Exported:
    """Exports a restored generator as ``<export_dir>/<version>/``.

    ``verify`` reloads the SavedModel and replays the warm-up requests before the version
    becomes visible (a model TF-Serving would fail to warm up is never published).
    ``typicality`` (:func:`typicality_reference`) adds the ``voice_typicality`` output; without
    it, ``typicality_reason`` is recorded in the metadata as the reason there is none.
    """
    module = FaceFromVoice(generator, serving_config, typicality, typicality_reason)
    export_dir = os.path.abspath(export_dir)
    model_name = os.path.basename(export_dir.rstrip(os.sep))
    if not model_name:
        raise ExportError("--export_dir must name a model directory, e.g. /models/sf2f")
    if version is not None:
        if version < 1:
            raise ExportError(f"--version must be >= 1 (TF-Serving versions are positive "
                              f"integers), got {version}")
        if os.path.exists(os.path.join(export_dir, str(version))):
            raise ExportError(f"{os.path.join(export_dir, str(version))} already exists; "
                              f"versions are never overwritten (omit --version to use the next "
                              f"free one, {next_version(export_dir)})")
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=export_dir)
    try:
        _write_savedmodel(module, tmp)
        write_warmup_file(tmp, warmup_requests(model_name, module.num_mel_bins))
        metadata = {
            "model_name": model_name,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "model_config": model_config.to_dict() if model_config is not None else None,
            **module.metadata(),
            **dict(extra_metadata or {}),
        }
        loaded = None
        if verify:
            loaded, metadata["verified_warmup_outputs"] = _replay_warmup(tmp)
        metadata["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
        with open(os.path.join(tmp, "assets.extra", METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        if module.has_typicality:
            with open(os.path.join(tmp, "assets.extra", TYPICALITY_FILE), "w") as f:
                json.dump(_typicality_file(module), f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o755)
        path = _publish(tmp, export_dir, version)
        return Exported(path, module, loaded)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: str, export_dir: str, version: int | None) -> str:
    """Renames ``tmp`` to the version directory; never replaces an existing version."""
    explicit = version is not None
    version = version if explicit else next_version(export_dir)
    for _ in range(1000):
        target = os.path.join(export_dir, str(version))
        if not os.path.exists(target):
            try:
                os.rename(tmp, target)   # atomic; fails if target appeared and is non-empty
                return target
            except OSError:
                if not os.path.exists(target):
                    raise
        if explicit:
            raise ExportError(f"{target} already exists; versions are never overwritten")
        version += 1
    raise ExportError(f"could not find a free version under {export_dir}")


def _typicality_data(data_dir: str | None, run_flags: Mapping[str, str],
                     flags_path: str | None):
    """``(data directory, val split, why there is none)`` for the typicality calibration:
    ``data_dir`` when given ("" switches it off), else the one the run's flags
    (``run_flags``, read from ``flags_path``) name. An explicit directory that does not exist
    is an error; a default one is merely absent."""
    val_split = run_flags.get("val_split") or "val"
    if data_dir == "":
        return None, val_split, "switched off (--data_dir given empty)"
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise ExportError(f"--data_dir={data_dir} is not a directory (the prepared data "
                              f"that calibrates voice_typicality; --data_dir= exports without "
                              f"it)")
        return data_dir, val_split, ""
    named = run_flags.get("data_dir")
    if not named:
        where = flags_path or "the checkpoint directory (no flags.cfg)"
        return None, val_split, (f"no prepared data: no --data_dir was given and {where} "
                                 f"names none")
    if not os.path.isfile(os.path.join(named, "splits.json")):
        return None, val_split, (f"no prepared data: {named} (the --data_dir of {flags_path}) "
                                 f"is not a prepared data directory any more (no splits.json); "
                                 f"pass --data_dir")
    return named, val_split, ""


def export_run(run: runs.Run, export_dir: str, version: int | None = None,
               serving_config: ServingConfig | None = None, verify: bool = True,
               data_dir: str | None = None,
               typicality_warning_below: float = DEFAULT_TYPICALITY_WARNING_BELOW) -> Exported:
    """The whole export of a loaded run (``keras_sf2f.runs.load_run``): restore, typicality
    calibration, export.

    ``data_dir``: the prepared data that calibrates ``voice_typicality`` (default: the
    ``--data_dir`` of the run's flags; "" switches it off). Without data the export has no
    typicality output, and a warning in the log and the metadata says why.
    """
    if not 0.0 <= typicality_warning_below <= 1.0:
        raise ExportError(f"--typicality_warning_below must be in [0, 1], got "
                          f"{typicality_warning_below}")
    generator = run.restore_generator()
    source = run.config_source
    extra = {"checkpoint": os.path.abspath(run.checkpoint), "model_config_source":
             os.path.abspath(source) if os.path.exists(source) else source}
    data, val_split, reason = _typicality_data(data_dir, run.flags, run.flags_file)
    typicality = None
    if data is not None:
        logging.info("voice typicality: embedding the training and %s identities of %s",
                     val_split, data)
        typicality = typicality_reference(generator, data, serving_config, val_split,
                                          typicality_warning_below)
        logging.info("voice typicality: bank of %d training identities, %d calibration "
                     "distances", typicality.bank.shape[0], typicality.calibration.size)
    else:
        logging.warning("exporting WITHOUT voice typicality (no %s output): %s",
                        TYPICALITY_OUTPUT, reason)
    return export_generator(generator, export_dir, version, serving_config, run.model_config,
                            extra, verify=verify, typicality=typicality,
                            typicality_reason=reason)


def export_checkpoint(checkpoint_dir: str, export_dir: str, version: int | None = None,
                      serving_config: ServingConfig | None = None,
                      fallback_flagfile: str | None = None,
                      fallback_config: builder.ModelConfig | None = None,
                      verify: bool = True, data_dir: str | None = None,
                      typicality_warning_below: float = DEFAULT_TYPICALITY_WARNING_BELOW
                      ) -> Exported:
    """:func:`export_run` of the run at ``checkpoint_dir`` (a directory or a checkpoint
    prefix). Its model configuration is its own; only a checkpoint without one takes
    ``fallback_flagfile`` (whose flags also name the typicality data) or ``fallback_config``.
    Problems with the run raise ``runs.RunError``."""
    if fallback_flagfile:
        run = runs.load_run(checkpoint_dir, fallback_source=fallback_flagfile,
                            fallback=lambda: model_config_from_flagfile(fallback_flagfile))
        if run.flags_file is None:
            run = dataclasses.replace(run, flags=runs.read_flagfile(fallback_flagfile),
                                      flags_file=fallback_flagfile)
    else:
        run = runs.load_run(checkpoint_dir, fallback=fallback_config,
                            fallback_source="command-line model flags")
    return export_run(run, export_dir, version, serving_config, verify, data_dir,
                      typicality_warning_below)


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------

def op_types(saved_model_dir: str) -> set:
    """Every op type used by the SavedModel: the meta graph's nodes and every function in its
    function library (where the signatures' bodies live)."""
    proto = loader_impl.parse_saved_model(saved_model_dir)
    types = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        types.update(node.op for node in graph.node)
        for function in graph.library.function:
            types.update(node.op for node in function.node_def)
    return types


def xla_marked(graph_def) -> list:
    """Names of the functions and nodes of ``graph_def`` (and its function library) that ask
    for XLA compilation (``_XlaMustCompile``, what ``tf.function(jit_compile=True)`` sets)."""
    marked = [node.name for node in graph_def.node if node.attr["_XlaMustCompile"].b]
    for function in graph_def.library.function:
        if function.attr["_XlaMustCompile"].b:
            marked.append(function.signature.name)
        marked.extend(f"{function.signature.name}/{node.name}" for node in function.node_def
                      if node.attr["_XlaMustCompile"].b)
    return marked


def xla_compiled_functions(saved_model_dir: str) -> list:
    """:func:`xla_marked` over every meta graph of the SavedModel. An export must have none:
    TF-Serving runs XLA:CPU only when started with ``--xla_cpu_compilation_enabled`` (off by
    default) and otherwise fails the requests that reach such a function."""
    proto = loader_impl.parse_saved_model(saved_model_dir)
    return [name for meta_graph in proto.meta_graphs for name in xla_marked(meta_graph.graph_def)]


def unregistered_ops(saved_model_dir: str) -> list:
    """Op types of the SavedModel that this process's TensorFlow does not register (names of
    the library's functions, called as ops, are not op types and are skipped)."""
    proto = loader_impl.parse_saved_model(saved_model_dir)
    functions = {f.signature.name for mg in proto.meta_graphs
                 for f in mg.graph_def.library.function}
    return sorted(op for op in op_types(saved_model_dir)
                  if op not in functions and op_def_registry.get(op) is None)
