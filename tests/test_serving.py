"""End to end over real HTTP on 127.0.0.1: the exported tiny model behind the development
server (export/serve.py, a subprocess), the client (export/client.py, run without TensorFlow),
plain JSON in both of TF-Serving's formats, gRPC through a stand-in PredictionService, a
hostile-input barrage, the pick-up of a new version and the retry of a failed one; then the
HTTP layer alone (timeouts, the memory budget, the listen backlog, strict parsing) on
in-process servers without a model, and the server's start-up errors.

The exported model comes from tests/test_export.py (built once per test process).
"""

import base64
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from concurrent import futures

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_sf2f.serving import audio_formats, rest_server
from keras_sf2f.serving import client as sf2f_client
from test_export import REPO, SUBPROCESS_ENV, exported_tiny_model, wav_bytes

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

MODEL = "sf2f_tiny"
MAX_REQUEST_BYTES = 4_000_000
READ_TIMEOUT = 5

# Runs export/client.py with every import of TensorFlow, Keras, absl and gRPC refused: the REST
# client needs only the standard library, numpy and the audio loader.
_WITHOUT_TENSORFLOW = """
import importlib.abc, runpy, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "absl", "grpc", "tensorflow_serving"):
            raise ImportError("the REST client must not import " + name)
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    base = root / "models" / MODEL
    base.mkdir(parents=True)
    shutil.copytree(tiny.version_dir, base / "1")
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "export", "serve.py"),
             f"--model_base_path={base}", "--rest_api_port=0",
             "--file_system_poll_wait_seconds=0.3", f"--max_request_bytes={MAX_REQUEST_BYTES}",
             # Retries: enough that a version being copied loads once complete (the test
             # waits for that); exhausting them is tested on a ModelManager with a fake clock.
             "--max_num_load_retries=1000", "--load_retry_interval_micros=200000",
             f"--read_timeout_seconds={READ_TIMEOUT}", "--max_items_per_request=32"],
            stdout=subprocess.PIPE, stderr=log, env=SUBPROCESS_ENV, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), \
            line + log_path.read_text()[-3000:]
        url = line.split()[-1]
        deadline = time.time() + 180
        while True:
            try:
                status = get_json(url + f"/v1/models/{MODEL}")
                if status["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except urllib.error.HTTPError:
                pass
            assert time.time() < deadline and process.poll() is None, \
                log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield types.SimpleNamespace(url=url, base=base, process=process, log=log_path,
                                    port=int(url.rsplit(":", 1)[1]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def post_json(url, payload, timeout=120):
    """-> (status, decoded JSON body)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def expected_pixels(tiny, wav):
    image = tiny.python_model.serving_default(tf.constant([wav], tf.string))["image"][0]
    return np.round(image.numpy() * 255).astype(int)


def assert_png_matches(png: bytes, pixels):
    got = tf.io.decode_png(png).numpy().astype(int)
    assert got.shape == pixels.shape
    # Same graph, same weights: equal up to float32 rounding at a .5 boundary.
    assert np.abs(got - pixels).max() <= 1
    assert np.mean(got != pixels) < 0.01


# ---------------------------------------------------------------------------------------------

def test_status_and_metadata(server):
    status = get_json(server.url + f"/v1/models/{MODEL}")
    assert status == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]}
    assert get_json(server.url + f"/v1/models/{MODEL}/versions/1") == status
    meta = get_json(server.url + f"/v1/models/{MODEL}/metadata")
    assert meta["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["predict_mel", "predict_waveform", "serving_default"]
    assert signatures["serving_default"]["inputs"]["audio"]["dtype"] == "DT_STRING"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert get_json(server.url + f"/v1/models/{MODEL}/versions/1/metadata") == meta
    for path, code in ((f"/v1/models/{MODEL}/versions/9", 404), ("/v1/models/nope", 404),
                       ("/v1/models/nope/metadata", 404), (f"/v1/models/{MODEL}/versions/9/"
                                                            "metadata", 404), ("/v2/x", 404)):
        with pytest.raises(urllib.error.HTTPError) as info:
            get_json(server.url + path)
        assert info.value.code == code
        assert "error" in json.loads(info.value.read())


def test_client_writes_the_python_models_faces(server, tiny, tmp_path, speech_like):
    files = {
        "a.wav": wav_bytes(speech_like(21, 3.0), 16000),
        "b.wav": wav_bytes(np.stack([speech_like(22, 2.5, sample_rate=44100)] * 2, 1), 44100,
                           "PCM_24"),
        "c.wav": wav_bytes(speech_like(23, 2.0, sample_rate=8000), 8000, "FLOAT"),
        "d.flac": wav_bytes(speech_like(25, 2.2, sample_rate=32000), 32000, "PCM_16", "FLAC"),
        "e.mp3": wav_bytes(speech_like(26, 2.4, sample_rate=24000), 24000, "MPEG_LAYER_III",
                           "MP3"),
        "f.wav": wav_bytes(speech_like(27, 2.2, sample_rate=8000), 8000, "ULAW"),
        "bad.wav": wav_bytes(speech_like(24, 1.0), 16000),
        "junk.mp3": b"not audio at all, just text\n" * 10,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "faces"
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, os.path.join(REPO, "export", "client.py"),
         f"--server={server.url}", f"--model={MODEL}",
         f"--audio={tmp_path / 'a.wav'},{tmp_path / 'b.wav'}",
         *[str(tmp_path / n) for n in ("c.wav", "d.flac", "e.mp3", "f.wav", "bad.wav",
                                       "junk.mp3")], f"--out={out}"],
        capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (f"{tmp_path / 'bad.wav'}: server error (HTTP 400): audio[0]: too short: 1.00 s of "
            f"speech after silence removal; at least 1.265 s are needed") in result.stderr
    assert f"{tmp_path / 'junk.mp3'}: not an audio file (it contains text)" in result.stderr
    assert f"{tmp_path / 'd.flac'}: converted to WAV from a FLAC file" in result.stderr
    assert f"{tmp_path / 'f.wav'}: converted to WAV from a WAV file the model does not decode " \
           f"(encoding u-law)" in result.stderr
    assert "must not import" not in result.stderr
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    faces = []
    for name in ("a.wav", "b.wav", "c.wav", "d.flac", "e.mp3", "f.wav"):
        sent = files[name]
        if audio_formats.inspect_wav(sent).verdict != audio_formats.OK:
            sent = audio_formats.convert_to_wav(sent)  # what the client sends
        pixels = expected_pixels(tiny, sent)
        assert_png_matches((out / (name.split(".")[0] + ".png")).read_bytes(), pixels)
        faces.append(pixels)
    assert np.abs(faces[0] - faces[1]).mean() > 5  # different voices, different faces
    # The FLAC file holds the same int16 samples as a WAV: the same face.
    flac_as_wav = wav_bytes(speech_like(25, 2.2, sample_rate=32000), 32000)
    assert_png_matches((out / "d.png").read_bytes(), expected_pixels(tiny, flac_as_wav))


def test_plain_json_row_and_columnar_formats(server, tiny, speech_like):
    wav = wav_bytes(speech_like(25, 2.6, sample_rate=22050), 22050)
    url = server.url + f"/v1/models/{MODEL}:predict"
    status, row = post_json(url, {"instances": [{"audio": b64(wav)}]})
    assert status == 200, row
    prediction = row["predictions"][0]
    assert sorted(prediction) == ["image", "image_png_bytes"]
    pixels = expected_pixels(tiny, wav)
    assert_png_matches(base64.b64decode(prediction["image_png_bytes"]["b64"]), pixels)
    assert np.abs(np.round(np.array(prediction["image"]) * 255) - pixels).max() <= 1
    # Single-input signature: instances may be the bare values.
    status, bare = post_json(url, {"instances": [b64(wav), b64(wav)]})
    assert status == 200 and len(bare["predictions"]) == 2
    status, columnar = post_json(server.url + f"/v1/models/{MODEL}/versions/1:predict",
                                 {"signature_name": "serving_default",
                                  "inputs": {"audio": [b64(wav)]}})
    assert status == 200
    assert sorted(columnar["outputs"]) == ["image", "image_png_bytes"]
    assert columnar["outputs"]["image_png_bytes"] == [prediction["image_png_bytes"]]
    # predict_waveform (row: sample_rate per instance) and predict_mel (columnar).
    x = speech_like(26, 2.0)
    status, waveform = post_json(url, {"signature_name": "predict_waveform", "instances": [
        {"waveform": x.tolist(), "sample_rate": 16000}]})
    assert status == 200, waveform
    expected = tiny.python_model.predict_waveform(tf.constant(x[None], tf.float32),
                                                  tf.constant(16000))
    np.testing.assert_allclose(waveform["predictions"][0]["embedding"],
                               expected["embedding"][0], atol=1e-5)
    mel = np.random.default_rng(3).normal(size=(1, 2, 125, 40)).astype(np.float32)
    status, columnar = post_json(url, {"signature_name": "predict_mel",
                                       "inputs": {"log_mel": mel.tolist()}})
    assert status == 200
    np.testing.assert_allclose(columnar["outputs"]["embedding"],
                               tiny.python_model.predict_mel(mel)["embedding"], atol=1e-5)


def _stand_in_prediction_service(loaded):
    """A test stand-in for TF-Serving's gRPC PredictionService over the exported SavedModel
    (the real tensorflow_model_server cannot be installed here): enough to exercise the
    client's gRPC path."""
    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa

    class StandIn(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - gRPC method name
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            try:
                outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
            except tf.errors.InvalidArgumentError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              rest_server.clean_error_message(e.message))
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    return StandIn()


def test_grpc_client(tiny, speech_like):
    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _stand_in_prediction_service(tiny.loaded), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        wav = wav_bytes(speech_like(27, 2.5), 16000)
        png = sf2f_client.grpc_predict_png(f"127.0.0.1:{port}", MODEL, wav)
        assert_png_matches(png, expected_pixels(tiny, wav))
        with pytest.raises(sf2f_client.PredictError) as info:
            sf2f_client.grpc_predict_png(f"127.0.0.1:{port}", MODEL,
                                         wav_bytes(np.zeros(40000), 16000))
        assert info.value.status == "INVALID_ARGUMENT"
        assert info.value.message.startswith("audio[0]: no speech found")
    finally:
        grpc_server.stop(None)


# ---------------------------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _raw_exchange(port: int, data: bytes, shut_write: bool = True, timeout: float = 30.0):
    """Sends raw bytes, returns the status code of the answer (0 when there is no status
    line; every answer of this server has one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and not shut_write:
                    break
        except (ConnectionResetError, socket.timeout):
            pass
    answer = b"".join(chunks)
    assert answer, f"no answer to {data[:80]!r}"
    if answer.startswith(b"HTTP/1."):
        return int(answer.split(b" ", 2)[1])
    return 0


class _Connection:
    """Keep-alive JSON requests, reconnecting when the server closed the connection."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def request(self, method, path, body=b"", headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                payload = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, payload
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _hostile_cases(speech_like):
    """(name, kind, payload, expected status, substring of the error)."""
    rng = np.random.default_rng(0)
    good = wav_bytes(speech_like(31, 2.0), 16000)
    data_at = good.index(b"data")
    nan = np.full(32000, 0.2, np.float32)
    nan[100] = np.nan
    inf = np.full(32000, 0.2, np.float32)
    inf[100] = -np.inf

    def float_wav(x):
        buffer = io.BytesIO()
        sf.write(buffer, x, 16000, subtype="FLOAT", format="WAV")
        return buffer.getvalue()

    audio = {
        "corrupt header": (good[:30], 400, "fmt chunk is incomplete"),
        "truncated data": (good[:data_at + 500], 400, "WAV file is truncated"),
        "zero bytes": (b"", 400, "empty input"),
        "text": (b"this is a text file, not audio\n" * 20, 400, "not a WAV file"),
        "png": (b"\x89PNG\r\n\x1a\n" + rng.bytes(500), 400, "looks like a PNG image"),
        "broken flac": (b"fLaC" + rng.bytes(500), 400,
                        "audio[0]: corrupt, truncated or unsupported FLAC file"),
        "m4a": (b"\0\0\0\x20ftypM4A " + rng.bytes(500), 400,
                "audio[0]: an MP4/M4A file cannot be converted here (only ffmpeg decodes it)"),
        "8-bit": (wav_bytes(speech_like(33, 2.0), 16000, "PCM_U8"), 200, None),
        "24-bit": (wav_bytes(speech_like(34, 2.0, sample_rate=48000), 48000, "PCM_24"), 200,
                   None),
        "stereo": (wav_bytes(np.stack([speech_like(35, 2.0)] * 2, 1), 16000), 200, None),
        "11.025 kHz": (wav_bytes(speech_like(36, 2.0, sample_rate=11025), 11025), 200, None),
        "24 kHz": (wav_bytes(speech_like(40, 2.0, sample_rate=24000), 24000), 200, None),
        "32 kHz": (wav_bytes(speech_like(41, 2.0, sample_rate=32000), 32000), 200, None),
        "96 kHz": (wav_bytes(speech_like(42, 2.0, sample_rate=96000), 96000), 200, None),
        # Converted by the development server (TF-Serving refuses them with a clear message).
        "7 kHz WAV": (wav_bytes(speech_like(43, 2.0, sample_rate=7000), 7000), 200, None),
        "u-law": (wav_bytes(speech_like(32, 2.0, sample_rate=8000), 8000, "ULAW"), 200, None),
        "FLAC": (wav_bytes(speech_like(44, 2.0), 16000, "PCM_16", "FLAC"), 200, None),
        "Ogg Vorbis": (wav_bytes(speech_like(45, 2.0, sample_rate=22050), 22050, "VORBIS",
                                 "OGG"), 200, None),
        "MP3": (wav_bytes(speech_like(46, 2.0, sample_rate=44100), 44100, "MPEG_LAYER_III",
                          "MP3"), 200, None),
        "too long FLAC": (wav_bytes(np.zeros(8000 * 61), 8000, "PCM_16", "FLAC"), 400,
                          "audio[0]: the audio is 61.00 s long; the maximum is 60 s"),
        "NaN": (float_wav(nan), 400, "contains NaN or infinite samples"),
        "inf": (float_wav(inf), 400, "contains NaN or infinite samples"),
        "too long": (wav_bytes(np.zeros(8000 * 61), 8000), 400,
                     "the audio is 61.00 s long; the maximum is 60 s"),
        "too short": (wav_bytes(speech_like(37, 1.0), 16000), 400,
                      "too short: 1.00 s of speech after silence removal; at least 1.265 s"),
        "silence": (wav_bytes(np.zeros(48000), 16000), 400,
                    "no speech found: the audio is silent or too quiet (nothing is left after "
                    "silence removal by the energy gate) (every sample is 0: the file holds "
                    "digital silence)"),
        "quiet hiss": (wav_bytes(np.random.default_rng(1).normal(size=48000) * 0.5, 16000),
                       400, "dBFS; the energy gate keeps only stretches of at least 90 ms"),
    }
    cases = []
    for name, (data, status, message) in audio.items():
        cases.append((f"audio: {name}", "json", {"instances": [{"audio": b64(data)}]}, status,
                      message))
    predict = f"/v1/models/{MODEL}:predict"
    json_cases = [
        ("not JSON", b"this is not json", 400, "JSON Parse error"),
        ("empty body", b"", 400, "JSON Parse error"),
        ("invalid UTF-8", b'{"instances": ["\xff\xfe"]}', 400, "JSON Parse error"),
        ("deep nesting", b"[" * 100000 + b"]" * 100000, 400, "JSON Parse error"),
        ("a list", b"[]", 400, "must be a JSON object"),
        ("null", b"null", 400, "must be a JSON object"),
        ("no instances", b'{"signature_name": "serving_default"}', 400,
         "Missing 'inputs' or 'instances' key"),
        ("both formats", b'{"instances": [], "inputs": []}', 400, "not both"),
        ("instances not a list", b'{"instances": {}}', 400, "non-empty list"),
        ("empty instances", b'{"instances": []}', 400, "non-empty list"),
        ("numbers for audio", b'{"instances": [1, 2]}', 400, "number given for a string"),
        ("plain string audio", b'{"instances": ["RIFF"]}', 400, "not a WAV file"),
        ("bad base64", b'{"instances": [{"b64": "!!!!"}]}', 400, "invalid base64"),
        ("b64 not a string", b'{"instances": [{"b64": 5}]}', 400, "b64"),
        ("wrong input name", b'{"instances": [{"voice": {"b64": "AA=="}}]}', 400,
         "expected the inputs ['audio']"),
        ("extra key", b'{"instances": [{"audio": {"b64": "AA=="}, "x": 1}]}', 400,
         "expected the inputs"),
        ("unknown signature", b'{"signature_name": "nope", "instances": [1]}', 400,
         "not found in signature def"),
        ("unknown top-level key", b'{"instancez": [1]}', 400, "unknown keys"),
        ("ragged", b'{"inputs": {"audio": [[{"b64": "AA=="}], []]}}', 400,
         "not rectangular"),
        ("scalar audio", b'{"inputs": {"audio": {"b64": "AA=="}}}', 400,
         "expected a tensor of shape [-1]"),
        ("null value", b'{"instances": [null]}', 400, "null is not a tensor value"),
        ("waveform NaN", b'{"signature_name": "predict_waveform", "instances": '
                         b'[{"waveform": [NaN, 1.0, 2.0], "sample_rate": 16000}]}', 400,
         "waveform[0]: contains NaN"),
        ("waveform strings", b'{"signature_name": "predict_waveform", "instances": '
                             b'[{"waveform": ["a"], "sample_rate": 16000}]}', 400,
         "string value"),
        ("fractional rate", b'{"signature_name": "predict_waveform", "inputs": '
                            b'{"waveform": [[1.0, 2.0]], "sample_rate": 16000.5}}', 400,
         "expected integers"),
        ("rate out of range", b'{"signature_name": "predict_waveform", "inputs": '
                              b'{"waveform": [[1.0, 2.0]], "sample_rate": 1e20}}', 400,
         "out of range"),
        ("bad rate count", b'{"signature_name": "predict_waveform", "inputs": '
                           b'{"waveform": [[1.0], [2.0]], "sample_rate": [8000, 8000, 8000]}}',
         400, "one value per waveform"),
        ("boolean waveform", b'{"signature_name": "predict_waveform", "inputs": '
                             b'{"waveform": [[true]], "sample_rate": 8000}}', 400,
         "boolean"),
        ("waveform rank 1", b'{"signature_name": "predict_waveform", "inputs": '
                            b'{"waveform": [1.0, 2.0], "sample_rate": 8000}}', 400,
         "expected a tensor of shape [-1, -1]"),
        ("mel 39 bins", json.dumps({"signature_name": "predict_mel", "inputs": {
            "log_mel": np.ones((1, 1, 2, 39)).tolist()}}).encode(), 400,
         "expected a tensor of shape [-1, -1, -1, 40]"),
        ("mel all padding", json.dumps({"signature_name": "predict_mel", "inputs": {
            "log_mel": np.zeros((1, 1, 3, 40)).tolist()}}).encode(), 400,
         "log_mel[0] has no segment with data"),
        ("mel too long", json.dumps({"signature_name": "predict_mel", "inputs": {
            "log_mel": rng.integers(-3, 4, (1, 1, 6000, 40)).tolist()}}).encode(), 400,
         "holds 6000 frames; the maximum is 5999"),
        # Integers of more than 4300 digits: Python's int() refuses them (ValueError).
        ("huge integer sample", b'{"signature_name": "predict_waveform", "inputs": '
                                b'{"waveform": [[1.0, ' + b"7" * 5000 + b', 2.0]], '
                                b'"sample_rate": 16000}}', 400, "waveform[0]: contains NaN"),
        ("huge integer rate", b'{"signature_name": "predict_waveform", "inputs": '
                              b'{"waveform": [[1.0, 2.0]], "sample_rate": ' + b"9" * 5000
         + b"}}", 400, "expected integers"),
        ("huge negative integer", b'{"instances": [-' + b"1" * 9000 + b"]}", 400,
         "number given for a string input"),
        ("huge integer as key value", b'{"signature_name": ' + b"3" * 4400 + b', "instances": '
                                      b'[1]}', 400, "signature_name must be a string"),
        ("7 kHz waveform", json.dumps({"signature_name": "predict_waveform", "inputs": {
            "waveform": [[0.0, 1.0] * 10000], "sample_rate": 7000}}).encode(), 400,
         "waveform[0]: unsupported sample rate 7000 Hz; supported: 8000, 11025, 12000, 16000"),
        ("too many items", json.dumps({"instances": [{"b64": "AA=="}] * 33}).encode(), 400,
         "input audio holds 33 items; this development server takes at most 32 per request "
         "(--max_items_per_request)"),
        ("waveform mixed types", b'{"signature_name": "predict_waveform", "inputs": '
                                 b'{"waveform": [[1.0, "2"]], "sample_rate": 8000}}', 400,
         "string value"),
        ("waveform true among numbers", b'{"signature_name": "predict_waveform", "inputs": '
                                        b'{"waveform": [[1.0, true]], "sample_rate": 8000}}',
         400, "boolean"),
        ("waveform null", b'{"signature_name": "predict_waveform", "inputs": '
                          b'{"waveform": [[1.0, null]], "sample_rate": 8000}}', 400,
         "null is not a tensor value"),
    ]
    for name, body, status, message in json_cases:
        cases.append((f"json: {name}", "body", (predict, body), status, message))
    huge = "9" * 5000
    http_cases = [
        ("unknown path", "GET", "/v1/nothing", 404, "Malformed request"),
        ("unknown model", "POST", "/v1/models/other:predict", 404,
         f"Servable not found for request: Latest(other); this server serves one model: "
         f"{MODEL}"),
        ("unknown model status", "GET", "/v1/models/other", 404,
         f"this server serves one model: {MODEL}"),
        ("unknown version", "POST", f"/v1/models/{MODEL}/versions/5:predict", 404,
         f"Specific({MODEL}, 5)"),
        ("huge version", "GET", f"/v1/models/{MODEL}/versions/{huge}", 400,
         "is not a version number"),
        ("huge version predict", "POST", f"/v1/models/{MODEL}/versions/{huge}:predict", 400,
         "is not a version number"),
        ("huge version metadata", "GET", f"/v1/models/{MODEL}/versions/{huge}/metadata", 400,
         "is not a version number"),
        ("classify", "POST", f"/v1/models/{MODEL}:classify", 400, None),
        ("labels", "GET", f"/v1/models/{MODEL}/labels/stable", 404, None),
        ("predict with GET", "GET", predict, 405, "needs POST"),
        ("PUT", "PUT", predict, 405, "method PUT is not supported"),
        ("DELETE", "DELETE", f"/v1/models/{MODEL}", 405, None),
        ("TRACE", "TRACE", f"/v1/models/{MODEL}", 405, None),
        ("OPTIONS", "OPTIONS", f"/v1/models/{MODEL}", 405, None),
        ("made-up method", "BREW", "/", 405, None),
    ]
    for name, method, path, status, message in http_cases:
        cases.append((f"http: {name}", "method", (method, path), status, message))
    return cases


def test_hostile_requests_get_answers_and_leave_the_server_healthy(server, tiny, speech_like):
    started = time.time()
    cases = _hostile_cases(speech_like)
    raw_cases = [
        ("no Content-Length", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n\r\n"
         .encode(), 411),
        ("chunked", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode(), 411),
        ("negative length", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: -5\r\n\r\n".encode(), 400),
        ("huge declared length", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: 999999999999\r\n\r\n{}".encode(), 413),
        ("expect 100-continue", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         f"Content-Length: {50 * MAX_REQUEST_BYTES}\r\nExpect: 100-continue\r\n\r\n".encode(),
         413),
        ("truncated body", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: 1000\r\n\r\n{\"instances\"".encode(), 400),
        ("garbage request line", b"HELLO THERE\r\n\r\n", 400),
        ("binary junk", bytes(np.random.default_rng(5).integers(0, 256, 300, np.uint8)), 400),
        ("header flood", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
        ("duplicate Content-Length", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}".encode(), 400),
        ("Content-Length list", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: 2, 2\r\n\r\n{}".encode(), 400),
        ("5000-digit Content-Length", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x"
         f"\r\nContent-Length: {'9' * 5000}\r\n\r\n{{}}".encode(), 413),
        ("Transfer-Encoding gzip", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Transfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}".encode(), 400),
        ("HEAD", f"HEAD /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 405),
        ("HTTP/0.9", b"GET /v1/models/sf2f_tiny\r\n\r\n", 400),
        ("HTTP/2.0 line", f"GET /v1/models/{MODEL} HTTP/2.0\r\nHost: x\r\n\r\n".encode(),
         400),
        ("no Host", f"GET /v1/models/{MODEL} HTTP/1.1\r\n\r\n".encode(), 400),
        ("folded header", f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n"
         "\r\n".encode(), 400),
        ("space before colon", f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n"
         "Content-Length : 0\r\n\r\n".encode(), 400),
        ("unknown Expect", f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
         "Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}".encode(), 417),
        ("long request line", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("NUL in a header", f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n"
         "\r\n".encode(), 400),
    ]
    connection = _Connection(server.port)
    rng = np.random.default_rng(11)
    counts = {}
    rss = []

    def run(name, kind, payload, status, message):
        if kind == "raw":
            code = _raw_exchange(server.port, payload)
            assert code == status, (name, code)
        else:
            if kind == "json":
                code, body = connection.request("POST", f"/v1/models/{MODEL}:predict",
                                                json.dumps(payload).encode())
            elif kind == "body":
                code, body = connection.request("POST", payload[0], payload[1])
            else:
                code, body = connection.request(payload[0], payload[1])
            answer = json.loads(body)
            assert code == status, (name, code, answer)
            if status != 200:
                assert set(answer) == {"error"} and answer["error"], (name, answer)
                if message:
                    assert message in answer["error"], (name, answer)
        counts[name] = counts.get(name, 0) + 1

    # Every kind once, then a random mix (valid audio, which runs the model, kept rare).
    raw = [(f"raw: {name}", "raw", data, status, None) for name, data, status in raw_cases]
    for case in cases + raw:
        run(*case)
    total = 1000
    for i in range(total):
        if i in (150, 575, total - 1):
            rss.append(_rss_mb(server.process.pid))
        pick = i % 10
        if pick < 6:
            case = cases[int(rng.integers(len(cases)))]
            if case[3] == 200 and rng.random() < 0.8:
                case = cases[0]
        elif pick < 8:
            case = ("random bytes as audio", "json",
                    {"instances": [b64(rng.bytes(int(rng.integers(0, 2000))))]}, 400,
                    "audio[0]: ")
        elif pick < 9:
            case = ("random body", "body", (f"/v1/models/{MODEL}:predict",
                                            rng.bytes(int(rng.integers(0, 3000)))), 400, None)
        else:
            case = raw[(i // 10) % len(raw)]
        run(*case)
    # A real over-limit body: refused with 413, and the answer still arrives.
    big = json.dumps({"instances": [b64(bytes(MAX_REQUEST_BYTES))]}).encode()
    code = _raw_exchange(server.port, f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Length: {len(big)}\r\n\r\n".encode() + big)
    assert code == 413
    assert sum(counts.values()) >= 1000
    assert len(counts) >= 90, len(counts)  # kinds of input
    # Still healthy: a good request gives the right face.
    wav = wav_bytes(speech_like(38, 2.5), 16000)
    png = sf2f_client.rest_predict_png(server.url, MODEL, wav)
    assert_png_matches(png, expected_pixels(tiny, wav))
    assert server.process.poll() is None
    # Memory: no growth without bound (the first requests warm caches up).
    assert rss[2] - rss[0] < 150 and rss[2] - rss[1] < 60, rss
    print(f"{sum(counts.values())} hostile requests of {len(counts)} kinds in "
          f"{time.time() - started:.1f} s; server RSS {rss[0]:.0f} -> {rss[1]:.0f} -> "
          f"{rss[2]:.0f} MB")


def test_new_version_is_picked_up(server, tiny, speech_like):
    staging = server.base / ".tmp-copy"
    shutil.copytree(tiny.version_dir, staging)
    os.rename(staging, server.base / "2")
    deadline = time.time() + 180
    while True:
        status = get_json(server.url + f"/v1/models/{MODEL}")
        states = {s["version"]: s["state"] for s in status["model_version_status"]}
        if states.get("2") == "AVAILABLE":
            break
        assert time.time() < deadline, status
        time.sleep(0.3)
    assert states["1"] == "END"
    wav = wav_bytes(speech_like(39, 2.0), 16000)
    code, answer = post_json(server.url + f"/v1/models/{MODEL}/versions/2:predict",
                             {"instances": [{"audio": b64(wav)}]})
    assert code == 200
    code, answer = post_json(server.url + f"/v1/models/{MODEL}/versions/1:predict",
                             {"instances": [{"audio": b64(wav)}]})
    assert code == 404 and "Specific(sf2f_tiny, 1)" in answer["error"]
    assert get_json(server.url + f"/v1/models/{MODEL}/metadata")["model_spec"]["version"] == "2"
    # A broken version is reported (and retried), not served.
    (server.base / "3").mkdir()
    (server.base / "3" / "saved_model.pb").write_bytes(b"not a saved model")
    states = _wait_for_status(server, lambda st: "3" in st and st["3"]["status"][
        "error_message"].startswith("failed to load"))
    assert states["3"]["state"] == "LOADING"  # 1000 retries, 0.2 s apart
    assert "(attempt " in states["3"]["status"]["error_message"]
    assert states["2"]["state"] == "AVAILABLE"


def test_a_version_still_being_copied_loads_on_a_retry(server, tiny, speech_like):
    """Its first load fails (saved_model.pb without the variables); once the copy is complete
    a retry loads it (TF-Serving's --max_num_load_retries / --load_retry_interval_micros)."""
    wav = wav_bytes(speech_like(39, 2.0), 16000)
    partial = server.base / "4"
    partial.mkdir()
    shutil.copy(os.path.join(tiny.version_dir, "saved_model.pb"), partial)
    _wait_for_status(server, lambda st: "4" in st and st["4"]["status"][
        "error_message"].startswith("failed to load"))
    for name in os.listdir(tiny.version_dir):
        source = os.path.join(tiny.version_dir, name)
        if os.path.isdir(source):
            shutil.copytree(source, partial / name)
        elif name != "saved_model.pb":
            shutil.copy(source, partial / name)
    states = _wait_for_status(server, lambda st: st.get("4", {}).get("state") == "AVAILABLE")
    assert states["4"]["status"] == {"error_code": "OK", "error_message": ""}
    assert states["2"]["state"] == "END"
    code, _ = post_json(server.url + f"/v1/models/{MODEL}/versions/4:predict",
                        {"instances": [{"audio": b64(wav)}]})
    assert code == 200


def _wait_for_status(server, condition, seconds=120):
    """Polls the version status until ``condition({version: status})`` holds."""
    deadline = time.time() + seconds
    while True:
        states = {s["version"]: s for s in get_json(
            server.url + f"/v1/models/{MODEL}")["model_version_status"]}
        if condition(states):
            return states
        assert time.time() < deadline, states
        time.sleep(0.2)


def test_failed_loads_are_retried_then_given_up(tiny, tmp_path):
    """TF-Serving's --max_num_load_retries / --load_retry_interval_micros, on a fake clock."""
    now = [0.0]
    base = tmp_path / "m"
    partial = base / "1"
    partial.mkdir(parents=True)
    shutil.copy(os.path.join(tiny.version_dir, "saved_model.pb"), partial)
    manager = rest_server.ModelManager(str(base), "m", max_load_retries=2,
                                       load_retry_interval=60.0, clock=lambda: now[0])
    manager.poll_once()
    state, error = manager.version_status()[1]
    assert state == "LOADING" and manager.current is None
    assert error.startswith(f"failed to load {partial} (attempt 1 of 3; retrying in 60 s)")
    now[0] = 59.0
    manager.poll_once()  # not due yet: no new attempt
    assert manager.version_status()[1] == (state, error)
    for name in os.listdir(tiny.version_dir):
        if name != "saved_model.pb":
            source = os.path.join(tiny.version_dir, name)
            (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, partial / name)
    now[0] = 60.0
    manager.poll_once()
    assert manager.version_status()[1] == ("AVAILABLE", "")
    assert manager.current.version == 1
    # A version that never becomes loadable: 1 + 2 attempts, then END, then left alone.
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"broken")
    for attempt in (1, 2, 3):
        manager.poll_once()
        now[0] += 60.0
    state, error = manager.version_status()[2]
    assert state == "END" and error.startswith(f"failed to load {base / '2'} after 3 "
                                               f"attempt(s)"), error
    (base / "2" / "saved_model.pb").write_bytes(b"still broken")
    manager.poll_once()
    assert manager.version_status()[2] == (state, error)
    assert manager.current.version == 1


# ---------------------------------------------------------------------------------------------
# The HTTP layer on in-process servers without a model (no TensorFlow needed)
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def local_server(tmp_path, **kwargs):
    base = tmp_path / "models" / "m"
    base.mkdir(parents=True, exist_ok=True)
    server = rest_server.RestServer(str(base), "m", port=0, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _read_responses(sock, count, timeout=30.0, bodiless=()):
    """Reads ``count`` HTTP responses -> ([(status, headers {lower name: value}, body)], the
    bytes after them). ``bodiless``: indices of answers to HEAD requests (no body)."""
    sock.settimeout(timeout)
    data, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return responses, data
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1]) if lines[0].startswith("HTTP/1.") else 0
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        length = 0 if len(responses) in bodiless else int(headers.get("content-length", 0))
        while len(data) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        responses.append((status, headers, data[:length]))
        data = data[length:]
    return responses, data


def _post_head(length, path="/v1/models/m:predict", extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}"
            f"\r\n").encode()


def test_protocol_edges_answer_with_a_status_line(tmp_path):
    with local_server(tmp_path) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            # Leftover bytes after a short body are the next "request": a 400 with a status
            # line, not bytes without one.
            sock.sendall(_post_head(2) + b"{}garbage after the body")
            sock.shutdown(socket.SHUT_WR)
            responses, rest = _read_responses(sock, 2)
        assert [r[0] for r in responses] == [404, 400] and rest == b"", responses
        assert b"malformed request line 'garbage after the body'" in responses[1][2]
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"HEAD /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"TRACE /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            responses, rest = _read_responses(sock, 3, bodiless=(0,))
        head, trace, get = responses
        assert head[0] == 405 and head[2] == b"" and head[1]["allow"] == "GET, POST"
        assert trace[0] == 405 and b"method TRACE is not supported" in trace[2]
        assert get[0] == 404 and json.loads(get[2]) == {
            "error": "Could not find any versions of model m"}
        for status, headers, _ in responses:
            assert headers["server"] == "keras-sf2f-dev-server"  # no Python version
            assert headers["content-type"] == "application/json"


def test_listen_backlog_takes_a_burst_of_connections(tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    # Listening but not accepting: every connection waits in the kernel's accept queue,
    # which holds the backlog (socketserver's default of 5 would leave the rest in SYN
    # retransmits for a second or more).
    server = rest_server.RestServer(str(base), "m", port=0)
    sockets = []
    try:
        for _ in range(100):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=0.5))
    finally:
        for sock in sockets:
            sock.close()
        server.httpd.server_close()


def test_a_stalled_client_gets_408_and_frees_its_thread(tmp_path):
    with local_server(tmp_path, read_timeout=1.0) as server:
        before = threading.active_count()
        sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(8)]
        started = time.monotonic()
        for k, sock in enumerate(sockets):
            # Half of them stop in the middle of the body, half in the middle of the headers.
            sock.sendall(_post_head(100) + b'{"inst' if k % 2 else
                         b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n")
        for k, sock in enumerate(sockets):
            (status, headers, body), = _read_responses(sock, 1)[0]
            assert status == 408 and headers["connection"] == "close", body
            assert ("request body incomplete after 1 s: got 6 of 100 bytes" if k % 2 else
                    "request line and headers incomplete after 1 s").encode() in body
            assert sock.recv(10) == b""  # closed by the server
            sock.close()
        assert time.monotonic() - started >= 0.9
        # The handler threads end once they have answered.
        deadline = time.monotonic() + 10
        while threading.active_count() > before:
            assert time.monotonic() < deadline, threading.enumerate()
            time.sleep(0.05)
        # An idle kept-alive connection is closed without an answer (an unsolicited 408
        # would be read as the answer to the client's next request).
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(10)
            assert sock.recv(10) == b""


def _wait(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_request_bodies_in_flight_are_bounded(tmp_path):
    """A request waits while others hold the --max_inflight_request_bytes budget (its body
    left unread), is served once they are done, and gets 503 + Retry-After after
    --max_queue_seconds."""
    limit = 1_000_000
    with local_server(tmp_path, max_request_bytes=limit, max_inflight_request_bytes=limit,
                      max_queue_seconds=30.0) as server:
        budget = server.httpd.RequestHandlerClass.budget
        holder = socket.create_connection(("127.0.0.1", server.port))
        holder.sendall(_post_head(limit) + b"x" * 1000)  # most of the body still to come
        _wait(lambda: budget.used == limit)
        waiter = socket.create_connection(("127.0.0.1", server.port))
        waiter.sendall(_post_head(2) + b"{}")
        _wait(lambda: len(budget._queue) == 1)  # waiting for room, body unread
        waiter.settimeout(0.5)
        with pytest.raises(socket.timeout):
            waiter.recv(10)
        holder.sendall(b"x" * (limit - 1000))
        (status, _, body), = _read_responses(holder, 1)[0]
        assert status == 404 and b"no version is loaded yet" in body  # read, then answered
        (status, _, body), = _read_responses(waiter, 1)[0]
        assert status == 404 and b"no version is loaded yet" in body
        holder.close()
        waiter.close()
        _wait(lambda: budget.used == 0)
    with local_server(tmp_path, max_request_bytes=limit, max_inflight_request_bytes=limit,
                      max_queue_seconds=0.5) as server:
        budget = server.httpd.RequestHandlerClass.budget
        with socket.create_connection(("127.0.0.1", server.port)) as holder:
            holder.sendall(_post_head(limit) + b"x")
            _wait(lambda: budget.used == limit)
            with socket.create_connection(("127.0.0.1", server.port)) as refused:
                started = time.monotonic()
                refused.sendall(_post_head(2) + b"{}")
                (status, headers, body), = _read_responses(refused, 1)[0]
            assert time.monotonic() - started >= 0.45
            assert status == 503 and headers["retry-after"] == "1", headers
            assert b"--max_inflight_request_bytes" in body and b"--max_queue_seconds" in body
    assert rest_server.ByteBudget(10).acquire(20, 0.1)  # larger than the budget: alone


def test_start_up_errors_name_the_problem(tmp_path, tiny):
    base = tmp_path / "models" / "sf2f_demo"
    shutil.copytree(tiny.version_dir, base / "1")
    with pytest.raises(ValueError, match=re.escape(
            f"is a version directory (it holds saved_model.pb); give the directory that holds "
            f"the numeric versions: --model_base_path={base}")):
        rest_server.RestServer(str(base / "1"), "sf2f_demo", port=0)
    with pytest.raises(ValueError, match="does not exist"):
        rest_server.RestServer(str(tmp_path / "nope"), "m", port=0)
    with pytest.raises(ValueError, match="smaller than --max_request_bytes"):
        rest_server.RestServer(str(base), "m", port=0, max_request_bytes=2048,
                               max_inflight_request_bytes=1024)
    first = rest_server.RestServer(str(base), "sf2f_demo", port=0)
    try:
        with pytest.raises(OSError, match=f"port {first.port} is already in use"):
            rest_server.RestServer(str(base), "sf2f_demo", port=first.port)
    finally:
        first.httpd.server_close()
    # A base path one level too high: said once, with the directory it probably meant.
    manager = rest_server.ModelManager(str(tmp_path / "models"), "sf2f_demo")
    with contextlib.ExitStack() as stack:
        logged = []
        handler = type("Capture", (rest_server.logging.Handler,),
                       {"emit": lambda self, record: logged.append(record.getMessage())})()
        rest_server.log.addHandler(handler)
        stack.callback(rest_server.log.removeHandler, handler)
        for _ in range(3):
            manager.poll_once()
    assert logged == [f"no versions of sf2f_demo under {tmp_path / 'models'} yet (numeric "
                      f"sub-directories holding saved_model.pb); it holds model directories "
                      f"(sf2f_demo): did you mean --model_base_path={base}?; waiting for one"]
    # The command line says the same and exits.
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "export", "serve.py"),
         f"--model_base_path={base / '1'}", "--rest_api_port=0"],
        capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 1
    assert f"error: --model_base_path={base / '1'} is a version directory" in result.stderr
