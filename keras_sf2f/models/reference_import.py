"""Imports checkpoints written by the official PyTorch SF2F code into this project's models.

Input: a ``.pt`` file saved by the reference's train.py (e.g. ``best_L1_with_model.pt``), a dict
with the keys

* ``model_state``: the generator (``EncoderDecoder``) state dict, keys ``encoder.*`` /
  ``decoder.*`` (a leading ``module.`` from DataParallel is tolerated);
* ``d_img_state_<i>``: patch discriminator i (0 = 64px, 1 = 128px in the 128 configs);
* ``d_ac_state_<i>``: AC discriminator i (same order);
* optimiser states, ``counters`` (``t``, ``epoch``, best metrics), ``args``, ... (not imported:
  the reference's optimiser states do not map onto Keras optimisers; training restarts its
  optimisers, as the reference does for ``--pretrained_path``).

Checkpoints are usually shared *stripped* (``scripts/strip_checkpoint.py`` of the official
PyTorch code): only ``args``, ``model_state`` and ``model_kwargs`` survive (plus
``d_img_state`` / ``d_img_kwargs``, which the reference's train.py leaves empty, when
discriminators are "kept"). Such a generator-only file imports for evaluation and export:
the output checkpoint then holds the generator alone, ``reference_import.json`` says
``generator_only`` and which discriminators were not imported, and training started from it
(``--init_checkpoint``) says they start fresh. A file with some discriminator states but not
all that the configuration has is still refused.

``describe_reference_checkpoint`` reports what a file holds before anything is built: stage,
fuser, encoder and decoder kinds, resolution, embedding size, discriminators and the identity
classifier's width.

The file is read with ``torch.load(weights_only=True)`` (keras_sf2f.models.state_dict): tensors
and plain containers only, never pickled code. Every key is checked against the configuration
before anything is assigned; mismatches are reported by name.

Output layout (``write_tf_checkpoint``), in ``output_dir``:

* a TF checkpoint written by ``tf.train.CheckpointManager`` (``ckpt-<t>.index/.data-*`` plus the
  ``checkpoint`` state file), from ``tf.train.Checkpoint(**objects)`` with objects named
  ``generator``, ``image_discriminator_<res>``, ``identity_classifier_<res>``
  (``builder.checkpoint_objects``); the training loop restores the same names (its optimisers and
  counters are simply absent, so restore with ``expect_partial()``);
* ``flags.cfg``: the effective flags (a flagfile to train/evaluate/export with);
* ``reference_import.json``: provenance (source file, reference counters, parameter counts,
  what the file held: ``found``, ``generator_only``, ``fresh_discriminators``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Mapping

import numpy as np

from keras_sf2f.models import builder, state_dict
from keras_sf2f.models.state_dict import StateDictError

_FUSER_PREFIX = "encoder.attn_fuser."


def _identity(array: np.ndarray) -> np.ndarray:
    return array


class WeightMap:
    """Reference state-dict key -> (Keras variable, layout converter)."""

    def __init__(self):
        self.entries: dict[str, tuple[object, Callable[[np.ndarray], np.ndarray]]] = {}

    def add(self, key: str, variable, convert=_identity):
        if key in self.entries:
            raise AssertionError(f"duplicate reference key {key}")
        self.entries[key] = (variable, convert)

    def conv1d(self, prefix, layer):
        self.add(f"{prefix}.weight", layer.kernel, state_dict.conv1d_kernel)
        if layer.use_bias:
            self.add(f"{prefix}.bias", layer.bias)

    def conv2d(self, prefix, layer):
        self.add(f"{prefix}.weight", layer.kernel, state_dict.conv2d_kernel)
        if layer.use_bias:
            self.add(f"{prefix}.bias", layer.bias)

    def conv_transpose2d(self, prefix, layer):
        self.add(f"{prefix}.weight", layer.kernel, state_dict.conv_transpose2d_kernel)
        if layer.use_bias:
            self.add(f"{prefix}.bias", layer.bias)

    def dense(self, prefix, layer):
        self.add(f"{prefix}.weight", layer.kernel, state_dict.dense_kernel)
        if layer.use_bias:
            self.add(f"{prefix}.bias", layer.bias)

    def batch_norm(self, prefix, layer):
        self.add(f"{prefix}.weight", layer.gamma)
        self.add(f"{prefix}.bias", layer.beta)
        self.add(f"{prefix}.running_mean", layer.moving_mean)
        self.add(f"{prefix}.running_var", layer.moving_variance)

    def keys(self):
        return self.entries.keys()


# --- generator -------------------------------------------------------------------------------

def _encoder_map(weights: WeightMap, encoder, prefix="encoder"):
    if encoder.mode == "inception":
        # model.{0..3} = Inception1DBlocks, each branch a CNN1DBlock (model.0 conv, model.1 BN);
        # model.4 = output conv.
        for index, block in enumerate(encoder.blocks):
            for kernel, _ in block.BRANCHES:
                branch = getattr(block, f"conv_k{kernel}")
                branch_prefix = f"{prefix}.model.{index}.conv_k{kernel}.model"
                weights.conv1d(f"{branch_prefix}.0", branch.conv)
                weights.batch_norm(f"{branch_prefix}.1", branch.norm)
        weights.conv1d(f"{prefix}.model.4", encoder.output_conv)
    else:
        # model = [conv, BN, ReLU] x 4 + output conv: convs at 0,3,6,9, BNs at 1,4,7,10, out 12.
        for index, block in enumerate(encoder.blocks):
            weights.conv1d(f"{prefix}.model.{3 * index}", block.conv)
            weights.batch_norm(f"{prefix}.model.{3 * index + 1}", block.norm)
        weights.conv1d(f"{prefix}.model.12", encoder.output_conv)
    if encoder.fuser is not None:
        weights.dense(f"{prefix}.attn_fuser.attention.linear_in", encoder.fuser.linear_in)
        weights.dense(f"{prefix}.attn_fuser.attention.linear_out", encoder.fuser.linear_out)


def _to_image_map(weights: WeightMap, prefix, head):
    # gnet = [conv3, LeakyReLU, conv1]
    weights.conv2d(f"{prefix}.0", head.conv)
    weights.conv2d(f"{prefix}.2", head.to_rgb)


def _up_block_map(weights: WeightMap, prefix, block):
    # upBlock = [Upsample, conv3, BN, GLU]
    weights.conv2d(f"{prefix}.1", block.conv)
    weights.batch_norm(f"{prefix}.2", block.norm)


def _decoder_map(weights: WeightMap, decoder, prefix="decoder"):
    from keras_sf2f.models.face_decoder import (  # noqa: PLC0415
        DeconvFaceDecoder, MultiResolutionFaceDecoder)
    if isinstance(decoder, DeconvFaceDecoder):
        # model.{i} = DeConv2DBLK, its ConvTranspose2d at model.{i}.model.0.
        for index, layer in enumerate(decoder.deconvs):
            weights.conv_transpose2d(f"{prefix}.model.{index}.model.0", layer)
        return
    multires = isinstance(decoder, MultiResolutionFaceDecoder)
    weights.dense(f"{prefix}.fc.0", decoder.fc_dense)
    weights.batch_norm(f"{prefix}.fc.1", decoder.fc_norm)
    up_name = "up_low_layers" if multires else "up_layers"
    for index, block in enumerate(decoder.up_blocks):
        _up_block_map(weights, f"{prefix}.{up_name}.{index}", block)
    _to_image_map(weights, f"{prefix}.{'gnet_low' if multires else 'gnet'}", decoder.to_image)
    if multires:
        _up_block_map(weights, f"{prefix}.up_mid_layer", decoder.up_block_high)
        _to_image_map(weights, f"{prefix}.gnet_mid", decoder.to_image_high)


def generator_weight_map(generator) -> WeightMap:
    weights = WeightMap()
    _encoder_map(weights, generator.encoder)
    _decoder_map(weights, generator.decoder)
    return weights


# --- discriminators --------------------------------------------------------------------------

def _conv_stack_map(weights: WeightMap, prefix, stack):
    """The reference build_cnn Sequential: per conv j>0, [norm] [activation] then the conv."""
    from keras_sf2f.models.discriminators import parse_activation  # noqa: PLC0415
    has_activation = parse_activation(stack.activation)[0] != "none"
    index = 0
    for conv_index in range(len(stack.specs)):
        if conv_index > 0:
            if stack.normalization == "batch":
                weights.batch_norm(f"{prefix}.{index}", getattr(stack, f"norm_{conv_index}"))
                index += 1
            if has_activation:
                index += 1
        weights.conv2d(f"{prefix}.{index}", getattr(stack, f"conv_{conv_index}"))
        index += 1


def patch_discriminator_weight_map(model) -> WeightMap:
    weights = WeightMap()
    _conv_stack_map(weights, "cnn", model.cnn)
    weights.conv2d("classifier", model.classifier)
    return weights


def identity_classifier_weight_map(model) -> WeightMap:
    # cnn = Sequential(build_cnn(...), GlobalAvgPool, Linear(C, 1024))
    weights = WeightMap()
    _conv_stack_map(weights, "cnn.0", model.cnn)
    weights.dense("cnn.2", model.feature)
    weights.dense("real_classifier", model.real_classifier)
    weights.dense("id_classifier", model.id_classifier)
    return weights


# --- loading ---------------------------------------------------------------------------------

def _strip_module_prefix(state: Mapping) -> dict:
    return {(key[len("module."):] if key.startswith("module.") else key): value
            for key, value in state.items()}


def load_state(weights: WeightMap, state: Mapping, what: str,
               optional_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Checks keys, then assigns every mapped tensor. Returns the keys left at their init
    (only possible under ``optional_prefixes``, when all keys with such a prefix are absent)."""
    state = state_dict.to_numpy(_strip_module_prefix(state))
    expected = set(weights.keys())
    skipped = []
    for prefix in optional_prefixes:
        wanted = {key for key in expected if key.startswith(prefix)}
        if wanted and not any(key.startswith(prefix) for key in state):
            expected -= wanted
            skipped.extend(sorted(wanted))
    state_dict.check_keys(expected, state.keys(), what)
    # Check every shape before assigning anything, so a mismatch leaves the models untouched.
    converted = {}
    for key in sorted(expected):
        variable, convert = weights.entries[key]
        value = convert(state[key])
        if tuple(value.shape) != tuple(variable.shape):
            hint = ""
            if key.endswith(("id_classifier.weight", "id_classifier.bias")):
                hint = (f" (the checkpoint's identity classifier has {state[key].shape[0]} "
                        f"identities: pass --num_train_identities={state[key].shape[0]})")
            raise StateDictError(
                f"{what}: {key} has shape {tuple(state[key].shape)} (-> {tuple(value.shape)} in "
                f"Keras layout), the model expects {tuple(variable.shape)}{hint}")
        converted[key] = value
    for key, value in converted.items():
        variable, _ = weights.entries[key]
        variable.assign(value.astype(variable.dtype))
    return skipped


def _discriminator_entries(checkpoint: Mapping, key_stem: str) -> list:
    """The ``<key_stem>_<i>`` entries holding a state dict, sorted. The bare ``d_img_state`` /
    ``d_ac_state`` keys of the reference's train.py stay None and are not counted."""
    return sorted(key for key, value in checkpoint.items()
                  if isinstance(key, str) and re.fullmatch(rf"{key_stem}_\d+", key)
                  and value is not None)


def _truthy(value) -> bool | None:
    """The reference's ``--train_fuser_only`` has no type: False by default, the string given
    on the command line otherwise ("1", "True", ...)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "none")
    return bool(value)


def _image_size(model_kwargs) -> int | None:
    size = model_kwargs.get("image_size") if isinstance(model_kwargs, Mapping) else None
    if isinstance(size, (list, tuple)) and size:
        size = size[0]
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def describe_reference_checkpoint(checkpoint: Mapping) -> dict:
    """What a reference checkpoint dict holds, read from its keys and shapes (and its ``args``
    and ``model_kwargs`` when present), without building any model.

    Returns {'stage', 'stage_from', 'fuser', 'encoder', 'decoder', 'resolution',
    'embedding_dim', 'image_discriminators', 'identity_classifiers',
    'identity_classifier_width', 'generator_only'}; values the file does not show are None.
    Raises StateDictError when there is no generator state dict.
    """
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model_state"),
                                                             Mapping):
        raise StateDictError("not a reference SF2F checkpoint: expected a dict with a "
                             "'model_state' entry (the generator state dict)")
    keys = set(_strip_module_prefix(checkpoint["model_state"]))
    fuser = any(key.startswith(_FUSER_PREFIX) for key in keys)
    if any(key.startswith("encoder.model.0.conv_k") for key in keys):
        encoder = "inception"
    elif "encoder.model.0.weight" in keys:
        encoder = "cnn"
    else:
        encoder = None
    if any(key.startswith("decoder.gnet_mid.") for key in keys):
        decoder, resolution = "upconv_multires", 128
    elif any(key.startswith("decoder.gnet.") for key in keys):
        decoder, resolution = "upconv_64", 64
    elif "decoder.model.0.model.0.weight" in keys:
        decoder, resolution = "deconv_64", 64
    else:
        decoder, resolution = None, _image_size(checkpoint.get("model_kwargs"))
    state = _strip_module_prefix(checkpoint["model_state"])
    embedding_dim = None
    for key, axis in (("decoder.fc.0.weight", 1), ("decoder.model.0.model.0.weight", 0)):
        if key in state and hasattr(state[key], "shape") and len(state[key].shape) >= 2:
            embedding_dim = int(state[key].shape[axis])
            break
    args = checkpoint.get("args") if isinstance(checkpoint.get("args"), Mapping) else {}
    fuser_only = _truthy(args.get("train_fuser_only"))
    if fuser_only is not None:
        stage, stage_from = (2 if fuser_only else 1), "args.train_fuser_only"
    else:
        stage, stage_from = (2 if fuser else 1), "fuser weights present" if fuser else \
            "no fuser weights"
    image_ds = _discriminator_entries(checkpoint, "d_img_state")
    ac_ds = _discriminator_entries(checkpoint, "d_ac_state")
    width = None
    if ac_ds:
        ac_state = _strip_module_prefix(checkpoint[ac_ds[0]])
        weight = ac_state.get("id_classifier.weight")
        if hasattr(weight, "shape") and len(weight.shape) == 2:
            width = int(weight.shape[0])
    return {"stage": stage, "stage_from": stage_from, "fuser": fuser, "encoder": encoder,
            "decoder": decoder, "resolution": resolution, "embedding_dim": embedding_dim,
            "image_discriminators": len(image_ds), "identity_classifiers": len(ac_ds),
            "identity_classifier_width": width, "generator_only": not image_ds and not ac_ds}


def format_found(found: dict) -> str:
    """``describe_reference_checkpoint``'s result as one line for people."""
    parts = [f"stage {found['stage']} ({found['stage_from']})",
             "attention fuser" if found["fuser"] else "no fuser",
             f"encoder {found['encoder'] or '?'}", f"decoder {found['decoder'] or '?'}",
             f"resolution {found['resolution'] or '?'}",
             f"embedding {found['embedding_dim'] or '?'}"]
    if found["generator_only"]:
        parts.append("no discriminators (generator only)")
    else:
        parts.append(f"{found['image_discriminators']} patch / "
                     f"{found['identity_classifiers']} AC discriminator(s)")
    width = found["identity_classifier_width"]
    parts.append(f"identity classifier width {width}" if width else
                 "no identity classifier in the file")
    return ", ".join(parts)


def import_reference_state(models: builder.Sf2fModels, checkpoint: Mapping,
                           allow_missing_fuser: bool = False) -> dict:
    """Loads a reference checkpoint dict (already read) into built models.

    A checkpoint without any discriminator state (generator only, as stripped checkpoints are
    shared) loads the generator and leaves every discriminator at its fresh initialisation.

    Returns a small report: {'skipped_keys': [...], 'generator_only': bool,
    'fresh_discriminators': [checkpoint names left fresh]}. Raises StateDictError on any
    mismatch.
    """
    describe_reference_checkpoint(checkpoint)  # refuses a dict without a generator
    generator_only = not _discriminator_entries(checkpoint, "d_img_state") and \
        not _discriminator_entries(checkpoint, "d_ac_state")
    if generator_only:
        optional = (_FUSER_PREFIX,) if allow_missing_fuser else ()
        skipped = load_state(generator_weight_map(models.generator),
                             checkpoint["model_state"], "model_state (generator)", optional)
        fresh = [name for name in builder.checkpoint_objects(models) if name != "generator"]
        return {"skipped_keys": skipped, "generator_only": True, "fresh_discriminators": fresh}
    # Collect first, so that all structural problems are reported before anything is loaded.
    problems = []
    for kind, key_stem, models_list in (
            ("patch discriminator", "d_img_state", models.image_discriminators),
            ("AC discriminator", "d_ac_state", models.identity_classifiers)):
        present = _discriminator_entries(checkpoint, key_stem)
        wanted = [f"{key_stem}_{index}" for index in range(len(models_list))]
        if present != wanted:
            problems.append(
                f"the configuration has {len(models_list)} {kind}(s) "
                f"({', '.join(m.name for m in models_list) or 'none'}), expecting "
                f"{wanted or 'no'} {key_stem}_<i> entries; the checkpoint has "
                f"{present or 'none'}")
    if problems:
        raise StateDictError("reference checkpoint does not match the configuration:\n  "
                             + "\n  ".join(problems) + "\n  (a checkpoint with no "
                             "discriminator state at all imports as generator-only)")
    optional = (_FUSER_PREFIX,) if allow_missing_fuser else ()
    skipped = load_state(generator_weight_map(models.generator), checkpoint["model_state"],
                         "model_state (generator)", optional)
    for index, model in enumerate(models.image_discriminators):
        load_state(patch_discriminator_weight_map(model), checkpoint[f"d_img_state_{index}"],
                   f"d_img_state_{index} ({model.name})")
    for index, model in enumerate(models.identity_classifiers):
        load_state(identity_classifier_weight_map(model), checkpoint[f"d_ac_state_{index}"],
                   f"d_ac_state_{index} ({model.name})")
    return {"skipped_keys": skipped, "generator_only": False, "fresh_discriminators": []}


def import_reference_checkpoint(path: str, config: builder.ModelConfig,
                                allow_missing_fuser: bool = False):
    """Reads ``path`` safely, builds the models of ``config`` and loads the weights.

    Returns (models, checkpoint_info) where checkpoint_info holds the reference counters and the
    import report.
    """
    checkpoint = state_dict.load_torch_file(path)
    if not isinstance(checkpoint, Mapping):
        raise StateDictError(f"{path}: not a reference SF2F checkpoint (a "
                             f"{type(checkpoint).__name__}, expected a dict with "
                             f"'model_state')")
    found = describe_reference_checkpoint(checkpoint)
    models = builder.build_models(config)
    try:
        report = import_reference_state(models, checkpoint, allow_missing_fuser)
    except StateDictError as e:
        # What the file holds is what the flags must be set to: say it next to the mismatch.
        raise StateDictError(f"{e}\nthe file holds: {format_found(found)}") from None
    counters = checkpoint.get("counters") if isinstance(checkpoint.get("counters"),
                                                        Mapping) else {}
    info = {
        "reference_checkpoint": os.path.abspath(path),
        "reference_counters": {key: value for key, value in counters.items()
                               if isinstance(value, (int, float, str, bool))},
        "found": found,
        "generator_only": report["generator_only"],
        "fresh_discriminators": report["fresh_discriminators"],
        "skipped_keys": report["skipped_keys"],
        "parameter_counts": builder.count_parameters(models),
    }
    return models, info


def _check_output_dir(output_dir: str) -> None:
    import tensorflow as tf  # noqa: PLC0415
    existing = tf.train.latest_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if existing:
        raise FileExistsError(f"{output_dir} already holds a checkpoint ({existing}); choose "
                              f"an empty --output_dir")


def write_tf_checkpoint(models: builder.Sf2fModels, output_dir: str,
                        checkpoint_number: int | None = None,
                        include_discriminators: bool = True) -> str:
    """Writes the models as a TF checkpoint in ``output_dir`` (layout in the module docstring);
    without ``include_discriminators`` the generator alone, so that whoever restores the
    checkpoint sees that the discriminators were never imported.

    Refuses to write into a directory that already holds a checkpoint.
    """
    import tensorflow as tf  # noqa: PLC0415
    _check_output_dir(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    objects = builder.checkpoint_objects(models)
    if not include_discriminators:
        objects = {"generator": objects["generator"]}
    checkpoint = tf.train.Checkpoint(**objects)
    manager = tf.train.CheckpointManager(checkpoint, output_dir, max_to_keep=None)
    return manager.save(checkpoint_number=checkpoint_number)


def run_import(reference_checkpoint: str, config: builder.ModelConfig, output_dir: str,
               flags_text: str = "", allow_missing_fuser: bool = False) -> dict:
    """The whole import command: read, load, write checkpoint + flags.cfg + provenance JSON."""
    _check_output_dir(output_dir)  # before the (slow) import, not after
    models, info = import_reference_checkpoint(reference_checkpoint, config,
                                               allow_missing_fuser)
    step = info["reference_counters"].get("t")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
    info["tf_checkpoint"] = write_tf_checkpoint(
        models, output_dir, step, include_discriminators=not info["generator_only"])
    info["model_config"] = config.to_dict()
    with open(os.path.join(output_dir, "flags.cfg"), "w") as f:
        f.write("# Effective flags of the import of "
                f"{os.path.abspath(reference_checkpoint)}\n")
        if info["generator_only"]:
            f.write("# Generator only: the discriminators "
                    f"({', '.join(info['fresh_discriminators']) or 'none configured'}) were "
                    "not in the file and start fresh in training from this checkpoint.\n")
        f.write(flags_text)
    with open(os.path.join(output_dir, "reference_import.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    return info
