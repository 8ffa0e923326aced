"""A DEVELOPMENT server for exported models that speaks a subset of TF-Serving's REST API.

Not for production: deploy with TensorFlow Serving itself (docs/serving.md). This exists so
that the export can be exercised end to end on a machine without Docker or
``tensorflow_model_server`` (tests, local demos), with the same URLs, JSON shapes and error
format, so that a client written against it works against TF-Serving unchanged.

What it does, as TF-Serving does:

* ``POST /v1/models/<name>[/versions/<n>]:predict`` with ``{"signature_name": ...,
  "instances": [...]}`` (row format) or ``{"inputs": ...}`` (columnar format); binary strings as
  ``{"b64": "..."}``; answers ``{"predictions": [...]}`` / ``{"outputs": ...}``, outputs whose
  name ends in ``_bytes`` base64-encoded as ``{"b64": "..."}``;
* ``GET /v1/models/<name>[/versions/<n>]`` (version status) and ``.../metadata`` (signature
  defs);
* errors as ``{"error": "<message>"}``: 400 for bad input (including every check of the serving
  graph, e.g. ``audio[0]: unsupported sample rate 7000 Hz ...``), 404 for an unknown model,
  version or path, 500 only for a failure of the server itself;
* serves the newest numeric version directory under ``model_base_path`` and polls it for new
  versions (``poll_seconds``), loading a new version in the background and switching over when
  it is ready (TF-Serving's default "latest" version policy). A version that fails to load is
  retried ``max_load_retries`` times, ``load_retry_interval`` seconds apart (TF-Serving's
  ``--max_num_load_retries`` / ``--load_retry_interval_micros``: a version whose files were
  still being copied loads once they are complete), then reported in the status and skipped.

Beyond TF-Serving: ``GET /`` is a page to try the model with one's own voice (microphone or
file; :mod:`keras_sf2f.serving.try_voice`), a client of the REST API above like any other.

Also beyond TF-Serving, for a server that must stay up on one small machine (each limit answers
with its own status and a message that names the flag):

* request bodies are bounded one by one (413 over ``max_request_bytes``) and together: the
  bodies being read, parsed and run at once hold at most ``max_inflight_request_bytes``
  (Content-Length summed). A request that does not fit waits, first come first served, up to
  ``max_queue_seconds`` (its body unread: the client's TCP window holds it), then gets 503
  with ``Retry-After``. Parsing a JSON body takes 3-7 times its size in memory, so this is what
  bounds the process, not only ``concurrent_model_calls``;
* at most ``max_items_per_request`` items per request (400 above, as TF-Serving's batching
  refuses a task larger than its ``max_batch_size``): one request cannot make the model run a
  batch of thousands;
* ``read_timeout`` seconds for a request's line and headers, and again for its body (408 and
  the connection closed; the thread is free again); the same for an idle kept-alive
  connection (closed without an answer) and for a client that does not read its answer;
* the request line and headers are parsed strictly (HTTP/1.0 and 1.1; a malformed line, a
  duplicate ``Content-Length``, ``Transfer-Encoding``, a missing ``Host`` are 4xx answers with
  a status line and a JSON body); methods other than GET and POST are 405; the ``Server``
  header names this server only;
* ``serving_default``'s audio that the graph cannot decode but ``keras_sf2f.audio.io`` can
  (FLAC, Ogg, MP3, u-law WAV, other sample rates ...) is converted to WAV first
  (``audio_formats.convert_to_wav``), as ``export/client.py`` does; TF-Serving itself refuses
  it with the graph's "not a WAV file (it looks like a FLAC file)" message.

Why the standard library's ``http.server`` and not a server library: see docs/serving.md,
section 4 (no maintained server met these needs without patching its internals either, and
TF-Serving is the production server).

Differences: no gRPC, no ``:classify`` / ``:regress``, no version labels, no batching across
requests; model calls are serialised (``concurrent_model_calls``, default 1); error texts of the
graph's assertions are reduced to the assertion's message (TF-Serving also appends the op
name). Only ``tf.saved_model.load`` is used to load models: no training code.
"""

from __future__ import annotations

import base64
import binascii
import collections
import errno
import http.client
import http.server
import io
import json
import logging
import math
import os
import re
import socket
import socketserver
import threading
import time
from typing import Any, Callable

import numpy as np

from keras_sf2f.serving import audio_formats, try_voice

log = logging.getLogger("keras_sf2f.serving.rest_server")

__all__ = ["RequestError", "ModelManager", "RestServer", "ByteBudget", "clean_error_message",
           "parse_predict_request", "format_predict_response", "convert_audio_inputs"]

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ITEMS_PER_REQUEST = 32
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<suffix>:[A-Za-z]+|/metadata)?/?$")
# Versions are int64 in TF-Serving; more digits than that is not a version (and Python's int()
# refuses strings of more than 4300 digits with a ValueError).
_VERSION = re.compile(r"[0-9]{1,18}")


class RequestError(Exception):
    """An error answered as ``{"error": message}`` with an HTTP status (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _parse_version(text: str) -> int:
    if not _VERSION.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise RequestError(400, f"Invalid version in path: {shown!r} is not a version number "
                                f"(a non-negative integer of at most 18 digits)")
    return int(text)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

class ServedVersion:
    """One loaded version: the restored SavedModel, its signature definitions and what its
    export recorded about the audio it takes (``assets.extra/sf2f_export.json``)."""

    def __init__(self, version: int, path: str):
        import tensorflow as tf  # noqa: PLC0415
        from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415
        self.version = version
        self.path = path
        self.loaded = tf.saved_model.load(path)
        proto = loader_impl.parse_saved_model(path)
        meta_graph = next(mg for mg in proto.meta_graphs if "serve" in mg.meta_info_def.tags)
        self.signature_defs = {name: sig for name, sig in meta_graph.signature_def.items()
                               if not name.startswith("__")}
        self.signatures = {name: self.loaded.signatures[name] for name in self.signature_defs}
        self.input_specs = {}
        for name, fn in self.signatures.items():
            _, kwargs = fn.structured_input_signature
            self.input_specs[name] = dict(kwargs)
        # Older exports accepted fewer rates: convert to what this version takes.
        self.sample_rates = tuple(audio_formats.SUPPORTED_RATES)
        self.max_audio_seconds: float | None = None
        try:
            with open(os.path.join(path, "assets.extra", "sf2f_export.json")) as f:
                pipeline = json.load(f).get("audio_pipeline", {})
            self.sample_rates = tuple(int(r) for r in pipeline.get("sample_rates",
                                                                   self.sample_rates))
            if pipeline.get("max_audio_seconds"):
                self.max_audio_seconds = float(pipeline["max_audio_seconds"])
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # not a keras-sf2f export: the defaults

    def metadata(self, model_name: str) -> dict:
        from google.protobuf import json_format  # noqa: PLC0415
        from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: PLC0415
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in self.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        return {
            "model_spec": {"name": model_name, "signature_name": "",
                           "version": str(self.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                sig_map, preserving_proto_field_name=True)},
        }


def _is_version_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
        os.path.join(path, "saved_model.pbtxt"))


def _numeric_versions(path: str) -> list[int]:
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(int(n) for n in names if _VERSION.fullmatch(n) and int(n) > 0
                  and _is_version_dir(os.path.join(path, n)))


def check_model_base_path(base_path: str) -> None:
    """Refuses a ``--model_base_path`` that cannot be right, with what to give instead."""
    path = os.path.abspath(base_path)
    if _is_version_dir(path):
        parent = os.path.dirname(path)
        raise ValueError(
            f"--model_base_path={base_path} is a version directory (it holds saved_model.pb); "
            f"give the directory that holds the numeric versions: --model_base_path={parent}")
    if not os.path.exists(path):
        raise ValueError(f"--model_base_path={base_path} does not exist (export a model there "
                         f"first: export/export_savedmodel.py --export_dir={base_path})")
    if not os.path.isdir(path):
        raise ValueError(f"--model_base_path={base_path} is not a directory")


class ModelManager:
    """Keeps the newest version of ``<base_path>/<n>/`` loaded, polling for new ones.

    A load that fails is retried ``max_load_retries`` times, ``load_retry_interval`` seconds
    apart (checked at each poll), as TF-Serving does; meanwhile the version's status is
    LOADING with the last error, afterwards END with it. ``clock`` (monotonic seconds) is
    injectable for tests.
    """

    def __init__(self, base_path: str, model_name: str, poll_seconds: float = 2.0,
                 max_load_retries: int = 5, load_retry_interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.base_path = os.path.abspath(base_path)
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.max_load_retries = int(max_load_retries)
        self.load_retry_interval = float(load_retry_interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ServedVersion | None = None
        self._status: dict[int, tuple[str, str]] = {}   # version -> (state, error)
        self._failures: dict[int, tuple[int, float]] = {}  # version -> (attempts, retry at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded_once = threading.Event()
        self._last_note = ""

    @property
    def current(self) -> ServedVersion | None:
        with self._lock:
            return self._current

    def version_status(self) -> dict:
        with self._lock:
            return dict(self._status)

    def _versions_on_disk(self) -> list[int]:
        return _numeric_versions(self.base_path)

    def _note(self, message: str) -> None:
        """Logs a "nothing to serve" state once, not at every poll."""
        if message != self._last_note:
            self._last_note = message
            if message:
                log.warning("%s", message)

    def _nothing_to_serve(self) -> str:
        if not os.path.isdir(self.base_path):
            return (f"{self.base_path} does not exist (any more); waiting for it and for a "
                    f"version under it")
        hint = ""
        try:
            models = sorted(n for n in os.listdir(self.base_path)
                            if _numeric_versions(os.path.join(self.base_path, n)))
        except OSError:
            models = []
        if models:
            hint = (f"; it holds model directories ({', '.join(models[:5])}): did you mean "
                    f"--model_base_path={os.path.join(self.base_path, models[0])}?")
        return (f"no versions of {self.model_name} under {self.base_path} yet (numeric "
                f"sub-directories holding saved_model.pb){hint}; waiting for one")

    def _due(self, version: int, now: float) -> bool:
        """Whether ``version`` may be (re)tried now."""
        if version not in self._failures:
            return True
        attempts, retry_at = self._failures[version]
        return attempts <= self.max_load_retries and now >= retry_at

    def poll_once(self) -> None:
        """Loads the newest version that is newer than the current one and not failed (or whose
        retry is due)."""
        versions = self._versions_on_disk()
        current = self.current
        now = self._clock()
        with self._lock:
            due = [v for v in versions if (current is None or v > current.version)
                   and self._due(v, now)]
        if not due:
            if current is None and not versions:
                self._note(self._nothing_to_serve())
            elif current is not None and current.version not in versions:
                self._note(f"version {current.version} of {self.model_name} was removed from "
                           f"disk; keeping it loaded until a newer one appears")
            return
        self._note("")
        self._load(due[-1])

    def _load(self, version: int) -> None:
        attempts = self._failures.get(version, (0, 0.0))[0]
        total = self.max_load_retries + 1
        with self._lock:
            self._status[version] = ("LOADING", self._status.get(version, ("", ""))[1])
        path = os.path.join(self.base_path, str(version))
        started = time.time()
        try:
            served = ServedVersion(version, path)
        except Exception as e:  # noqa: BLE001 - any failure is reported, never fatal
            attempts += 1
            text = str(e).strip()
            error = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
            with self._lock:
                self._failures[version] = (attempts, self._clock() + self.load_retry_interval)
                if attempts < total:
                    message = (f"failed to load {path} (attempt {attempts} of {total}; retrying "
                               f"in {self.load_retry_interval:g} s): {error}")
                    self._status[version] = ("LOADING", message)
                else:
                    message = f"failed to load {path} after {attempts} attempt(s): {error}"
                    self._status[version] = ("END", message)
            log.error("%s", message)
            return
        with self._lock:
            old = self._current
            self._current = served
            self._failures.pop(version, None)
            self._status[version] = ("AVAILABLE", "")
            if old is not None:
                self._status[old.version] = ("END", "")
        self._loaded_once.set()
        log.info("serving %s version %d (loaded in %.1f s)", self.model_name, version,
                 time.time() - started)

    def start(self) -> None:
        def loop():
            while not self._stop.is_set():
                try:
                    self.poll_once()
                except Exception:  # noqa: BLE001
                    log.exception("polling %s failed", self.base_path)
                self._stop.wait(self.poll_seconds)

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded_once.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _unknown_model(self, name: str, version: str | None) -> RequestError:
        what = f"Specific({name}, {version})" if version else f"Latest({name})"
        return RequestError(404, f"Servable not found for request: {what}; this server serves "
                                 f"one model: {self.model_name} (GET /v1/models/"
                                 f"{self.model_name} for its versions)")

    def resolve(self, name: str, version: str | None) -> ServedVersion:
        if name != self.model_name:
            raise self._unknown_model(name, version)
        current = self.current
        if version is not None:
            number = _parse_version(version)
            if current is None or current.version != number:
                serving = f"; version {current.version} is served" if current else ""
                raise RequestError(404, f"Servable not found for request: "
                                        f"Specific({name}, {number}){serving}")
            return current
        if current is None:
            raise RequestError(404, f"Servable not found for request: Latest({name}); no "
                                    f"version is loaded yet")
        return current

    def status(self, name: str, version: str | None) -> dict:
        """The answer to ``GET /v1/models/<name>[/versions/<n>]``."""
        if name != self.model_name:
            raise RequestError(404, f"Could not find any versions of model {name}; this server "
                                    f"serves one model: {self.model_name}")
        statuses = self.version_status()
        if version is not None:
            number = _parse_version(version)
            if number not in statuses:
                raise RequestError(404, f"Could not find version {number} of model {name}")
            statuses = {number: statuses[number]}
        if not statuses:
            raise RequestError(404, f"Could not find any versions of model {name}")
        return {"model_version_status": [
            {"version": str(v), "state": state,
             "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
            for v, (state, error) in sorted(statuses.items(), reverse=True)]}


# --------------------------------------------------------------------------------------------
# Request / response conversion
# --------------------------------------------------------------------------------------------

def _decode_leaves(value: Any, where: str, string_input: bool):
    """JSON value -> nested lists with ``{"b64": ...}`` replaced by bytes (and, for string
    inputs, text by UTF-8 bytes). Raises RequestError on malformed objects."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise RequestError(400, f"{where}: a JSON object in a tensor value must be "
                                    f'{{"b64": "<base64 string>"}}, got keys {sorted(value)}')
        if not string_input:
            raise RequestError(400, f"{where}: binary ({{\"b64\"}}) value given for a "
                                    f"numeric input")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise RequestError(400, f"{where}: invalid base64 data ({e})") from None
    if isinstance(value, list):
        return [_decode_leaves(v, where, string_input) for v in value]
    if isinstance(value, str):
        if not string_input:
            raise RequestError(400, f"{where}: string value {value[:40]!r} given for a "
                                    f"numeric input")
        return value.encode("utf-8")
    if value is None:
        raise RequestError(400, f"{where}: null is not a tensor value")
    if isinstance(value, bool):
        if string_input:
            raise RequestError(400, f"{where}: boolean given for a string input")
        return value
    if isinstance(value, (int, float)):
        if string_input:
            raise RequestError(400, f"{where}: number given for a string input (binary data "
                                    f'must be sent as {{"b64": "..."}})')
        return value
    raise RequestError(400, f"{where}: unsupported JSON value of type {type(value).__name__}")


def _shape_of(value, where: str) -> tuple:
    """Shape of a nested list, checking that it is rectangular."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_shape_of(v, where) for v in value}
    if len(shapes) != 1:
        raise RequestError(400, f"{where}: the nested lists are not rectangular (elements of "
                                f"different lengths); every dimension of a tensor must have a "
                                f"fixed size")
    return (len(value),) + shapes.pop()


def _numbers_fast(value) -> np.ndarray | None:
    """A rectangular list of JSON numbers as float64 in one numpy call (what millions of
    waveform samples need: the element-wise walk below takes ~10x the time and memory); None
    when anything else is in it (strings, objects, null, ragged lists), which the walk then
    reports. The caller has ruled out booleans, which numpy would take as 0/1."""
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in "if":
        return None
    return array.astype(np.float64, copy=False)


def _to_array(value, spec, where: str, may_hold_bool: bool = True) -> np.ndarray:
    import tensorflow as tf  # noqa: PLC0415
    dtype = tf.as_dtype(spec.dtype)
    string_input = dtype == tf.string
    raw = None if string_input or may_hold_bool else _numbers_fast(value)
    if raw is not None:
        shape = raw.shape
    else:
        decoded = _decode_leaves(value, where, string_input)
        shape = _shape_of(decoded, where)
    if string_input:
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        flat[:] = list(_flatten(decoded)) if shape else [decoded]
        array = flat.reshape(shape)
    else:
        if raw is None:
            leaves = list(_flatten(decoded)) if shape else [decoded]
            if any(isinstance(v, bool) for v in leaves) and dtype != tf.bool:
                raise RequestError(400, f"{where}: boolean values given for a {dtype.name} "
                                        f"input")
            raw = np.asarray(leaves, dtype=np.float64).reshape(shape)
        if dtype.is_integer:
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise RequestError(400, f"{where}: expected integers ({dtype.name})")
            if np.any(raw < dtype.min) or np.any(raw > dtype.max):
                raise RequestError(400, f"{where}: value out of range for {dtype.name}")
        with np.errstate(over="ignore"):  # 1e39 -> inf: the graph's finite check reports it
            array = raw.astype(dtype.as_numpy_dtype)
    expected = spec.shape
    if expected.rank is not None:
        if len(shape) != expected.rank or any(
                d is not None and d != s for d, s in zip(expected.as_list(), shape)):
            wanted = "[" + ", ".join("-1" if d is None else str(d)
                                     for d in expected.as_list()) + "]"
            raise RequestError(400, f"{where}: expected a tensor of shape {wanted} "
                                    f"({dtype.name}), got shape {list(shape)}")
    return array


def _flatten(value):
    if isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _json_int(text: str):
    """JSON integers as Python ints, except those longer than any tensor value can be: Python's
    int() refuses more than 4300 digits (ValueError), and more than 300 digits is beyond
    float64 anyway, so those become float (inf), which the numeric checks then report."""
    return int(text) if len(text) <= 300 else float(text)


def parse_predict_request(body: bytes, served: ServedVersion,
                          max_items: int | None = None):
    """-> (signature_name, {input: np.ndarray}, row_format).

    ``max_items``: most items (first dimension of each batched input) per request."""
    try:
        request = json.loads(body, parse_int=_json_int)
    except RecursionError:
        raise RequestError(400, "JSON Parse error: nesting too deep") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, ...
        raise RequestError(400, f"JSON Parse error: {str(e)[:300]}") from None
    # Booleans are rare in tensor requests; without a true/false token anywhere (a cheap scan
    # of the bytes), numbers can be converted in one numpy call.
    may_hold_bool = b"true" in body or b"false" in body
    if not isinstance(request, dict):
        raise RequestError(400, "the request body must be a JSON object with an 'instances' or "
                                "'inputs' key")
    unknown = sorted(set(request) - {"signature_name", "instances", "inputs"})
    if unknown:
        raise RequestError(400, f"unknown keys in the request: {unknown} (expected "
                                f"signature_name and instances or inputs)")
    signature = request.get("signature_name", "serving_default")
    if not isinstance(signature, str):
        raise RequestError(400, "signature_name must be a string")
    if signature not in served.signatures:
        raise RequestError(400, f'Serving signature name: "{signature}" not found in signature '
                                f"def; available: {sorted(served.signatures)}")
    specs = served.input_specs[signature]
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances == has_inputs:
        raise RequestError(400, "Missing 'inputs' or 'instances' key" if not has_instances else
                                "the request must have either 'instances' or 'inputs', "
                                "not both")
    names = sorted(specs)
    arrays = {}
    if has_instances:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError(400, "'instances' must be a non-empty list")
        if all(isinstance(item, dict) and "b64" not in item for item in instances):
            for index, item in enumerate(instances):
                if sorted(item) != names:
                    raise RequestError(400, f"instances[{index}]: expected the inputs {names} "
                                            f"of signature {signature}, got {sorted(item)}")
            columns = {name: [item[name] for item in instances] for name in names}
        elif any(isinstance(item, dict) and "b64" not in item for item in instances):
            raise RequestError(400, "instances must be all objects (named inputs) or all "
                                    "values (a single-input signature)")
        else:
            if len(names) != 1:
                raise RequestError(400, f"signature {signature} has inputs {names}: each "
                                        f"instance must be an object with those keys")
            columns = {names[0]: instances}
        for name in names:
            arrays[name] = _to_array(columns[name], specs[name], f"input {name}",
                                     may_hold_bool)
    else:
        inputs = request["inputs"]
        if isinstance(inputs, dict) and "b64" not in inputs:
            if sorted(inputs) != names:
                raise RequestError(400, f"inputs: expected {names} for signature {signature}, "
                                        f"got {sorted(inputs)}")
        else:
            if len(names) != 1:
                raise RequestError(400, f"signature {signature} has inputs {names}: 'inputs' "
                                        f"must be an object with those keys")
            inputs = {names[0]: inputs}
        for name in names:
            arrays[name] = _to_array(inputs[name], specs[name], f"input {name}",
                                     may_hold_bool)
    if max_items:
        for name, array in arrays.items():
            if array.ndim and array.shape[0] > max_items:
                raise RequestError(400, f"input {name} holds {array.shape[0]} items; this "
                                        f"development server takes at most {max_items} per "
                                        f"request (--max_items_per_request): split the request")
    return signature, arrays, has_instances


def convert_audio_inputs(arrays: dict, served: ServedVersion) -> dict:
    """Converts ``audio`` items that the graph cannot decode but the project's audio loader can
    (FLAC, Ogg, MP3, AIFF, u-law/ADPCM WAV, WAV at other rates ...) to a WAV the graph takes.

    WAV files that the graph decodes, broken WAV files (the graph names their problem) and
    bytes that are no known audio format (the graph says what they look like) pass unchanged.
    Raises RequestError (400) for a known audio format that cannot be decoded, or audio longer
    than the export's maximum (checked before decoding, which bounds the memory)."""
    audio = arrays.get("audio")
    if audio is None or audio.dtype != object or audio.ndim != 1:
        return arrays
    converted = None
    for index, item in enumerate(audio):
        if not isinstance(item, bytes):
            continue
        verdict = audio_formats.inspect_wav(item, served.sample_rates)
        if verdict.verdict in (audio_formats.OK, audio_formats.BROKEN):
            continue
        what, is_audio = audio_formats.sniff(item)
        if verdict.verdict == audio_formats.NOT_WAV and not is_audio and what is not None:
            continue  # text, images ...: the graph's message says what they are
        try:
            wav = audio_formats.convert_to_wav(
                item, f"audio[{index}]", rates=served.sample_rates,
                max_seconds=served.max_audio_seconds, allow_ffmpeg=False)
        except audio_formats.ConversionError as e:
            if verdict.verdict == audio_formats.CONVERT or is_audio:
                raise RequestError(400, f"{e} (the development server converts audio files "
                                        f"that are not WAV, or that the model cannot decode, "
                                        f"with the project's audio loader)") from None
            continue  # unknown bytes: the graph's "not a WAV file" message
        if converted is None:
            converted = audio.copy()
        converted[index] = wav
        log.debug("audio[%d]: converted to a float WAV (%s)", index,
                  verdict.detail or what or "not a WAV file")
    if converted is not None:
        arrays = dict(arrays, audio=converted)
    return arrays


def _json_value(value, binary: bool):
    """A numpy output (array or scalar) as JSON; bytes as {"b64": ...} for ``*_bytes`` outputs
    (and for any bytes that are not UTF-8), else as text."""
    def convert(x):
        if isinstance(x, bytes):
            if not binary:
                try:
                    return x.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(x).decode("ascii")}
        if isinstance(x, np.generic):
            return x.item()
        return x

    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind == "S":
            if value.ndim == 0:
                return convert(value.item())
            return np.vectorize(convert, otypes=[object])(value).tolist()
        return value.tolist()
    return convert(value)


def format_predict_response(outputs: dict, row_format: bool) -> dict:
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    binary = {name: name.endswith("_bytes") for name in arrays}
    if row_format:
        batch = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(batch) != 1 or None in batch:
            raise RequestError(500, "outputs do not share a batch dimension; use the columnar "
                                    "'inputs' format")
        n = batch.pop()
        if len(arrays) == 1:
            (name, array), = arrays.items()
            return {"predictions": [_json_value(array[i], binary[name]) for i in range(n)]}
        return {"predictions": [{name: _json_value(array[i], binary[name])
                                 for name, array in sorted(arrays.items())}
                                for i in range(n)]}
    if len(arrays) == 1:
        (name, array), = arrays.items()
        return {"outputs": _json_value(array, binary[name])}
    return {"outputs": {name: _json_value(array, binary[name])
                        for name, array in sorted(arrays.items())}}


_ASSERTION = re.compile(r"assertion failed: \[(.*)\]\s*$", re.M)


def clean_error_message(message: str) -> str:
    """The useful part of a TensorFlow runtime error: an assertion's own message, else the
    error text without the Python stack and the op annotations."""
    match = _ASSERTION.search(message)
    if match:
        return match.group(1)
    chunks = [c for c in message.split("\n\n") if c.strip()]
    text = chunks[-1] if chunks else message
    text = re.sub(r"\s*\[\[\{\{.*$", "", text, flags=re.S)
    text = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text)
    return text.strip() or message.strip()


# --------------------------------------------------------------------------------------------
# Memory: a budget on the request bodies in flight
# --------------------------------------------------------------------------------------------

class ByteBudget:
    """At most ``capacity`` bytes held at once, granted first come, first served.

    FIFO so that a large request is not starved by a stream of small ones. A request larger
    than the capacity is granted alone (the server refuses such bodies with 413 before asking,
    so this only matters when the budget is set below ``max_request_bytes``).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.used = 0
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()

    def acquire(self, nbytes: int, timeout: float) -> bool:
        """Waits up to ``timeout`` s for room; True when ``nbytes`` are granted."""
        nbytes = min(int(nbytes), self.capacity)
        ticket = object()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.used + nbytes > self.capacity:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self.used += nbytes
                return True
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.used -= min(int(nbytes), self.capacity)
            self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

# RFC 9110/9112 grammar: method and header names are tokens; the request target has no
# whitespace; header values have no CR, LF or NUL (and no obsolete line folding).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\s]+) (HTTP/[0-9]\.[0-9])\r?\n")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\r\n\x00]*?)[ \t]*\r?\n")
_MAX_LINE = 8192
_MAX_HEADERS = 100
# Most bytes of an unread body read and dropped before closing (about a second on loopback).
_DRAIN_BYTES = 1024 * 1024 * 1024
_ALLOWED_METHODS = ("GET", "POST")


class _ReadTimeout(Exception):
    """The client did not send its request within the read timeout."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection. The socket plumbing is the standard library's; the request line and
    headers are parsed here (strictly), reads have deadlines and every answer is JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "keras-sf2f-dev-server"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True

    # Set by RestServer.
    manager: ModelManager
    max_request_bytes: int
    max_items_per_request: int
    read_timeout: float
    max_queue_seconds: float
    call_semaphore: threading.Semaphore
    budget: ByteBudget

    def version_string(self):
        # The standard library appends "Python/3.x.y": no need to tell clients that.
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("%s - %s", self.address_string(), format % args)

    # ---------------------------------------------------------------------------------------
    # Reading with deadlines
    # ---------------------------------------------------------------------------------------

    def _arm(self) -> None:
        """Sets the socket timeout to what is left of the current deadline. Each read below
        does at most one recv, so a client that trickles bytes cannot stretch the deadline."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _ReadTimeout(f"request incomplete after {self.read_timeout:g} s")
        self.connection.settimeout(remaining)

    def _readline(self) -> bytes:
        """One line (with its LF) of at most _MAX_LINE + 1 bytes; b"" at end of stream."""
        line = bytearray()
        while len(line) <= _MAX_LINE:
            self._arm()
            try:
                buffered = self.rfile.peek(1)  # at most one recv
            except (TimeoutError, socket.timeout):
                raise _ReadTimeout(f"request line and headers incomplete after "
                                   f"{self.read_timeout:g} s") from None
            if not buffered:
                break
            end = buffered.find(b"\n")
            take = len(buffered) if end < 0 else end + 1
            line += self.rfile.read(min(take, _MAX_LINE + 1 - len(line)))
            if line.endswith(b"\n"):
                break
        return bytes(line)

    def _read_body(self, length: int) -> bytearray:
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        while got < length:
            self._arm()
            try:
                n = self.rfile.readinto1(view[got:])  # at most one recv
            except (TimeoutError, socket.timeout):
                raise _ReadTimeout(f"request body incomplete after {self.read_timeout:g} s: "
                                   f"got {got} of {length} bytes") from None
            if not n:
                self.close_connection = True
                raise RequestError(400, f"request body truncated: got {got} of {length} bytes "
                                        f"before the client closed the connection")
            got += n
        return body

    def _drain(self, length: int, seconds: float = 5.0):
        """Reads (and drops, 64 KB at a time) an unread body before closing, so that a client
        still sending it gets the answer instead of a connection reset."""
        deadline = time.monotonic() + min(seconds, self.read_timeout)
        remaining = min(length, _DRAIN_BYTES)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                self.connection.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except (OSError, ValueError):
            pass

    # ---------------------------------------------------------------------------------------
    # Answers
    # ---------------------------------------------------------------------------------------

    def send_response(self, code, message=None):
        self._answered = True
        super().send_response(code, message)

    def _send_json(self, status: int, payload: dict, close: bool = False,
                   headers: dict | None = None):
        try:
            body = json.dumps(payload, allow_nan=True).encode("utf-8")
        except (TypeError, ValueError) as e:
            status, body = 500, json.dumps({"error": f"cannot encode response: {e}"}).encode()
        self._send_body(status, body, "application/json", close, headers)

    def _send_body(self, status: int, body: bytes, content_type: str, close: bool = False,
                   headers: dict | None = None):
        # A client that does not read its answer is dropped after read_timeout.
        self.connection.settimeout(self.read_timeout)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has no body, whatever its status
            self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        """Protocol-level errors as JSON too, and the connection closed."""
        try:
            self._send_json(code, {"error": message or explain or "bad request"}, close=True)
        except OSError:
            self.close_connection = True

    def _error(self, error: RequestError, close: bool = False):
        self._send_json(error.status, {"error": error.message}, close=close,
                        headers=error.headers)

    def _refuse_unread_body(self, error: RequestError):
        """Answers before reading the body, which makes the connection unusable: closes it,
        after draining the body unless the client waits for "100 Continue" to send it."""
        self._error(error, close=True)
        self._drain_unread_body()

    def _drain_unread_body(self):
        if self.headers.get("Expect", "").strip().lower() == "100-continue":
            return
        values = self.headers.get_all("Content-Length") or []
        text = values[0].strip() if len(values) == 1 else ""
        if self.headers.get_all("Transfer-Encoding") or not re.fullmatch(r"[0-9]{1,18}", text):
            self._drain(_DRAIN_BYTES)  # unknown length: until the client stops or the limit
        else:
            self._drain(int(text))

    # ---------------------------------------------------------------------------------------
    # The request line and headers
    # ---------------------------------------------------------------------------------------

    def handle_one_request(self):
        self.close_connection = True
        self.command, self.request_version, self.requestline = None, "HTTP/1.1", ""
        self._answered = False
        # Between requests: an idle client is dropped without an answer (an unsolicited 408
        # would be read as the answer to the client's next request).
        try:
            self.connection.settimeout(self.read_timeout)
            if not self.rfile.peek(1):
                return
        except (OSError, ValueError):
            return
        self._deadline = time.monotonic() + self.read_timeout
        try:
            if not self._parse_head():
                return
            if self.command in _ALLOWED_METHODS:
                getattr(self, "do_" + self.command)()
            else:
                self._method_not_allowed()
            self.wfile.flush()
        except _ReadTimeout as e:
            self.close_connection = True
            if not self._answered:
                self.send_error(408, f"{e}; the connection is closed (--read_timeout_seconds)")
        except OSError:  # the client went away, or does not read its answer
            self.close_connection = True

    def _parse_head(self) -> bool:
        line = self._readline()
        for _ in range(4):  # empty lines before a request line are to be ignored (RFC 9112)
            if line not in (b"\r\n", b"\n"):
                break
            line = self._readline()
        self.raw_requestline = line
        if not line:
            return False
        self.requestline = line[:200].decode("latin-1").rstrip("\r\n")
        if len(line) > _MAX_LINE:
            self.send_error(414, f"request line longer than {_MAX_LINE} bytes")
            return False
        match = _REQUEST_LINE.fullmatch(line)
        if not match:
            self.send_error(400, f"malformed request line {self.requestline[:100]!r}: expected "
                                 f"'METHOD /path HTTP/1.1'")
            return False
        method, target, version = (part.decode("latin-1") for part in match.groups())
        self.command, self.path = method, target
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, f"unsupported protocol version {version}: this server speaks "
                                 f"HTTP/1.0 and HTTP/1.1")
            return False
        self.request_version = version
        lines = []
        while True:
            header = self._readline()
            if not header:
                return False  # the client closed mid-headers: nobody to answer
            if header in (b"\r\n", b"\n"):
                break
            if len(header) > _MAX_LINE:
                self.send_error(431, f"a header line is longer than {_MAX_LINE} bytes")
                return False
            if len(lines) >= _MAX_HEADERS:
                self.send_error(431, f"more than {_MAX_HEADERS} header lines")
                return False
            if not _HEADER_LINE.fullmatch(header):
                shown = header[:60].decode("latin-1").rstrip("\r\n")
                self.send_error(400, f"malformed header line {shown!r} (expected 'Name: "
                                     f"value'; no space before the colon, no line folding)")
                return False
            lines.append(header)
        self.headers = http.client.parse_headers(io.BytesIO(b"".join(lines) + b"\r\n"))
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1 or (version == "HTTP/1.1" and not hosts):
            self.send_error(400, "an HTTP/1.1 request needs exactly one Host header")
            return False
        connection = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        self.close_connection = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection)
        return True

    def _has_body(self) -> bool:
        return bool(self.headers.get_all("Transfer-Encoding")) or any(
            v.strip() not in ("", "0") for v in self.headers.get_all("Content-Length") or [])

    def _method_not_allowed(self):
        error = RequestError(405, f"method {self.command} is not supported; use GET (model "
                                  f"status, metadata) or POST (:predict)",
                             {"Allow": ", ".join(_ALLOWED_METHODS)})
        if self._has_body():
            self._refuse_unread_body(error)
        else:
            self._error(error)

    def _content_length(self) -> int:
        if self.headers.get_all("Transfer-Encoding"):
            if "chunked" in ",".join(self.headers.get_all("Transfer-Encoding")).lower():
                raise RequestError(411, "chunked request bodies are not supported; send a "
                                        "Content-Length")
            raise RequestError(400, "Transfer-Encoding is not supported; send the body as is "
                                    "with a Content-Length")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise RequestError(411, "Content-Length required")
        if len(values) > 1:
            raise RequestError(400, f"{len(values)} Content-Length headers; send exactly one")
        text = values[0].strip()
        if not re.fullmatch(r"[0-9]+", text):
            raise RequestError(400, f"invalid Content-Length {text[:40]!r}")
        if len(text) > 18 or int(text) > self.max_request_bytes:
            raise RequestError(413, f"request body of {text if len(text) <= 40 else 'over 10^40'}"
                                    f" bytes exceeds the limit of {self.max_request_bytes} "
                                    f"bytes (--max_request_bytes)")
        return int(text)

    # ---------------------------------------------------------------------------------------
    # Routes
    # ---------------------------------------------------------------------------------------

    def _route(self):
        path = self.path.split("?", 1)[0]
        match = _PATH.match(path)
        if not match:
            raise RequestError(404, f"Malformed request: {self.command} {path[:200]}")
        if match.group("label"):
            raise RequestError(404, "version labels are not supported by this development "
                                    "server (TF-Serving supports them with a models.config)")
        return match.group("name"), match.group("version"), match.group("suffix")

    def do_GET(self):  # noqa: N802 - http.server naming
        # A GET with a body is not read: answer, then close (the body is not a next request).
        close = self._has_body()
        page, headers = None, None
        try:
            # The "Try your voice" page (try_voice.py): its files, and its config as JSON.
            page = try_voice.static_file(self.path, self.manager.model_name)
            if page is None and try_voice.is_config_path(self.path):
                payload = try_voice.config(self.manager, self.max_request_bytes)
                headers = try_voice.HEADERS
            elif page is None:
                name, version, suffix = self._route()
                if suffix not in (None, "/metadata"):
                    raise RequestError(405, f"{suffix} needs POST", {"Allow": "POST"})
                if suffix == "/metadata":
                    payload = self.manager.resolve(name, version).metadata(name)
                else:
                    payload = self.manager.status(name, version)
            status = 200
        except RequestError as e:
            status, payload = e.status, {"error": e.message}
        except Exception as e:  # noqa: BLE001 - never leave a request unanswered
            log.exception("GET %s failed", self.path)
            status, payload = 500, {"error": f"internal error: {type(e).__name__}: {e}"}
        if page is not None:
            content_type, body = page
            self._send_body(status, body, content_type, close=close, headers=try_voice.HEADERS)
        else:
            self._send_json(status, payload, close=close, headers=headers)
        if close:
            self._drain_unread_body()

    def do_POST(self):  # noqa: N802
        try:
            length = self._content_length()
        except RequestError as e:
            self._refuse_unread_body(e)
            return
        expect = self.headers.get("Expect", "").strip().lower()
        if expect and expect != "100-continue":
            self._refuse_unread_body(RequestError(417, f"unsupported Expect: {expect[:40]}"))
            return
        # Memory: the body is read only when it fits in the budget; until then it waits in
        # the client's socket (with Expect: 100-continue, in the client).
        if not self.budget.acquire(length, self.max_queue_seconds):
            retry = max(1, math.ceil(self.max_queue_seconds / 4))
            self._refuse_unread_body(RequestError(
                503, f"the server is busy: request bodies of {self.budget.capacity} bytes in "
                     f"total are being processed (--max_inflight_request_bytes) and this one "
                     f"waited {self.max_queue_seconds:g} s (--max_queue_seconds); retry later",
                {"Retry-After": str(retry)}))
            return
        try:
            if expect == "100-continue" and self.request_version == "HTTP/1.1":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # The body gets its own read_timeout, counted from now (not from the headers:
            # the request may have waited for the budget).
            self._deadline = time.monotonic() + self.read_timeout
            self._predict(self._read_body(length))  # _predict holds the only reference
        except RequestError as e:
            self._error(e, close=self.close_connection)
        finally:
            self.budget.release(length)

    def _predict(self, body: bytearray):
        try:
            name, version, suffix = self._route()
            if suffix != ":predict":
                if suffix in (":classify", ":regress"):
                    raise RequestError(400, f"{suffix[1:]} is not supported by this development "
                                            f"server (only :predict)")
                raise RequestError(404 if suffix is None or suffix == "/metadata" else 400,
                                   f"Malformed request: POST {self.path[:200]}")
            served = self.manager.resolve(name, version)
            signature, arrays, row_format = parse_predict_request(body, served,
                                                                  self.max_items_per_request)
            del body  # the parsed arrays are all that is needed from here on
            if signature == "serving_default":
                arrays = convert_audio_inputs(arrays, served)
            outputs = self._call(served, signature, arrays)
            del arrays
            self._send_json(200, format_predict_response(outputs, row_format))
        except RequestError as e:
            self._error(e)
        except RecursionError:
            self._send_json(400, {"error": "request nesting too deep"})
        except Exception as e:  # noqa: BLE001 - never leave a request unanswered
            log.exception("POST %s failed", self.path)
            self._send_json(500, {"error": f"internal error: {type(e).__name__}: {e}"})

    def _call(self, served: ServedVersion, signature: str, arrays: dict) -> dict:
        import tensorflow as tf  # noqa: PLC0415
        try:
            tensors = {name: tf.constant(array, dtype=served.input_specs[signature][name].dtype)
                       for name, array in arrays.items()}
        except (TypeError, ValueError) as e:
            raise RequestError(400, f"cannot convert the inputs: {e}") from None
        with self.call_semaphore:
            try:
                outputs = served.signatures[signature](**tensors)
            except tf.errors.InvalidArgumentError as e:
                raise RequestError(400, clean_error_message(e.message)) from None
            except tf.errors.ResourceExhaustedError as e:
                raise RequestError(413, clean_error_message(e.message)) from None
            except tf.errors.OpError as e:
                raise RequestError(500, clean_error_message(e.message)) from None
            except (TypeError, ValueError) as e:
                raise RequestError(400, str(e).splitlines()[0][:500]) from None
        return {name: value.numpy() for name, value in outputs.items()}


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Listen backlog; socketserver's default of 5 makes a burst of new connections wait ~1 s
    # for SYN retransmits (the kernel caps it at net.core.somaxconn).
    request_queue_size = 256

    def server_bind(self):
        # HTTPServer.server_bind also looks the host's name up (socket.getfqdn), which can wait
        # for DNS; the name is not used.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port


class RestServer:
    """The HTTP server plus the model manager; ``start()`` runs both in threads."""

    def __init__(self, model_base_path: str, model_name: str, host: str = "127.0.0.1",
                 port: int = 8501, poll_seconds: float = 2.0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 concurrent_model_calls: int = 1, max_load_retries: int = 5,
                 load_retry_interval: float = 60.0,
                 max_inflight_request_bytes: int | None = None,
                 max_queue_seconds: float = 120.0, read_timeout: float = 30.0,
                 max_items_per_request: int = DEFAULT_MAX_ITEMS_PER_REQUEST):
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", model_name or ""):
            raise ValueError(f"model name {model_name!r} must be letters, digits, _ . -")
        for name, value in (("poll_seconds", poll_seconds), ("read_timeout", read_timeout),
                            ("max_queue_seconds", max_queue_seconds)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        inflight = int(max_inflight_request_bytes or max_request_bytes)
        if inflight < max_request_bytes:
            raise ValueError(f"--max_inflight_request_bytes={inflight} is smaller than "
                             f"--max_request_bytes={max_request_bytes}: the largest accepted "
                             f"request could never be read")
        check_model_base_path(model_base_path)
        self.manager = ModelManager(model_base_path, model_name, poll_seconds,
                                    max_load_retries, load_retry_interval)
        handler = type("Handler", (_Handler,), {
            "manager": self.manager, "max_request_bytes": int(max_request_bytes),
            "max_items_per_request": int(max_items_per_request),
            "read_timeout": float(read_timeout),
            "max_queue_seconds": float(max_queue_seconds),
            "call_semaphore": threading.Semaphore(max(1, int(concurrent_model_calls))),
            "budget": ByteBudget(inflight)})
        try:
            self.httpd = _HTTPServer((host, port), handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise OSError(e.errno, f"cannot listen on {host}:{port}: port {port} is "
                                       f"already in use (another server, perhaps TF-Serving "
                                       f"or a second serve.py, listens there); choose another "
                                       f"with --rest_api_port") from None
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}") \
                from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, wait_for_model: float | None = None) -> "RestServer":
        self.manager.poll_once()
        self.manager.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                        daemon=True)
        self._thread.start()
        if wait_for_model:
            self.manager.wait_until_loaded(wait_for_model)
        return self

    def serve_forever(self) -> None:
        self.manager.poll_once()
        self.manager.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.manager.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.manager.stop()
