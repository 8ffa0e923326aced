"""The curation manifest: one SQLite file, ``<output_dir>/manifest.sqlite``.

Table ``images``: one row per input image (key ``<identity>/<file name>``) with the decision
(``accepted`` / ``rejected`` / ``error``), the reason code, a human-readable detail, every
detection, the landmarks, the scores, the output paths (relative to the output directory),
the input's size and mtime (so a changed file is redone) and the settings fingerprint (so a
run with other thresholds redoes what they affect). Rows are written after their outputs,
in one transaction each, so an interrupted run resumes exactly where it stopped.

Tables ``review`` (per candidate: kept or not) and ``review_identities`` (per identity:
done or not) hold the human filtering; the review server writes them as the reviewer clicks.

SQLite rather than JSON Lines: a row is replaced in place when an image is redone, the
review server and a running curation can share the file (WAL mode, busy timeout), and a
crash mid-write cannot leave a torn line. ``export_jsonl`` writes the same rows as JSON
Lines for people and other tools.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time

from keras_sf2f import files

FILE_NAME = "manifest.sqlite"

# Reason codes of rejected / failed images.
REASONS = {
    "unreadable": "the file could not be decoded as an image",
    "no_face": "no face detected",
    "multiple_faces": "more than one face",
    "pupils_too_close": "pupils closer than the minimum distance",
    "landmarks_unreliable": "pupils not confirmed on the aligned face (would misalign)",
    "pose_not_frontal": "left/right landmarks do not align (head turned)",
    "expression_not_neutral": "expression classified as not neutral",
    "error": "unexpected error while processing (see detail)",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    filename TEXT NOT NULL,
    source TEXT NOT NULL,
    file_size INTEGER,
    file_mtime_ns INTEGER,
    settings TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    width INTEGER,
    height INTEGER,
    faces TEXT,
    landmarks TEXT,
    scores TEXT,
    outputs TEXT,
    processed_at TEXT,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS images_identity ON images(identity);
CREATE TABLE IF NOT EXISTS review (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    kept INTEGER NOT NULL,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS review_identity ON review(identity);
CREATE TABLE IF NOT EXISTS review_identities (
    identity TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""

_JSON_COLUMNS = ("faces", "landmarks", "scores", "outputs")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Manifest:
    """Thread-safe access to ``manifest.sqlite`` in ``output_dir``."""

    def __init__(self, output_dir: str):
        os.makedirs(output_dir, exist_ok=True)
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, FILE_NAME)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _tx(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------

    def set_meta(self, name: str, value) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)",
                       (name, json.dumps(value)))

    def get_meta(self, name: str, default=None):
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return json.loads(row["value"]) if row else default

    # -- images ----------------------------------------------------------------------------

    def put(self, record: dict) -> None:
        """Inserts or replaces the row of ``record['key']`` (JSON columns as Python values)."""
        row = dict(record)
        for c in _JSON_COLUMNS:
            if c in row and row[c] is not None:
                row[c] = json.dumps(row[c], sort_keys=True)
        cols = sorted(row)
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO images({', '.join(cols)}) VALUES "
                       f"({', '.join('?' for _ in cols)})", [row[c] for c in cols])

    @staticmethod
    def _decode(row) -> dict:
        out = dict(row)
        for c in _JSON_COLUMNS:
            if out.get(c) is not None:
                out[c] = json.loads(out[c])
        return out

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE key = ?", (key,)).fetchone()
        return self._decode(row) if row else None

    def stamps(self) -> dict:
        """key -> (file_size, file_mtime_ns, settings) of every row: what resuming compares."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, file_size, file_mtime_ns, settings FROM images").fetchall()
        return {r["key"]: (r["file_size"], r["file_mtime_ns"], r["settings"]) for r in rows}

    def records(self, identity: str | None = None, status: str | None = None) -> list:
        q, args = "SELECT * FROM images", []
        where = []
        if identity is not None:
            where.append("identity = ?")
            args.append(identity)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY identity, filename"
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [self._decode(r) for r in rows]

    def counts(self) -> dict:
        """{'accepted': n, 'rejected': {reason: n}, 'error': {reason: n}, 'identities': n}."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, reason, COUNT(*) AS n FROM images GROUP BY status, reason"
            ).fetchall()
            ids = self._db.execute("SELECT COUNT(DISTINCT identity) FROM images").fetchone()[0]
        out = {"accepted": 0, "rejected": {}, "error": {}, "identities": ids}
        for r in rows:
            if r["status"] == "accepted":
                out["accepted"] += r["n"]
            else:
                out.setdefault(r["status"], {})[r["reason"]] = r["n"]
        return out

    def export_jsonl(self, path: str) -> int:
        rows = self.records()
        with files.atomic_write(path, encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        return len(rows)

    # -- review ----------------------------------------------------------------------------

    def identities_with_candidates(self) -> list:
        """(identity, candidates) for every identity with at least one accepted image."""
        with self._lock:
            rows = self._db.execute(
                "SELECT identity, COUNT(*) AS n FROM images WHERE status = 'accepted' "
                "GROUP BY identity ORDER BY identity").fetchall()
        return [(r["identity"], r["n"]) for r in rows]

    def review_state(self) -> dict:
        """identity -> {'kept': [keys], 'done': bool}."""
        with self._lock:
            kept = self._db.execute(
                "SELECT r.identity, r.key FROM review r JOIN images i ON i.key = r.key "
                "WHERE r.kept = 1 AND i.status = 'accepted' ORDER BY r.key").fetchall()
            done = self._db.execute("SELECT identity, done FROM review_identities").fetchall()
        out = {}
        for r in kept:
            out.setdefault(r["identity"], {"kept": [], "done": False})["kept"].append(r["key"])
        for r in done:
            out.setdefault(r["identity"], {"kept": [], "done": False})["done"] = bool(r["done"])
        return out

    def set_kept(self, identity: str, key: str, kept: bool, max_kept: int | None = None) -> list:
        """Records one choice; returns the identity's kept keys. Refuses (ValueError) a key
        that is not an accepted candidate of ``identity``, or a keep beyond ``max_kept``."""
        with self._tx() as db:
            row = db.execute("SELECT identity, status FROM images WHERE key = ?",
                             (key,)).fetchone()
            if row is None or row["identity"] != identity or row["status"] != "accepted":
                raise ValueError(f"{key!r} is not a candidate of {identity!r}")
            if kept and max_kept is not None:
                n = db.execute("SELECT COUNT(*) FROM review WHERE identity = ? AND kept = 1 "
                               "AND key != ?", (identity, key)).fetchone()[0]
                if n >= max_kept:
                    raise ValueError(f"{identity!r} already keeps {n} images (at most "
                                     f"{max_kept})")
            db.execute("INSERT OR REPLACE INTO review(key, identity, kept, updated_at) "
                       "VALUES (?, ?, ?, ?)", (key, identity, int(bool(kept)), now()))
            rows = db.execute("SELECT key FROM review WHERE identity = ? AND kept = 1 "
                              "ORDER BY key", (identity,)).fetchall()
        return [r["key"] for r in rows]

    def set_done(self, identity: str, done: bool) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO review_identities(identity, done, updated_at) "
                       "VALUES (?, ?, ?)", (identity, int(bool(done)), now()))
