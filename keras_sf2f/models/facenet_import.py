"""Imports facenet-pytorch ``InceptionResnetV1`` state dicts into the Keras ``FaceNet``.

No face-network weights can be downloaded in this project: users who
already have facenet-pytorch's VGGFace2 file, ``20180402-114759-vggface2.pt`` (or the
CASIA-WebFace one, or SF2F's two-part download of the same weights: a features file and a
logits file), convert it once with

    python export/import_facenet_weights.py --state_dict=20180402-114759-vggface2.pt \\
        --output=facenet_vggface2.keras

and load the result with ``keras.models.load_model`` (``.keras``, self-describing) or
``FaceNet(num_classes=8631)`` + ``build((None, 140, 140, 3))`` + ``load_weights``
(``.weights.h5``).

Files are read with ``torch.load(weights_only=True)`` (``state_dict.load_torch_file``): tensors
and plain containers only, never pickled code. Keys are checked against the model
configuration before anything is assigned; a mismatch raises ``StateDictError`` naming the
missing and unexpected keys, a wrong tensor shape names the key and both shapes.

PyTorch key scheme (facenet-pytorch module names): ``conv2d_1a`` .. ``conv2d_4b``
(BasicConv2d: ``.conv.weight``, ``.bn.{weight,bias,running_mean,running_var,
num_batches_tracked}``), ``repeat_{1,2,3}.<i>`` and ``block8`` (``branch0`` bare BasicConv2d,
``branch1``/``branch2`` Sequentials ``branchB.<j>``, ``conv2d.{weight,bias}``), ``mixed_6a``
(``branch0`` bare, ``branch1.<j>``), ``mixed_7a`` (``branch{0,1,2}.<j>``), ``last_linear.weight``,
``last_bn.*``, ``logits.{weight,bias}``. A branch with a single convolution is a bare module in
PyTorch (no ``.0``), otherwise a Sequential.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from keras_sf2f import files
from keras_sf2f.models import state_dict as sd
from keras_sf2f.models.facenet import (BasicConv2d, FaceNet, DEFAULT_REPEATS,
                                       FACENET_INPUT_SIZE)

_IDENTITY: Callable[[np.ndarray], np.ndarray] = lambda a: a  # noqa: E731


def _basic_conv_entries(layer: BasicConv2d, prefix: str):
    yield f"{prefix}.conv.weight", layer.conv.kernel, sd.conv2d_kernel
    bn = layer.bn
    for torch_name, var in (("weight", bn.gamma), ("bias", bn.beta),
                            ("running_mean", bn.moving_mean),
                            ("running_var", bn.moving_variance)):
        yield f"{prefix}.bn.{torch_name}", var, _IDENTITY


def _branches_entries(block, prefix: str):
    for b, chain in enumerate(block.branches):
        for j, layer in enumerate(chain):
            sub = f"{prefix}.branch{b}" if len(chain) == 1 else f"{prefix}.branch{b}.{j}"
            yield from _basic_conv_entries(layer, sub)


def _residual_entries(block, prefix: str):
    yield from _branches_entries(block, prefix)
    yield f"{prefix}.conv2d.weight", block.conv2d.kernel, sd.conv2d_kernel
    yield f"{prefix}.conv2d.bias", block.conv2d.bias, _IDENTITY


def facenet_key_map(model: FaceNet) -> dict:
    """PyTorch key -> (Keras variable, converter to the Keras layout), for a built model."""
    if not model.built:
        raise ValueError("build the FaceNet (e.g. model.build((None, 140, 140, 3))) first")
    entries = []
    for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a", "conv2d_4b"):
        entries += _basic_conv_entries(getattr(model, name), name)
    for stage in ("repeat_1", "repeat_2", "repeat_3"):
        for i, block in enumerate(getattr(model, stage)):
            entries += _residual_entries(block, f"{stage}.{i}")
    entries += _branches_entries(model.mixed_6a, "mixed_6a")
    entries += _branches_entries(model.mixed_7a, "mixed_7a")
    entries += _residual_entries(model.block8, "block8")
    entries.append(("last_linear.weight", model.last_linear.kernel, sd.dense_kernel))
    bn = model.last_bn
    entries += [("last_bn.weight", bn.gamma, _IDENTITY), ("last_bn.bias", bn.beta, _IDENTITY),
                ("last_bn.running_mean", bn.moving_mean, _IDENTITY),
                ("last_bn.running_var", bn.moving_variance, _IDENTITY)]
    if model.logits is not None:
        entries += [("logits.weight", model.logits.kernel, sd.dense_kernel),
                    ("logits.bias", model.logits.bias, _IDENTITY)]
    key_map = {}
    for key, var, convert in entries:
        if key in key_map:  # would be a bug in this module
            raise AssertionError(f"duplicate key {key}")
        key_map[key] = (var, convert)
    return key_map


def load_facenet_state_dict(model: FaceNet, state: Mapping, what: str = "FaceNet") -> FaceNet:
    """Assigns a facenet-pytorch state dict (torch tensors or numpy arrays) to a built model.

    Every key is checked first (``num_batches_tracked`` is ignored); nothing is assigned unless
    all keys and shapes fit.
    """
    state = sd.to_numpy(state)
    key_map = facenet_key_map(model)
    sd.check_keys(key_map.keys(), state.keys(), what)
    converted = []
    for key, (var, convert) in key_map.items():
        value = convert(np.asarray(state[key]))
        if tuple(value.shape) != tuple(var.shape):
            raise sd.StateDictError(
                f"{what}: {key} has shape {tuple(state[key].shape)} (Keras layout "
                f"{tuple(value.shape)}), the model expects {tuple(var.shape)} for {var.path}")
        converted.append((var, value))
    for var, value in converted:
        var.assign(value.astype(var.dtype))
    return model


def read_state_dicts(paths: Sequence[str] | str) -> dict:
    """Reads and merges one or more PyTorch state-dict files (SF2F downloads the VGGFace2
    weights as a features file and a logits file). Duplicate keys are an error."""
    if isinstance(paths, str):
        paths = [paths]
    merged: dict = {}
    for path in paths:
        state = sd.load_torch_file(path)
        if not isinstance(state, Mapping):
            raise sd.StateDictError(f"{path}: expected a state dict (a mapping of tensors), "
                                    f"got {type(state).__name__}")
        if "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        clash = sorted(set(state) & set(merged))
        if clash:
            raise sd.StateDictError(f"{path}: keys already read from another file: "
                                    f"{', '.join(clash[:10])}")
        merged.update(sd.to_numpy(state))
    return merged


def facenet_config_from_state_dict(state: Mapping, include_logits: bool = True) -> dict:
    """FaceNet constructor arguments implied by a state dict: repeats (from the block indices),
    embedding size, number of classes, width (from ``conv2d_1a``)."""
    keys = list(state.keys())
    repeats = []
    for stage in ("repeat_1", "repeat_2", "repeat_3"):
        pattern = re.compile(rf"^{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for m in map(pattern.match, keys) if m}
        repeats.append(max(indices) + 1 if indices else 0)
    config = {"repeats": tuple(repeats) if any(repeats) else DEFAULT_REPEATS}
    if "last_linear.weight" in state:
        config["embedding_dim"] = int(np.shape(state["last_linear.weight"])[0])
    if "conv2d_1a.conv.weight" in state:
        stem = int(np.shape(state["conv2d_1a.conv.weight"])[0])
        if stem != 32:
            config["width_multiplier"] = stem / 32.0
    if include_logits and "logits.weight" in state:
        config["num_classes"] = int(np.shape(state["logits.weight"])[0])
    return config


def import_facenet(paths_or_state, include_logits: bool = True,
                   input_size: int = FACENET_INPUT_SIZE,
                   model: FaceNet | None = None) -> FaceNet:
    """Builds a ``FaceNet`` matching a facenet-pytorch state dict and loads it.

    ``paths_or_state``: a file path, a list of paths (merged), or an in-memory mapping.
    ``include_logits=False`` drops ``logits.*`` (embedding-only model). ``model``: load into
    this (built or unbuilt) model instead of one configured from the state dict.
    """
    if isinstance(paths_or_state, Mapping):
        state = sd.to_numpy(paths_or_state)
    else:
        state = read_state_dicts(paths_or_state)
    if not include_logits:
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    if model is None:
        model = FaceNet(**facenet_config_from_state_dict(state, include_logits))
    if not model.built:
        model.build((None, input_size, input_size, 3))
    return load_facenet_state_dict(model, state)


# What each output kind is written with; Keras wants the name to end in the kind's extension,
# so the temporary file keeps it too.
SAVE_SUFFIXES = (".keras", ".weights.h5")


def save_facenet(model: FaceNet, path: str) -> str:
    """Writes ``model`` to ``path``: ``*.keras`` the whole model (configuration and weights),
    ``*.weights.h5`` the weights only. The file is written under a temporary name and renamed
    when complete (``keras_sf2f.files.atomic_path``), so an interrupted or failed save leaves
    the previous file, or none, never a half-written one. Returns ``path``."""
    suffix = next((s for s in SAVE_SUFFIXES if path.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: a FaceNet file ends in .keras or .weights.h5")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".keras":
            model.save(tmp)
        else:
            model.save_weights(tmp)
    return path


def expected_keys(model: FaceNet) -> Iterable[str]:
    """The PyTorch keys ``load_facenet_state_dict`` needs for ``model`` (without
    ``num_batches_tracked``)."""
    return list(facenet_key_map(model).keys())
