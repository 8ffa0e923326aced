"""Files written whole or not at all, and file checksums: the one place for both.

Every file the project writes for later reading (run configurations, best-checkpoint records,
dataset manifests, reports, aligned faces, downloaded models) goes through ``atomic_write``:
the bytes go to ``<path>.partial`` first and are renamed over ``path`` only after the writer
finished without an exception. A crash, a full disk or a kill in the middle leaves the previous
file (or none) in place, never half of a new one; readers never see a torn file. The rename is
atomic on POSIX file systems when both names are in one directory, which they are here.

Plain Python only (no TensorFlow), so that tools which never train (the REST client, flag
validation, the curation pipeline) can use it without TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

PARTIAL_SUFFIX = ".partial"

__all__ = ["PARTIAL_SUFFIX", "atomic_write", "write_text", "write_json", "sha256"]


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs):
    """``with atomic_write(path) as f: ...`` writes ``path`` whole or leaves it untouched.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes); ``open_kwargs`` go to ``open`` (for
    example ``encoding`` or ``newline``). On an exception the partial file is removed and the
    exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes new files: mode must be 'w' or 'wb', got {mode!r}")
    tmp = path + PARTIAL_SUFFIX
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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
