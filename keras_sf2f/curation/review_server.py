"""Human filtering: a local web page to keep 1 to 7 images per identity, and the export.

    python trainers/review_faces.py --curated_dir=OUT

serves ``static/review.html`` on http://127.0.0.1:8765/ (Python's ``http.server``, nothing to
install). The reviewer sees one identity's candidates (the images the machine stage
accepted, background whitened), clicks or presses 1-9 to keep or drop them, and moves on
(Enter / right arrow; left arrow goes back). Every click is stored at once in
``OUT/manifest.sqlite`` (tables ``review`` and ``review_identities``), so a reload, a closed
tab or a restarted server loses nothing. "Export" (or ``--export_only``) writes the final
dataset: identities keeping at least ``min_kept`` images, in the layout
``keras_sf2f.data.prepare.prepare_voxceleb`` reads::

    <dataset_dir>/<subset>/masked_faces/<Name>/<stem>.png   (white background)
    <dataset_dir>/<subset>/origin_faces/<Name>/<stem>.png   (same alignment, original background)
    <dataset_dir>/<subset>/curation_export.json             (what was kept and dropped)

The export replaces the subset's previous export as a whole (built beside it, then swapped).

Only POST requests with a JSON body change anything (a cross-site form cannot send one),
and the server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import shutil
import threading
import time
import urllib.parse

from keras_sf2f.curation.manifest import Manifest
from keras_sf2f.files import atomic_directory

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_BODY = 64 * 1024


@dataclasses.dataclass
class ReviewSettings:
    curated_dir: str
    dataset_dir: str | None = None
    subset: str = "vox1"
    image_size: int = 224
    min_kept: int = 1
    max_kept: int = 7

    @property
    def export_root(self) -> str:
        return self.dataset_dir or os.path.join(self.curated_dir, "dataset")


def export_dataset(manifest: Manifest, settings: ReviewSettings) -> dict:
    """Writes the final dataset from the saved choices; returns a summary."""
    size = int(settings.image_size)
    root = settings.export_root
    final = os.path.join(root, settings.subset)
    state = manifest.review_state()
    # Built in a staging directory and swapped in whole: a failed export leaves the previous one.
    with atomic_directory(final) as staging:
        kept_total, identities, dropped = 0, {}, []
        for identity, n_candidates in manifest.identities_with_candidates():
            keys = state.get(identity, {}).get("kept", [])
            if len(keys) < settings.min_kept:
                dropped.append(identity)
                continue
            files = []
            for key in keys:
                rec = manifest.get(key)
                for kind in ("masked", "origin"):
                    rel = rec["outputs"].get(f"{kind}_{size}")
                    if rel is None:
                        raise ValueError(f"{key}: no {kind} image at {size} px (curated sizes: "
                                         f"{sorted(rec['outputs'])})")
                    dst = os.path.join(staging, f"{kind}_faces", identity,
                                       os.path.basename(rel))
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copyfile(os.path.join(settings.curated_dir, rel), dst)
                files.append({"key": key, "file": os.path.basename(rel),
                              "source": rec["source"]})
            identities[identity] = files
            kept_total += len(files)
        summary = {"subset": settings.subset, "image_size": size,
                   "identities": len(identities), "images": kept_total,
                   "dropped_identities": dropped, "kept": identities,
                   "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "path": os.path.abspath(final)}
        with open(os.path.join(staging, "curation_export.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    return summary


class ReviewApp:
    """The review logic behind the HTTP handler (usable without a server in tests)."""

    def __init__(self, settings: ReviewSettings):
        if not os.path.isfile(os.path.join(settings.curated_dir, "manifest.sqlite")):
            raise FileNotFoundError(f"{settings.curated_dir}: no manifest.sqlite (run "
                                    f"trainers/curate_faces.py --output_dir there first)")
        self.settings = settings
        self.manifest = Manifest(settings.curated_dir)
        self._export_lock = threading.Lock()

    def close(self):
        self.manifest.close()

    def state(self) -> dict:
        review = self.manifest.review_state()
        ids = []
        for name, n in self.manifest.identities_with_candidates():
            r = review.get(name, {"kept": [], "done": False})
            ids.append({"name": name, "candidates": n, "kept": len(r["kept"]),
                        "done": r["done"]})
        current = next((i for i, x in enumerate(ids) if not x["done"]), 0)
        s = self.settings
        return {"identities": ids, "current": current,
                "settings": {"min_kept": s.min_kept, "max_kept": s.max_kept,
                             "subset": s.subset, "image_size": s.image_size,
                             "export_root": os.path.abspath(s.export_root)}}

    def identity(self, name: str) -> dict:
        records = self.manifest.records(identity=name, status="accepted")
        if not records:
            raise KeyError(name)
        review = self.manifest.review_state().get(name, {"kept": [], "done": False})
        kept = set(review["kept"])
        cands = []
        for r in records:
            s = r["scores"] or {}
            q = urllib.parse.quote
            cands.append({
                "key": r["key"], "filename": r["filename"], "kept": r["key"] in kept,
                "masked": f"/image?key={q(r['key'])}&kind=masked",
                "origin": f"/image?key={q(r['key'])}&kind=origin",
                "info": {"size": f"{r['width']}x{r['height']}",
                         "pupils_px": s.get("interpupil_px"),
                         "pose": s.get("pose_asymmetry"),
                         "expression": s.get("expression_top"),
                         "non_neutral": s.get("non_neutral_score")}})
        return {"name": name, "candidates": cands, "done": review["done"],
                "kept": sorted(kept)}

    def image_path(self, key: str, kind: str) -> str | None:
        rec = self.manifest.get(key)
        if rec is None or rec["status"] != "accepted" or kind not in ("masked", "origin"):
            return None
        outputs = rec["outputs"] or {}
        rel = outputs.get(f"{kind}_{self.settings.image_size}")
        if rel is None:  # the largest curated size
            sizes = sorted(int(k.split("_")[1]) for k in outputs if k.startswith(kind + "_"))
            rel = outputs.get(f"{kind}_{sizes[-1]}") if sizes else None
        return os.path.join(self.settings.curated_dir, rel) if rel else None

    def keep(self, identity: str, key: str, kept: bool) -> dict:
        keys = self.manifest.set_kept(identity, key, kept, self.settings.max_kept)
        return {"identity": identity, "kept": keys}

    def done(self, identity: str, done: bool) -> dict:
        if identity not in dict(self.manifest.identities_with_candidates()):
            raise KeyError(identity)
        self.manifest.set_done(identity, done)
        return {"identity": identity, "done": bool(done)}

    def export(self) -> dict:
        with self._export_lock:
            return export_dataset(self.manifest, self.settings)


def make_handler(app: ReviewApp, log=None):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "sf2f-review/1"

        def log_message(self, fmt, *args):  # quiet by default; absl log when given
            if log:
                log("review: " + fmt % args)

        def _send(self, code: int, body: bytes, ctype: str, extra=None):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj):
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self):  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(url.query)
            try:
                if url.path in ("/", "/index.html"):
                    with open(os.path.join(STATIC_DIR, "review.html"), "rb") as f:
                        self._send(200, f.read(), "text/html; charset=utf-8")
                elif url.path == "/api/state":
                    self._json(200, app.state())
                elif url.path == "/api/identity":
                    self._json(200, app.identity(q.get("name", [""])[0]))
                elif url.path == "/image":
                    path = app.image_path(q.get("key", [""])[0], q.get("kind", ["masked"])[0])
                    if not path or not os.path.isfile(path):
                        self._json(404, {"error": "no such image"})
                        return
                    with open(path, "rb") as f:
                        self._send(200, f.read(), "image/png")
                else:
                    self._json(404, {"error": f"no such page {url.path}"})
            except KeyError as e:
                self._json(404, {"error": f"unknown identity {e}"})

        do_HEAD = do_GET  # noqa: N815

        def do_POST(self):  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
            length = int(self.headers.get("Content-Length") or 0)
            if ctype != "application/json" or length > MAX_BODY:
                self._json(415 if ctype != "application/json" else 413,
                           {"error": "send a JSON body (Content-Type: application/json)"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if url.path == "/api/keep":
                    self._json(200, app.keep(str(body["identity"]), str(body["key"]),
                                             bool(body["kept"])))
                elif url.path == "/api/done":
                    self._json(200, app.done(str(body["identity"]), bool(body["done"])))
                elif url.path == "/api/export":
                    self._json(200, app.export())
                else:
                    self._json(404, {"error": f"no such action {url.path}"})
            except ValueError as e:  # includes JSON errors and refused choices
                self._json(409, {"error": str(e)})
            except KeyError as e:
                self._json(400, {"error": f"missing or unknown {e}"})

    return Handler


class ReviewServer:
    """``http.server`` on (host, port) in a background thread; ``url`` once started."""

    def __init__(self, app: ReviewApp, host: str = "127.0.0.1", port: int = 8765, log=None):
        self.app = app
        self.httpd = http.server.ThreadingHTTPServer((host, port), make_handler(app, log))
        self.httpd.daemon_threads = True
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "ReviewServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
