"""Runs and checkpoints: how every tool finds a trained model's configuration and restores it.

A *run directory* is what trainers/train.py writes (its --model_dir) and what
export/import_reference_checkpoint.py writes: checkpoints (``ckpt-<step>``), ``best_<metric>/``
sub-directories of one checkpoint each, and ``flags.cfg``, the run's effective configuration as
a flagfile (training: its ``TrainConfig``, model included; the importer: its ``ModelConfig``).
Runs written before flags.cfg was the only file may instead have only ``train_config.json``
(the TrainConfig as JSON), which is still read. Every tool pointed at a run or a checkpoint
(trainers/evaluate.py, export/export_savedmodel.py, trainers/describe_model.py, the ablations)
loads it with :func:`load_run` (a command-line tool with :func:`load_run_for_tool`), and
trainers/train.py checks a run it resumes with :func:`resume_problem`:

* The model configuration is the run's own: ``flags.cfg`` of the checkpoint's directory or of
  the directory above it (a ``best_<metric>/`` sub-directory belongs to its run), else an older
  run's ``train_config.json`` there. Only a checkpoint without either takes its configuration
  from the caller (the tool's flags).
* Model flags given beside a run must agree with the run's own configuration: one that does
  not is a :class:`RunError` naming both values, never a second configuration.
* The checkpoint is the latest of a directory (a run, one of its ``best_<metric>/``
  sub-directories, an import) or the prefix given (``.../ckpt-1200``).
* Restoring checks both directions (:func:`restore_models`): every variable of the models
  restored is in the checkpoint, and every value the checkpoint holds for those models is
  used (a stage-2 checkpoint restored into a model without a fuser is an error, not a stage-1
  model). The partial restores are deliberate and named: a tool that needs the generator does
  not restore the checkpoint's other models and optimizers, and training's --init_checkpoint
  may start a fuser its (stage-1) checkpoint does not have.

Flagfiles are read with absl's rules (:func:`read_flagfile`), so a flagfile means here what it
means on a command line; the tools expand their flagfiles with the same reader
(:func:`flagfile_entries`, used by keras_sf2f/flags.py). An *overlay* flagfile (configs/demo_fuser.cfg: the fuser, on top of
configs/demo.cfg) does not describe a model on its own; :func:`overlay_problem` says so, and
what it overlays, instead of filling the rest with the defaults.

TensorFlow is imported inside the functions that read checkpoints (marked "lazy" below): the
flagfile half of this module is used before TensorFlow starts (trainers/train.py's checks,
``--help``, the ablation scheduler until it evaluates).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Mapping, Sequence

from absl import logging

from keras_sf2f.config import options
from keras_sf2f.models import builder

__all__ = [
    "FLAGS_FILE", "TRAIN_CONFIG_FILE", "ARCHITECTURE_FLAGS", "RunError", "Run",
    "flagfile_entries", "flagfile_lines", "read_flagfile", "parse_bool",
    "model_config_from_flagfile", "model_config_from_values", "flagfiles_in", "overlay_problem",
    "command_line_model_config", "find_flags_file", "model_config_for_checkpoint",
    "model_differences", "find_checkpoint", "checkpoint_step", "checkpoint_has_object",
    "unused_model_values", "restore_models", "restore_generator", "load_run",
    "load_run_for_tool", "resume_problem", "one_line",
]

FLAGS_FILE = "flags.cfg"
#: Older runs' configuration (the TrainConfig as JSON), read when a run has no flags.cfg.
TRAIN_CONFIG_FILE = "train_config.json"
#: The model flags every whole configuration in configs/ sets. A flagfile that sets model flags
#: but not all of these is an overlay on another configuration.
ARCHITECTURE_FLAGS = ("encoder", "encoder_channels", "embedding_dim", "decoder", "image_size")
#: What the model flags not given are: ``builder.ModelConfig``'s defaults.
DEFAULT_MODEL = "the defaults, the full-size SF2F 64 of the reference"
REFERENCE_IMPORT_FILE = "reference_import.json"


class RunError(ValueError):
    """A run, checkpoint or flagfile that cannot be used as asked (the message names the
    problem and the fix)."""


# --------------------------------------------------------------------------------------------
# Flagfiles
# --------------------------------------------------------------------------------------------

def _is_comment(line: str) -> bool:
    return line.startswith(("#", "//"))


def _flagfile_argument(line: str) -> str | None:
    """The file of a ``--flagfile=`` / ``-flagfile=`` line, None for other lines."""
    for prefix in ("--flagfile=", "-flagfile="):
        if line.startswith(prefix):
            return os.path.expanduser(line[len(prefix):].strip())
    return None


def flagfile_entries(path: str, _including: tuple = ()) -> list[tuple[str, int, str]]:
    """``[(file, line number, argument)]`` that an absl flagfile puts on the command line,
    nested flagfiles expanded in place (absl's reading: a line starting with ``#`` or ``//`` is
    a comment, blank lines are skipped, every other line is one argument, stripped).

    A nested ``--flagfile=`` path is read as absl reads it, from the working directory;
    one that does not exist there is read relative to the including file. A flagfile that
    includes itself is an error (absl warns and skips it)."""
    real = os.path.realpath(path)
    if real in _including:
        raise RunError(f"{path}: flagfile includes itself")
    try:
        with open(path) as f:
            raw = f.read().splitlines()
    except OSError as e:
        raise RunError(f"cannot read flagfile {path}: {e.strerror}") from None
    entries = []
    for number, line in enumerate(raw, 1):
        if not line.strip() or _is_comment(line):
            continue
        line = line.strip()
        nested = _flagfile_argument(line)
        if nested is None:
            entries.append((path, number, line))
            continue
        if nested and not os.path.exists(nested) and not os.path.isabs(nested):
            beside = os.path.join(os.path.dirname(path), nested)
            nested = beside if os.path.exists(beside) else nested
        if nested:  # absl ignores an empty --flagfile=
            entries.extend(flagfile_entries(nested, _including + (real,)))
    return entries


def flagfile_lines(path: str) -> list[str]:
    """The arguments of :func:`flagfile_entries`, without where they come from."""
    return [line for _, _, line in flagfile_entries(path)]


def read_flagfile(path: str) -> dict[str, str]:
    """``{flag name: value as text}`` of an absl flagfile; later lines win.

    ``--name=value`` (or ``-name=value``) gives ``value``; the boolean forms without a value
    give ``"true"`` for ``--name`` and ``"false"`` for ``--noname``, which is absl's reading
    for a boolean flag ``name`` (no keras-sf2f flag's own name starts with "no", so there is
    no other). A boolean given a value keeps its text (``--name=0``): :func:`parse_bool` reads
    it. A line that is not a flag is an error, as absl would pass it on as an argument that
    every tool refuses.
    """
    values = {}
    for line in flagfile_lines(path):
        if not line.startswith("-") or line in ("-", "--"):
            raise RunError(f"{path}: {line!r} is not a flag (--name=value, --name or "
                           f"--noname)")
        text = line[2:] if line.startswith("--") else line[1:]
        name, has_value, value = text.partition("=")
        if has_value:
            values[name] = value
        elif name.startswith("no") and len(name) > 2:
            values[name[2:]] = "false"
        else:
            values[name] = "true"
    return values


def parse_bool(text: str, what: str) -> bool:
    """A boolean flag's value as absl parses it (``true``/``t``/``1``, ``false``/``f``/``0``,
    any case)."""
    low = text.strip().lower()
    if low in ("true", "t", "1"):
        return True
    if low in ("false", "f", "0"):
        return False
    raise RunError(f"{what}={text} is not a boolean (absl accepts true, t, 1, false, f, 0)")


def model_config_from_values(values: Mapping[str, str], source: str) -> builder.ModelConfig:
    """The validated model configuration of flag values as text (:func:`read_flagfile`);
    flags other than the model's are ignored, model flags not set keep their defaults."""
    defaults = builder.ModelConfig()
    fields = {}
    for name in builder.ModelConfig.field_names():
        if name not in values:
            continue
        text = values[name]
        fields[name] = (parse_bool(text, f"{source}: --{name}")
                        if isinstance(getattr(defaults, name), bool) else text)
    try:
        return builder.ModelConfig.from_mapping(fields).validate()
    except ValueError as e:
        raise RunError(f"{source}: {e}") from None


def model_config_from_flagfile(path: str) -> builder.ModelConfig:
    """The model configuration an absl flagfile describes (model flags it does not set keep
    their defaults; see :func:`overlay_problem` for a flagfile that is not meant alone)."""
    return model_config_from_values(read_flagfile(path), path)


def flagfiles_in(argv: Sequence[str]) -> list[str]:
    """The flagfiles named on a command line (``--flagfile=F``, ``--flagfile F``, one dash
    too), in order; the files they nest are part of them."""
    found = []
    args = list(argv)
    for i, arg in enumerate(args):
        named = _flagfile_argument(arg)
        if named is None and arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
            named = os.path.expanduser(args[i + 1])
        if named:
            found.append(named)
    return found


def _model_flags_set(path: str) -> set:
    return set(read_flagfile(path)) & set(builder.ModelConfig.field_names())


def _configs_named_in_comments(path: str) -> list[str]:
    """Other flagfiles a flagfile's comments name ("use after configs/demo.cfg")."""
    with open(path) as f:
        comments = " ".join(line for line in f.read().splitlines() if _is_comment(line))
    own = os.path.basename(path)
    named = []
    for name in re.findall(r"[\w./-]+\.cfg\b", comments):
        if os.path.basename(name) != own and name not in named:
            named.append(name)
    return named


def overlay_problem(flagfiles: Sequence[str], model_flags_set: Sequence[str]) -> str | None:
    """Why the model of a command line is not what its flagfiles mean, or None.

    An overlay flagfile sets model flags but not every one of :data:`ARCHITECTURE_FLAGS`
    (configs/demo_fuser.cfg sets only --fuser). Given without the configuration it overlays
    (nothing in ``model_flags_set``, the model flags the command line set in any way, sets
    the architecture), the model would be the defaults plus the overlay: the message says so
    and names what the overlay's comments say it goes on top of.
    """
    missing = [name for name in ARCHITECTURE_FLAGS if name not in set(model_flags_set)]
    if not missing:
        return None
    for path in flagfiles:
        sets = _model_flags_set(path)
        if not sets or set(ARCHITECTURE_FLAGS) <= sets:
            continue
        bases = _configs_named_in_comments(path)
        fix = (f"its comments name {', '.join(bases)}: give that first, e.g. "
               f"--flagfile={bases[0]} --flagfile={path}" if bases else
               f"give the configuration it modifies first: --flagfile=<base>.cfg "
               f"--flagfile={path}")
        return (f"{path} is an overlay on another configuration, not a model of its own: of "
                f"the model flags it sets only {', '.join('--' + n for n in sorted(sets))}, "
                f"and with nothing else setting {', '.join('--' + n for n in missing)} the "
                f"model would be {DEFAULT_MODEL}; {fix}")
    return None


def command_line_model_config(given: Mapping, flagfiles: Sequence[str]) -> builder.ModelConfig:
    """The model configuration of a tool's command line: ``given``, the model options it set
    ({name: value}, on the command line or in ``flagfiles``), on the defaults; an overlay
    flagfile given without what it overlays is refused (:func:`overlay_problem`)."""
    problem = overlay_problem(flagfiles, given)
    if problem:
        raise RunError(problem)
    try:
        return builder.ModelConfig.from_mapping(given).validate()
    except ValueError as e:
        raise RunError(str(e)) from None


# --------------------------------------------------------------------------------------------
# A run's own configuration
# --------------------------------------------------------------------------------------------

def _run_directories(path: str) -> list[str]:
    """Where the configuration of the checkpoint at ``path`` (a directory or a prefix) is
    looked for: its directory, then the one above (a run's ``best_<metric>/``)."""
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    return [directory, os.path.dirname(os.path.abspath(directory))]


def find_flags_file(path: str) -> str | None:
    """``flags.cfg`` of a checkpoint directory (or prefix) or of the directory above it (for
    training's ``best_<metric>/`` sub-directories); None when there is none."""
    for directory in _run_directories(path):
        candidate = os.path.join(directory, FLAGS_FILE)
        if os.path.isfile(candidate):
            return candidate
    return None


def _own_configuration(path: str, search_parent: bool = True):
    """``(ModelConfig, source path, flags.cfg values)`` of the run holding the checkpoint at
    ``path``, or ``(None, None, {})`` when it has no configuration file."""
    directories = _run_directories(path)[:2 if search_parent else 1]
    for directory in directories:
        flags_path = os.path.join(directory, FLAGS_FILE)
        if os.path.isfile(flags_path):
            values = read_flagfile(flags_path)
            return model_config_from_values(values, flags_path), flags_path, values
        json_path = os.path.join(directory, TRAIN_CONFIG_FILE)
        if os.path.isfile(json_path):
            with open(json_path) as f:
                try:
                    model = json.load(f)["model"]
                except (ValueError, KeyError) as e:
                    raise RunError(f"{json_path}: not a training configuration "
                                   f"({type(e).__name__}: {e})") from None
            try:
                return builder.ModelConfig.from_mapping(model).validate(), json_path, {}
            except ValueError as e:
                raise RunError(f"{json_path}: {e}") from None
    return None, None, {}


def model_config_for_checkpoint(path: str) -> tuple:
    """``(ModelConfig, source path)`` of the run a checkpoint directory or prefix belongs to
    (its ``flags.cfg``, else its ``train_config.json``), or ``(None, None)``."""
    config, source, _ = _own_configuration(path)
    return config, source


def model_differences(config: builder.ModelConfig, other: builder.ModelConfig,
                      names=None) -> list[tuple[str, str]]:
    """``[(flag in config, flag in other)]`` for the fields (default: all) that differ."""
    names = builder.ModelConfig.field_names() if names is None else names
    return [(options.flag_text(name, getattr(config, name)),
             options.flag_text(name, getattr(other, name)))
            for name in names if getattr(config, name) != getattr(other, name)]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def one_line(error: BaseException) -> str:
    """An exception as one short line (TF errors carry multi-line op context)."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."


def find_checkpoint(path: str) -> str:
    """The checkpoint prefix ``path`` names: the latest checkpoint of a directory (a run, one
    of its ``best_<metric>/`` sub-directories, an import), or ``path`` itself when it is a
    prefix (``.../ckpt-1200``). Raises RunError when there is none."""
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        raise RunError(
            f"no checkpoint in {path}: expected ckpt-<step>.index/.data files and a "
            f"'checkpoint' state file, as written by trainers/train.py (its --model_dir, or a "
            f"best_<metric>/ sub-directory) or export/import_reference_checkpoint.py")
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise RunError(f"{path} is neither a directory nor a checkpoint prefix (no "
                   f"{path}.index)")


def checkpoint_step(prefix: str) -> int:
    """The training step a checkpoint was saved at: its ``step`` variable, else the number in
    its name, else 0 (e.g. an imported reference checkpoint)."""
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    try:
        reader = tf.train.load_checkpoint(prefix)
        key = "step/.ATTRIBUTES/VARIABLE_VALUE"
        if reader.has_tensor(key):
            return int(reader.get_tensor(key))
    except (tf.errors.OpError, ValueError):
        pass
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else 0


def _object_graph(prefix: str):
    """The checkpoint's object graph (``TrackableObjectGraph``: node 0 is the root)."""
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    from tensorflow.core.protobuf import trackable_object_graph_pb2  # noqa: PLC0415 - lazy
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(
        "_CHECKPOINTABLE_OBJECT_GRAPH"))
    return graph


def checkpoint_has_object(prefix: str, path: tuple) -> bool:
    """Whether the checkpoint's object graph has the object at ``path`` (child names from the
    root, e.g. ("generator", "encoder", "fuser"))."""
    graph = _object_graph(prefix)
    node = 0
    for name in path:
        children = {c.local_name: c.node_id for c in graph.nodes[node].children}
        if name not in children:
            return False
        node = children[name]
    return True


def _is_model_name(name: str) -> bool:
    """A model's name in this project's checkpoints (``builder.checkpoint_objects``)."""
    return name in ("generator", builder.EMA_GENERATOR_NAME) or bool(re.fullmatch(
        r"(image_discriminator|identity_classifier)_\d+", name))


def unused_model_values(prefix: str, objects: Mapping, every_model: bool = False) -> list:
    """The values the checkpoint holds for ``objects`` ({root name: trackable}) that none of
    their variables takes, as object paths (``generator/encoder/fuser/linear_in/_kernel``).

    ``tf.train.Checkpoint.restore``'s ``assert_existing_objects_matched`` checks the other
    direction only (every variable found a value), and ``assert_consumed`` would also ask for
    what a restore deliberately leaves out (optimizers, other models). With ``every_model``,
    the checkpoint's models that ``objects`` does not have count as unused too (a resumed run
    must restore all of them).
    """
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    graph = _object_graph(prefix)
    roots = {c.local_name: c.node_id for c in graph.nodes[0].children}
    # Nodes matched by an object of the model, walking both trees by child name.
    matched = set()
    stack = [(roots[name], obj) for name, obj in objects.items() if name in roots]
    while stack:
        node, obj = stack.pop()
        if node in matched:
            continue
        matched.add(node)
        children = tf.train.TrackableView.children(obj)
        for child in graph.nodes[node].children:
            if child.local_name in children:
                stack.append((child.node_id, children[child.local_name]))
    # Every node under those roots, with a path to name it.
    names = list(objects) + ([name for name in roots if _is_model_name(name) and
                              name not in objects] if every_model else [])
    paths = {}
    stack = [(roots[name], name) for name in names if name in roots]
    while stack:
        node, path = stack.pop()
        if node in paths:
            continue
        paths[node] = path
        stack.extend((c.node_id, f"{path}/{c.local_name}") for c in graph.nodes[node].children)
    return sorted(path for node, path in paths.items()
                  if node not in matched and graph.nodes[node].attributes)


def _generator_without_fuser(generator):
    """A stand-in for the generator in the checkpoint object graph, without its fuser."""
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    encoder_children = {name: child for name, child in
                        generator.encoder._trackable_children().items() if name != "fuser"}
    children = dict(generator._trackable_children())
    children["encoder"] = tf.train.Checkpoint(**encoder_children)
    return tf.train.Checkpoint(**children)


def _fresh_models_message(prefix: str, missing: list) -> str:
    """One line for the models a checkpoint does not hold (they keep their fresh
    initialisation), saying why when the checkpoint is a generator-only reference import."""
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    why = ""
    info_path = os.path.join(os.path.dirname(prefix), REFERENCE_IMPORT_FILE)
    if tf.io.gfile.exists(info_path):
        try:
            with tf.io.gfile.GFile(info_path) as f:
                info = json.load(f)
        except (ValueError, tf.errors.OpError):
            info = {}
        if info.get("generator_only"):
            why = (f" (imported from the generator-only reference checkpoint "
                   f"{info.get('reference_checkpoint', '?')})")
    return (f"init checkpoint {prefix}{why} has no {', '.join(missing)}: "
            f"{'it starts' if len(missing) == 1 else 'they start'} from a fresh "
            f"initialisation")


def restore_models(path: str, model_objects: Mapping, *, fresh_fuser: bool = False) -> str:
    """Restores models ({checkpoint name: model}, e.g. ``builder.checkpoint_objects``; no
    optimizers) from a checkpoint directory or prefix written by training or by the reference
    importer. Returns the checkpoint prefix.

    * The generator comes from the checkpoint's moving average when it has one
      (``builder.EMA_GENERATOR_NAME``, training's --generator_ema_decay) and the caller does
      not restore the average itself: that is the generator that draws the pictures.
    * Every variable of every model restored must be in the checkpoint, and every value the
      checkpoint holds for them must be used (:func:`unused_model_values`); otherwise a
      RunError names what does not match.
    * Models the checkpoint does not hold keep their initialisation, with a warning (a
      generator-only import has no discriminators); a checkpoint without a generator is an
      error.
    * ``fresh_fuser`` (training's --init_checkpoint, stage 2 from stage 1): a generator with a
      fuser may come from a checkpoint without one; the fuser keeps its initialisation.
    """
    import tensorflow as tf  # noqa: PLC0415 - lazy (module docstring)
    prefix = find_checkpoint(path)
    try:
        # The index and the object graph, read first: a truncated index fails here with an
        # OpError, a truncated data file with an IndexError.
        _object_graph(prefix)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise RunError(f"checkpoint {prefix} is unreadable ({type(e).__name__}: "
                       f"{one_line(e)})") from None
    restorable = {name: obj for name, obj in model_objects.items()
                  if checkpoint_has_object(prefix, (name,))}
    ema = builder.EMA_GENERATOR_NAME
    if "generator" in restorable and ema not in model_objects and \
            checkpoint_has_object(prefix, (ema,)):
        logging.info("%s has a moving average of the generator: restoring the generator from "
                     "it", prefix)
        restorable[ema] = restorable.pop("generator")
        model_objects = {ema if k == "generator" else k: v for k, v in model_objects.items()}
    generator_name = ema if ema in restorable and "generator" not in restorable else "generator"
    if generator_name not in restorable:
        top = sorted(c.local_name for c in _object_graph(prefix).nodes[0].children)
        raise RunError(f"{prefix} has no generator (objects: {', '.join(top)}): not a "
                       f"keras-sf2f training or import checkpoint")
    missing = sorted(set(model_objects) - set(restorable))
    if missing:
        logging.warning("%s", _fresh_models_message(prefix, missing))
    generator = restorable[generator_name]
    if getattr(generator, "fuser", None) is not None and not checkpoint_has_object(
            prefix, (generator_name, "encoder", "fuser")):
        if not fresh_fuser:
            raise RunError(
                f"{prefix} has no fuser (a stage-1 checkpoint) but the model configuration "
                f"has --fuser=attention: restore it with the configuration it was trained "
                f"with (--fuser=none), or train stage 2 from it (--init_checkpoint)")
        logging.info("init checkpoint %s has no fuser (stage 1): the fuser starts fresh", prefix)
        restorable[generator_name] = _generator_without_fuser(generator)
    try:
        status = tf.train.Checkpoint(**restorable).restore(prefix)
    except (IndexError, tf.errors.OpError) as e:
        # TensorFlow's reader raises IndexError for a data file shorter than its index says.
        raise RunError(f"checkpoint {prefix} is unreadable ({type(e).__name__}: "
                       f"{one_line(e)})") from None
    except ValueError as e:  # a variable of another shape
        raise RunError(f"{prefix} does not match the model configuration: "
                       f"{one_line(e)}") from None
    # Deliberately partial: the checkpoint's optimizers, step and other models stay unread.
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise RunError(f"{prefix} does not match the model configuration: some model "
                       f"variables are not in the checkpoint ({one_line(e)})") from None
    unused = unused_model_values(prefix, restorable)
    if unused:
        shown = ", ".join(unused[:5]) + (f" (+{len(unused) - 5} more)" if len(unused) > 5
                                         else "")
        raise RunError(f"{prefix} does not match the model configuration: the checkpoint "
                       f"holds values no variable of the model takes: {shown}")
    return prefix


def restore_generator(config: builder.ModelConfig, path: str):
    """The generator of ``config`` restored from a checkpoint directory or prefix
    (:func:`restore_models`: the moving average when the checkpoint has one; every variable
    matched both ways)."""
    generator = builder.build_generator(config.validate())
    restore_models(path, {"generator": generator})
    return generator


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    """A checkpoint and the model configuration it is restored with."""
    checkpoint: str                          # the checkpoint prefix
    model_config: builder.ModelConfig
    config_source: str                       # the file it came from, or the caller's words
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)  # flags.cfg's values
    flags_file: str | None = None

    @property
    def step(self) -> int:
        return checkpoint_step(self.checkpoint)

    def flag(self, name: str) -> str | None:
        """A value of the run's ``flags.cfg`` (e.g. its ``data_dir``), None when unset."""
        return self.flags.get(name)

    def restore_generator(self):
        return restore_generator(self.model_config, self.checkpoint)


def load_run(path: str, *, given: Mapping | None = None,
             fallback: builder.ModelConfig | Callable | None = None,
             fallback_source: str = "the command line's model flags",
             missing_hint: str = "pass the flagfile it was trained with, e.g. "
                                 "--flagfile=configs/sf2f_64.cfg") -> Run:
    """The run (or checkpoint) at ``path``: a directory or a checkpoint prefix.

    Args:
      given: model options the caller was given ({name: value}); each must agree with the
        run's own configuration (RunError otherwise).
      fallback: the configuration of a checkpoint without one of its own (a ModelConfig, or
        a function returning one, called only then); ``fallback_source`` names it.
      missing_hint: the fix the error gives when there is neither.
    """
    prefix = find_checkpoint(path)
    config, source, flags = _own_configuration(path)
    if config is None:
        if fallback is None:
            raise RunError(f"{path} has no {FLAGS_FILE} or {TRAIN_CONFIG_FILE} describing its "
                           f"model; {missing_hint}")
        config = (fallback() if callable(fallback) else fallback).validate()
        return Run(prefix, config, fallback_source)
    if given:
        try:
            stated = builder.ModelConfig.from_mapping(given)
        except ValueError as e:
            raise RunError(str(e)) from None
        differences = model_differences(stated, config, sorted(given))
        if differences:
            listed = "; ".join(f"{ours} given, the run has {theirs}"
                               for ours, theirs in differences)
            raise RunError(
                f"the model flags given contradict the run's own configuration ({source}): "
                f"{listed}. The run is always loaded with its own configuration: drop these "
                f"flags (or the flagfile that sets them), or point at the checkpoint they "
                f"describe")
    return Run(prefix, config, source, flags,
               source if os.path.basename(source) == FLAGS_FILE else None)


def load_run_for_tool(path: str, given: Mapping, flagfiles: Sequence[str]) -> Run:
    """:func:`load_run` for a command-line tool, ``given`` the model options its command line
    set (directly or in ``flagfiles``): they must agree with the run's configuration, and
    describe the model of a checkpoint without one (an overlay flagfile alone is refused
    there)."""
    return load_run(path, given=given, fallback=(
        (lambda: command_line_model_config(given, flagfiles)) if given else None))


def resume_problem(model_dir: str, config: builder.ModelConfig) -> str | None:
    """Why training ``config`` cannot resume the run in ``model_dir``, or None: the run's own
    configuration (its ``flags.cfg`` or ``train_config.json``) has other model flags. Call it
    only when ``model_dir`` holds a checkpoint to resume."""
    own, source, _ = _own_configuration(model_dir, search_parent=False)
    if own is None:
        return None
    differences = model_differences(config, own)
    if not differences:
        return None
    listed = "; ".join(f"{ours} here, {theirs} in the run" for ours, theirs in differences)
    return (f"--model_dir={model_dir} holds a run trained with other model flags ({source}): "
            f"{listed}. Resuming continues that run with its own model: give the flags it "
            f"was trained with (--flagfile={os.path.join(model_dir, FLAGS_FILE)}; flags after "
            f"it change the training settings), or train into a new --model_dir")
