"""Reading pickles from outside without trusting them.

Two kinds of pickle come from outside: the reference's pre-computed mel features
(``{'LogMel_Features': ndarray (40, T), 'spkid': str, 'clipid': str, 'wavid': str}``) and
the VGGFace2 ResNet-50 weights (``{name: ndarray}``, written by Python 2). Unpickling can
run arbitrary code, so both are read with one unpickler that resolves only the globals numpy
needs to rebuild an array, and the result must be a plain dict of numeric arrays, numbers
and strings. Anything else is refused with an error naming the file and the offending
global or type, before it can run.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

# The globals a pickled numpy array (protocols 2-5, numpy 1.x and 2.x) refers to.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays at pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
}


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Python 3 writes ``bytes`` at protocol <= 2 as ``_codecs.encode(str, 'latin1')``; only
    that exact use is allowed (no other codec, e.g. no decompressor)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError("refusing _codecs.encode other than str -> latin1 bytes")
    return text.encode("latin1")


class UnsafePickleError(ValueError):
    """A pickle that holds something other than plain data."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(f"refusing to load global {module}.{name}")


def _check_plain(value, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise UnsafePickleError(f"{where}: non-string key {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise UnsafePickleError(f"{where}: array of dtype {value.dtype} is not plain data")
    elif not isinstance(value, (str, bytes, int, float, bool, np.generic, type(None))):
        raise UnsafePickleError(f"{where}: {type(value).__name__} is not plain data")


def load_plain_pickle(path: str) -> dict:
    """Loads a pickle that must be a dict of arrays, numbers and strings."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        # latin1 reads Python 2 pickles' byte strings (the VGGFace2 weights) unchanged.
        value = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise UnsafePickleError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if isinstance(value, dict) and type(value) is not dict:
        value = dict(value)  # OrderedDict
    if not isinstance(value, dict):
        raise UnsafePickleError(f"{path}: expected a dict, found {type(value).__name__}")
    _check_plain(value, path)
    return value


def load_reference_mel(path: str) -> np.ndarray:
    """The raw (un-normalised) log mel filterbank of one reference pickle, as [frames, 40]."""
    value = load_plain_pickle(path)
    mel = value.get("LogMel_Features")
    if not isinstance(mel, np.ndarray) or mel.ndim != 2 or mel.shape[0] != 40:
        raise UnsafePickleError(
            f"{path}: 'LogMel_Features' must be a (40, T) array, found "
            f"{getattr(mel, 'shape', type(mel).__name__)}")
    return np.ascontiguousarray(mel.T.astype(np.float32))
