"""Writes a TF-Serving model version from a training checkpoint.

Layout written by :func:`export_checkpoint` (``export_dir`` = ``<base>/<name>``)::

    <base>/<name>/<version>/
        saved_model.pb, fingerprint.pb, variables/     the SavedModel (signatures below)
        assets.extra/tf_serving_warmup_requests        PredictionLog records TF-Serving replays
                                                       at load time (one per signature)
        assets.extra/sf2f_export.json                  what was exported and how the graph
                                                       treats audio (energy gate, windows, ...)

The version directory appears atomically: everything is written to a hidden temporary
directory next to it (``.tmp-export-*``, ignored by TF-Serving, which only loads numeric
directories), checked, then renamed. An existing version is never overwritten; without an
explicit version the next free number (highest + 1) is used.

The SavedModel holds the generator's variables as plain tracked ``tf.Variable``s (no Keras
object is saved), so that the C++ loader restores them: it runs in
TF-Serving and in ``saved_model_cli run``, not only after ``tf.saved_model.load`` in Python.
Signatures (``tensorflow/serving/predict``): ``serving_default`` (WAV bytes -> PNG + image),
``predict_waveform`` and ``predict_mel`` (see keras_sf2f/serving/inference.py).

Model configuration: ``flags.cfg`` in the checkpoint directory (written by training and by the
reference importer; for a ``best_*`` sub-directory, the parent's), else what the caller passes (the entry point's ``--flagfile``).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import shutil
import tempfile
from typing import Mapping, NamedTuple

import numpy as np

from keras_sf2f.models import builder
from keras_sf2f.serving.inference import SIGNATURES, FaceFromVoice, ServingConfig

__all__ = ["ExportError", "Exported", "find_flags_file", "model_config_from_flagfile",
           "find_checkpoint", "restore_generator", "existing_versions", "next_version", "export_generator",
           "export_checkpoint", "warmup_requests", "write_warmup_file", "read_warmup_file",
           "warmup_wav", "speech_like"]

FLAGS_FILE = "flags.cfg"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "sf2f_export.json"
_TMP_PREFIX = ".tmp-export-"


class ExportError(ValueError):
    """A problem with the export's inputs (message meant for the user)."""


# --------------------------------------------------------------------------------------------
# Configuration and checkpoint
# --------------------------------------------------------------------------------------------

def find_flags_file(checkpoint_dir: str) -> str | None:
    """``flags.cfg`` of a checkpoint directory or of its parent (for the
    training loop's ``best_<metric>/`` sub-directories); None when there is none."""
    directory = checkpoint_dir if os.path.isdir(checkpoint_dir) else os.path.dirname(
        checkpoint_dir)
    for candidate in (directory, os.path.dirname(os.path.abspath(directory))):
        path = os.path.join(candidate, FLAGS_FILE)
        if os.path.isfile(path):
            return path
    return None


_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


def _read_flag_lines(path: str, seen: set) -> list[str]:
    real = os.path.realpath(path)
    if real in seen:
        raise ExportError(f"{path}: flagfile includes itself")
    seen.add(real)
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ExportError(f"cannot read flagfile {path}: {e.strerror}") from None
    result = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line.startswith("--flagfile="):
            nested = line.split("=", 1)[1]
            if not os.path.isabs(nested) and not os.path.exists(nested):
                nested = os.path.join(os.path.dirname(path), nested)
            result.extend(_read_flag_lines(nested, seen))
        else:
            result.append(line)
    return result


def model_config_from_flagfile(path: str) -> builder.ModelConfig:
    """The model configuration recorded in an absl flagfile (``--name=value`` lines,
    ``--noname`` / ``--name`` for booleans, nested ``--flagfile=``; later lines win).
    Flags other than the model's are ignored."""
    fields = set(builder.ModelConfig.field_names())
    values = {}
    for line in _read_flag_lines(path, set()):
        if not line.startswith("-"):
            continue
        text = line.lstrip("-")
        name, has_value, value = text.partition("=")
        if not has_value:
            if name in fields:
                values[name] = "true"
            elif name.startswith("no") and name[2:] in fields:
                values[name[2:]] = "false"
            continue
        if name in fields:
            values[name] = value
    defaults = builder.ModelConfig()
    converted = {}
    for name, value in values.items():
        if isinstance(getattr(defaults, name), bool):
            low = value.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ExportError(f"{path}: --{name}={value} is not a boolean")
            converted[name] = low in _TRUE
        else:
            converted[name] = value
    try:
        return builder.ModelConfig.from_mapping(converted).validate()
    except ValueError as e:
        raise ExportError(f"{path}: {e}") from None


def find_checkpoint(checkpoint_dir: str) -> str:
    """The latest checkpoint prefix of a directory, or ``checkpoint_dir`` itself when it is a
    prefix (``.../ckpt-1200``). Raises ExportError when there is none."""
    import tensorflow as tf  # noqa: PLC0415
    if os.path.isdir(checkpoint_dir):
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest:
            return latest
        raise ExportError(
            f"no checkpoint in {checkpoint_dir}: expected ckpt-<step>.index/.data files and a "
            f"'checkpoint' state file, as written by trainers/train.py (its --model_dir, or a "
            f"best_<metric>/ sub-directory) or export/import_reference_checkpoint.py")
    if os.path.isfile(checkpoint_dir + ".index"):
        return checkpoint_dir
    raise ExportError(f"--checkpoint_dir={checkpoint_dir} is neither a directory nor a "
                      f"checkpoint prefix (no {checkpoint_dir}.index)")


def restore_generator(config: builder.ModelConfig, checkpoint_prefix: str):
    """Builds the generator of ``config`` and restores it from ``checkpoint_prefix`` (only the
    generator: discriminators and optimizers in the checkpoint are ignored). Every generator
    variable must be in the checkpoint."""
    import tensorflow as tf  # noqa: PLC0415
    config.validate()
    generator = builder.build_generator(config)
    try:
        keys = {name for name, _ in tf.train.list_variables(checkpoint_prefix)}
    except (tf.errors.OpError, ValueError) as e:
        raise ExportError(f"cannot read checkpoint {checkpoint_prefix}: {e}") from None
    if not any(key.startswith("generator/") for key in keys):
        top = sorted({key.split("/")[0] for key in keys})
        raise ExportError(f"{checkpoint_prefix} holds no generator (objects: {top})")
    # A run trained with --generator_ema_decay: its moving average is the generator that
    # draws the pictures (validation and evaluation use it too).
    name = builder.EMA_GENERATOR_NAME if any(
        key.startswith(builder.EMA_GENERATOR_NAME + "/") for key in keys) else "generator"
    try:
        status = tf.train.Checkpoint(**{name: generator}).restore(checkpoint_prefix)
    except (ValueError, tf.errors.OpError) as e:
        raise ExportError(f"{checkpoint_prefix} does not match the model configuration: "
                          f"{str(e).splitlines()[0][:400]}") from None
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        detail = str(e).splitlines()[0][:400]
        raise ExportError(
            f"{checkpoint_prefix} does not match the model configuration (encoder "
            f"{config.encoder} {list(config.encoder_channels)}, fuser {config.fuser}, decoder "
            f"{config.decoder}, embedding_dim {config.embedding_dim}): some generator "
            f"variables are not in the checkpoint ({detail})") from None
    except (ValueError, tf.errors.OpError) as e:
        raise ExportError(f"{checkpoint_prefix} does not match the model configuration: "
                          f"{str(e).splitlines()[0][:400]}") from None
    return generator


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
    import soundfile as sf  # noqa: PLC0415
    buffer = io.BytesIO()
    samples = np.clip(np.rint(speech_like(seconds, sample_rate)), -32768, 32767)
    sf.write(buffer, samples.astype(np.int16), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def warmup_requests(model_name: str, num_mel_bins: int = 40) -> list:
    """One PredictionLog per signature, with inputs that pass every check."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # noqa

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
    import tensorflow as tf  # noqa: PLC0415
    directory = os.path.join(version_dir, "assets.extra")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(version_dir: str) -> list:
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: PLC0415
    path = os.path.join(version_dir, "assets.extra", WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path):
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


def _replay_warmup(version_dir: str):
    """Loads the SavedModel and runs every warm-up request, as TF-Serving does when it loads
    the version; returns (the loaded SavedModel, {signature: {output: shape}}). Raises
    ExportError on any failure."""
    import tensorflow as tf  # noqa: PLC0415
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
    import tensorflow as tf  # noqa: PLC0415
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
    import tensorflow as tf  # noqa: PLC0415
    signatures = {name: module.function(name).get_concrete_function() for name in SIGNATURES}
    root = tf.Module()
    root.model_variables = [_raw_variable(v) for v in module.generator.variables]
    tf.saved_model.save(root, path, signatures=signatures)


def export_generator(generator, export_dir: str, version: int | None = None,
                     serving_config: ServingConfig | None = None,
                     model_config: builder.ModelConfig | None = None,
                     extra_metadata: Mapping | None = None, verify: bool = True) -> Exported:
    """Exports a restored generator as ``<export_dir>/<version>/``.

    ``verify`` reloads the SavedModel and replays the warm-up requests before the version
    becomes visible (a model TF-Serving would fail to warm up is never published).
    """
    module = FaceFromVoice(generator, serving_config)
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
        import keras  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
        metadata["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
        with open(os.path.join(tmp, "assets.extra", METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
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


def export_checkpoint(checkpoint_dir: str, export_dir: str, version: int | None = None,
                      serving_config: ServingConfig | None = None,
                      fallback_flagfile: str | None = None,
                      fallback_config: builder.ModelConfig | None = None,
                      verify: bool = True) -> Exported:
    """The whole export command: configuration, restore, export.

    The model configuration comes from the checkpoint directory's flags file; without one,
    from ``fallback_flagfile`` or ``fallback_config`` (the entry point's ``--flagfile``).
    """
    prefix = find_checkpoint(checkpoint_dir)
    flags_path = find_flags_file(checkpoint_dir)
    if flags_path is not None:
        config = model_config_from_flagfile(flags_path)
        source = flags_path
    elif fallback_flagfile:
        config = model_config_from_flagfile(fallback_flagfile)
        source = fallback_flagfile
    elif fallback_config is not None:
        config = fallback_config.validate()
        source = "command-line model flags"
    else:
        raise ExportError(
            f"{checkpoint_dir} has no flags.cfg describing the model; pass the flagfile it "
            f"was trained with, e.g. --flagfile=configs/sf2f_64.cfg")
    generator = restore_generator(config, prefix)
    extra = {"checkpoint": os.path.abspath(prefix), "model_config_source": os.path.abspath(
        source) if os.path.exists(source) else source}
    return export_generator(generator, export_dir, version, serving_config, config, extra,
                            verify=verify)


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------

def op_types(saved_model_dir: str) -> set:
    """Every op type used by the SavedModel: the meta graph's nodes and every function in its
    function library (where the signatures' bodies live)."""
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415
    proto = loader_impl.parse_saved_model(saved_model_dir)
    types = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        types.update(node.op for node in graph.node)
        for function in graph.library.function:
            types.update(node.op for node in function.node_def)
    return types


def unregistered_ops(saved_model_dir: str) -> list:
    """Op types of the SavedModel that this process's TensorFlow does not register (names of
    the library's functions, called as ops, are not op types and are skipped)."""
    from tensorflow.python.framework import op_def_registry  # noqa: PLC0415
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415
    proto = loader_impl.parse_saved_model(saved_model_dir)
    functions = {f.signature.name for mg in proto.meta_graphs
                 for f in mg.graph_def.library.function}
    return sorted(op for op in op_types(saved_model_dir)
                  if op not in functions and op_def_registry.get(op) is None)
