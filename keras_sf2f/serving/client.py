"""Clients for a served keras-sf2f model (TF-Serving, or the development server).

* REST: ``POST {server}/v1/models/{model}[/versions/{n}]:predict`` with
  ``{"signature_name": "serving_default", "instances": [{"audio": {"b64": <WAV bytes>}}]}``;
  the answer's ``image_png_bytes`` (``{"b64": ...}``) is the PNG.
* gRPC: ``tensorflow.serving.PredictionService/Predict`` with a ``PredictRequest`` whose
  ``audio`` input is a string tensor ``[1]`` (``tensorflow_serving.apis``).

One request per audio file, so that one bad file does not fail the others. A server's error
message is returned verbatim (``PredictError.message``): TF-Serving's ``{"error": ...}`` body
or the gRPC status details.

The served graph decodes WAV only; :func:`audio_for_request` sends a WAV that it decodes as it
is and converts any other file the project's audio loader reads (FLAC, Ogg, MP3, M4A with
ffmpeg, u-law WAV, unusual sample rates ...) to a WAV first.

The REST path needs only the standard library, numpy and the audio loader (soundfile, soxr):
no TensorFlow. gRPC needs ``tensorflow-serving-api`` (and so TensorFlow).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

from keras_sf2f.serving import audio_formats

__all__ = ["PredictError", "rest_predict_png", "grpc_predict_png", "output_paths",
           "audio_for_request"]

# 60 s of 48 kHz stereo float audio is ~23 MB; gRPC's default limit is 4 MB.
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class PredictError(Exception):
    """The server refused or failed a request; ``message`` is the server's text verbatim."""

    def __init__(self, message: str, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


def audio_for_request(path: str) -> tuple[bytes, str]:
    """The bytes to send for the audio file ``path``, and a note on any conversion ("" when the
    file goes as it is).

    A WAV that the serving graph decodes (see ``audio_formats.inspect_wav``) is sent unchanged,
    and so is a broken WAV, whose problem the server names. Anything else that
    ``keras_sf2f.audio.io`` reads becomes a mono 32-bit float WAV at the file's rate (16 kHz
    when the graph does not take that rate).

    Raises:
      OSError: the file cannot be read.
      audio_formats.ConversionError: it is neither a WAV the graph takes nor audio the loader
        reads.
    """
    with open(path, "rb") as f:
        data = f.read()
    verdict = audio_formats.inspect_wav(data)
    if verdict.verdict in (audio_formats.OK, audio_formats.BROKEN):
        return data, ""
    what = audio_formats.sniff(data)[0] if verdict.verdict == audio_formats.NOT_WAV else \
        f"a WAV file the model does not decode ({verdict.detail})"
    converted = audio_formats.convert_to_wav(data, path)
    return converted, f"converted to WAV from {what or 'a non-WAV file'}"


def _model_path(model: str, version: int | None) -> str:
    return f"/v1/models/{model}" + (f"/versions/{int(version)}" if version else "")


def rest_predict_png(server: str, model: str, wav_bytes: bytes, version: int | None = None,
                     timeout: float = 300.0) -> bytes:
    """The PNG the model makes from one WAV file, over TF-Serving's REST API."""
    url = server.rstrip("/") + _model_path(model, version) + ":predict"
    body = json.dumps({"signature_name": "serving_default",
                       "instances": [{"audio": {"b64": base64.b64encode(wav_bytes).decode(
                           "ascii")}}]}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            message = text or e.reason
        raise PredictError(str(message), e.code) from None
    except urllib.error.URLError as e:
        raise PredictError(f"cannot reach {url}: {e.reason}") from None
    except OSError as e:
        raise PredictError(f"cannot reach {url}: {e}") from None
    try:
        prediction = json.loads(payload)["predictions"][0]
        return base64.b64decode(prediction["image_png_bytes"]["b64"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise PredictError(f"unexpected answer from {url} ({type(e).__name__}: {e}): "
                           f"{payload[:300]!r}") from None


def grpc_predict_png(target: str, model: str, wav_bytes: bytes, version: int | None = None,
                     timeout: float = 300.0, channel=None) -> bytes:
    """The same over gRPC (``target`` = ``host:8500``)."""
    import grpc  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import (model_pb2, predict_pb2,  # noqa: PLC0415
                                         prediction_service_pb2_grpc)

    own_channel = channel is None
    if own_channel:
        channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES)])
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        spec = model_pb2.ModelSpec(name=model, signature_name="serving_default")
        if version:
            spec.version.value = int(version)
        # Only the PNG comes back (the float image would be 4x larger).
        request = predict_pb2.PredictRequest(model_spec=spec, output_filter=["image_png_bytes"])
        request.inputs["audio"].CopyFrom(tf.make_tensor_proto([wav_bytes], dtype=tf.string))
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise PredictError(e.details() or str(e), e.code().name) from None
        if "image_png_bytes" not in response.outputs:
            raise PredictError(f"unexpected answer: outputs {sorted(response.outputs)}")
        return response.outputs["image_png_bytes"].string_val[0]
    finally:
        if own_channel:
            channel.close()


def output_paths(audio_paths, out_dir: str) -> list[str]:
    """``out_dir/<audio file stem>.png``, made unique when two inputs share a stem."""
    paths, used = [], set()
    for audio in audio_paths:
        stem = os.path.splitext(os.path.basename(audio))[0] or "audio"
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        paths.append(os.path.join(out_dir, name + ".png"))
    return paths
