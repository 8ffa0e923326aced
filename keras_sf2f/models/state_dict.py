"""Reading PyTorch state dicts and converting their tensors to Keras layouts.

Only the checkpoint importers use this module, and only they need PyTorch. Files are read
with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects: a checkpoint
from an untrusted place can hold tensors, numbers, strings and plain containers, never code.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import numpy as np


class StateDictError(ValueError):
    """A state dict that does not fit the configuration it is imported into."""


def load_torch_file(path: str) -> dict:
    """Loads a PyTorch ``.pt``/``.pth`` file safely (tensors and plain containers only)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        import torch  # noqa: PLC0415 - optional dependency, importers only
    except ImportError as e:
        raise ImportError(
            "reading PyTorch checkpoints needs PyTorch: pip install torch==2.13.0 "
            "(a CPU build; only the importers need it)") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad files
        raise StateDictError(
            f"{path}: not a loadable PyTorch checkpoint of plain tensors ({e})") from e


def to_numpy(state: Mapping) -> dict[str, np.ndarray]:
    """Turns a mapping of torch tensors (or arrays) into float/int numpy arrays."""
    out = {}
    for key, value in state.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value)
    return out


def check_keys(expected: Iterable[str], actual: Iterable[str], what: str,
               ignore_suffixes: tuple[str, ...] = ("num_batches_tracked",)) -> None:
    """Raises StateDictError naming missing and unexpected keys, if any."""
    expected = {k for k in expected if not k.endswith(ignore_suffixes)}
    actual = {k for k in actual if not k.endswith(ignore_suffixes)}
    missing = sorted(expected - actual)
    unexpected = sorted(actual - expected)
    if missing or unexpected:
        lines = [f"{what}: the state dict does not match the chosen configuration."]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:20])}"
                         + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                         + (" ..." if len(unexpected) > 20 else ""))
        raise StateDictError("\n".join(lines))


# Layout conversions, PyTorch -> Keras (this project's tensors are NLC / NHWC).

def conv1d_kernel(w: np.ndarray) -> np.ndarray:
    """Conv1d weight (out, in, k) -> Conv1D kernel (k, in, out)."""
    return np.transpose(w, (2, 1, 0))


def conv2d_kernel(w: np.ndarray) -> np.ndarray:
    """Conv2d weight (out, in, kh, kw) -> Conv2D kernel (kh, kw, in, out)."""
    return np.transpose(w, (2, 3, 1, 0))


def conv_transpose2d_kernel(w: np.ndarray) -> np.ndarray:
    """ConvTranspose2d weight (in, out, kh, kw) -> Conv2DTranspose kernel (kh, kw, out, in)."""
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """Linear weight (out, in) -> Dense kernel (in, out)."""
    return np.transpose(w, (1, 0))


def batch_norm_weights(state: Mapping[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """BatchNorm{1,2}d tensors under ``prefix`` in Keras order [gamma, beta, mean, var]."""
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"],
            state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]]
