"""The "Try your voice" page of the development server (``export/serve.py``).

``GET /`` (or ``/index.html``) gives a page where a person records from the microphone or
drops an audio file, sees its spectrogram, hears it back and sees the face the model draws.
The page is a client of the server's own REST API like any other: it posts the WAV to
``/v1/models/<name>:predict`` (``{"instances": [{"audio": {"b64": ...}}]}``) and shows
``image_png_bytes``, and ``voice_typicality`` when the export has that output.

Its files are package data (``static/try_voice*``): no external script, font or CDN. They are
served with a Content-Security-Policy that allows only the server itself (plus ``blob:`` and
``data:`` for the recording and the face), so the page can run no code but its own.

What the page needs to know beyond the model's name (which is put into the HTML) depends on
the version being served, which can change while the page is open, so the page asks for it at
``GET /try_voice/config.json`` (see :func:`config`).
"""

from __future__ import annotations

import html
import importlib.resources
import json
import os

__all__ = ["HEADERS", "CONFIG_PATH", "DEFAULT_TYPICALITY_WARNING_BELOW", "static_file",
           "is_config_path", "config"]

# Served files: URL path -> (package file, Content-Type).
_PAGE = ("try_voice.html", "text/html; charset=utf-8")
_FILES = {
    "/": _PAGE,
    "/index.html": _PAGE,
    "/try_voice.js": ("try_voice.js", "text/javascript; charset=utf-8"),
    "/try_voice_recorder.js": ("try_voice_recorder.js", "text/javascript; charset=utf-8"),
    "/try_voice.css": ("try_voice.css", "text/css; charset=utf-8"),
}
CONFIG_PATH = "/try_voice/config.json"

# 'self' only: no inline script or style, nothing from elsewhere. blob: for the recording's
# <audio>, data: for the face (a PNG from the JSON answer). No framing, no form posts.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; "
                           "media-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
# Sent with every answer of the page (files and config): nothing is cached, so a page opened
# after an upgrade of the package or a new model version is never a stale mix.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# What the page uses when the export records no threshold (older exports); the page has the
# same default, for a config that cannot be fetched.
DEFAULT_TYPICALITY_WARNING_BELOW = 0.05
_THRESHOLD_KEY = "typicality_warning_below"


def _read(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


def static_file(path: str, model_name: str) -> tuple[str, bytes] | None:
    """``(content_type, body)`` of the page's file at the URL ``path`` (query ignored), or
    None when ``path`` is not one of them. The HTML gets the model name, HTML-escaped."""
    entry = _FILES.get(path.split("?", 1)[0])
    if entry is None:
        return None
    name, content_type = entry
    body = _read(name)
    if name == _PAGE[0]:
        body = body.replace(b"{{MODEL_NAME}}",
                            html.escape(model_name, quote=True).encode("utf-8"))
    return content_type, body


def is_config_path(path: str) -> bool:
    return path.split("?", 1)[0] == CONFIG_PATH


def _find_key(value, key: str):
    """The first value stored under ``key`` anywhere in nested dicts/lists (None if none):
    the export may record the threshold at the top level or in a section of its own."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = _find_key(child, key)
        if found is not None:
            return found
    return None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def config(manager, max_request_bytes: int | None = None) -> dict:
    """What the page needs from the version being served (``manager``: the server's
    ``ModelManager``): its number, the speech it needs, its longest audio and its typicality
    threshold; and the server's largest request (``--max_request_bytes``), so that the page can
    refuse a file too large before sending it. ``typicality_warning_below`` is null when the export records none (the page then
    warns below :data:`DEFAULT_TYPICALITY_WARNING_BELOW`); everything but the name is null while
    no version is loaded."""
    served = manager.current
    answer = {"model_name": manager.model_name,
              "predict_url": f"/v1/models/{manager.model_name}:predict",
              "version": None, "min_speech_seconds": None, "max_audio_seconds": None,
              "max_request_bytes": max_request_bytes, _THRESHOLD_KEY: None,
              "default_typicality_warning_below": DEFAULT_TYPICALITY_WARNING_BELOW}
    if served is None:
        return answer
    answer["version"] = str(served.version)
    answer["max_audio_seconds"] = served.max_audio_seconds
    try:
        with open(os.path.join(served.path, "assets.extra", "sf2f_export.json")) as f:
            exported = json.load(f)
    except (OSError, ValueError):
        return answer  # not a keras-sf2f export: nothing more is known
    pipeline = exported.get("audio_pipeline") if isinstance(exported, dict) else None
    if isinstance(pipeline, dict):
        answer["min_speech_seconds"] = _number(pipeline.get("min_speech_seconds"))
    threshold = _number(_find_key(exported, _THRESHOLD_KEY))
    if threshold is not None and 0.0 <= threshold <= 1.0:
        answer[_THRESHOLD_KEY] = threshold
    return answer
