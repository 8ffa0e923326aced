"""Files written whole or not at all, and file checksums: the one place for both.

Every file the project writes for later reading (run configurations, best-checkpoint records,
dataset manifests and shards, reports, aligned faces, downloaded models, the face-identity
weights) goes through this module: the bytes go to ``<path>.partial`` first and are renamed
over ``path`` only after the writer finished without an exception. A crash, a full disk or a
kill in the middle leaves the previous file (or none) in place, never half of a new one;
readers never see a torn file. The rename is atomic on POSIX file systems when both names are
in one directory, which they are here.

* ``atomic_write``: a file object to write (``write_text`` and ``write_json`` on top of it);
* ``atomic_path``: a temporary name, for writers that open the file themselves (TFRecord
  writers, Keras ``save_weights``, a member copied out of an archive);
* ``atomic_directory``: a staging directory that replaces a whole directory (an export).

Plain Python only (no TensorFlow), so that tools which never train (the REST client, flag
validation, the curation pipeline) can use it without TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil

PARTIAL_SUFFIX = ".partial"
OLD_SUFFIX = ".old"

__all__ = ["PARTIAL_SUFFIX", "OLD_SUFFIX", "partial_path", "atomic_path", "atomic_write",
           "atomic_directory", "write_text", "write_json", "sha256"]


def partial_path(path: str, suffix: str = "") -> str:
    """The temporary name ``path`` is written under: ``<path>.partial<suffix>``."""
    return path + PARTIAL_SUFFIX + suffix


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """``with atomic_path(path) as tmp: writer(tmp)`` writes ``path`` whole or leaves it
    untouched, for writers that take a file name rather than a file object.

    ``tmp`` is ``<path>.partial<suffix>``; ``suffix`` is for writers that insist on an
    extension (Keras ``save_weights`` wants ``.weights.h5``). A leftover ``tmp`` from an
    interrupted run is removed first. The writer must have closed ``tmp`` when the block
    ends; then it is renamed over ``path``. On an exception (a failed checksum, say) ``tmp``
    is removed and the exception propagates.
    """
    tmp = partial_path(path, suffix)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs):
    """``with atomic_write(path) as f: ...`` writes ``path`` whole or leaves it untouched.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes); ``open_kwargs`` go to ``open`` (for
    example ``encoding`` or ``newline``). On an exception the partial file is removed and the
    exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes new files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


@contextlib.contextmanager
def atomic_directory(path: str):
    """``with atomic_directory(path) as staging: ...`` replaces the directory ``path`` as a
    whole with what the block wrote into ``staging`` (``<path>.partial``, created empty).

    Readers see the previous directory or the complete new one. The swap is two renames
    (``path`` -> ``<path>.old``, staging -> ``path``), then ``<path>.old`` is removed; a crash
    between the renames leaves no ``path`` but the previous one at ``<path>.old``, which the
    next call puts back before building a new one. On an exception the staging directory is
    removed and ``path`` is untouched.
    """
    staging = partial_path(path)
    old = path + OLD_SUFFIX
    if not os.path.exists(path) and os.path.isdir(old):
        os.replace(old, path)
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.isdir(old):
        shutil.rmtree(old)
    if os.path.isdir(path):
        os.replace(path, old)
    os.replace(staging, path)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, value, *, sort_keys: bool = True) -> None:
    """Writes ``value`` as indented JSON with a final newline, atomically."""
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


def sha256(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
