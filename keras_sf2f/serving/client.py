"""Clients for a served keras-sf2f model (TF-Serving, or the development server).

* REST: ``POST {server}/v1/models/{model}[/versions/{n}]:predict`` with
  ``{"signature_name": "serving_default", "instances": [{"audio": {"b64": <WAV bytes>}}]}``;
  the answer's ``image_png_bytes`` (``{"b64": ...}``) is the PNG.
* gRPC: ``tensorflow.serving.PredictionService/Predict`` with a ``PredictRequest`` whose
  ``audio`` input is a string tensor ``[1]`` (``tensorflow_serving.apis``).

One request per audio file, so that one bad file does not fail the others. A server's error
message is returned verbatim (``PredictError.message``): TF-Serving's ``{"error": ...}`` body
or the gRPC status details.

``rest_predict`` / ``grpc_predict`` also return the model's ``voice_typicality`` (None for an
export without that output): how typical the voice is of the voices the model was trained on,
in [0, 1]. Below the export's ``typicality_warning_below`` (its metadata,
``assets.extra/sf2f_export.json``; TF-Serving's metadata API serves only signature
definitions, so a client cannot ask for it and uses :data:`DEFAULT_TYPICALITY_WARNING_BELOW`,
the export's default, unless told otherwise) the face says little about the voice:
:func:`typicality_warning` words the warning.

The served graph decodes WAV only; :func:`audio_for_request` sends a WAV that it decodes as it
is and converts any other file the project's audio loader reads (FLAC, Ogg, MP3, M4A with
ffmpeg, u-law WAV, unusual sample rates ...) to a WAV first.

The REST path needs only the standard library, numpy and the audio loader (soundfile, soxr):
no TensorFlow. gRPC needs ``tensorflow-serving-api`` (and so TensorFlow).
"""

from __future__ import annotations

import base64
import json
import math
import os
import urllib.error
import urllib.request
from typing import NamedTuple

from keras_sf2f.serving import audio_formats

__all__ = ["PredictError", "Prediction", "rest_predict", "grpc_predict", "rest_predict_png",
           "grpc_predict_png", "typicality_warning", "DEFAULT_TYPICALITY_WARNING_BELOW",
           "output_paths", "audio_for_request"]

# The export's default threshold (keras_sf2f.serving.inference; repeated here because the REST
# client must not import TensorFlow).
DEFAULT_TYPICALITY_WARNING_BELOW = 0.05
TYPICALITY_OUTPUT = "voice_typicality"

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


class Prediction(NamedTuple):
    """What the model answers for one audio file."""
    png: bytes
    voice_typicality: float | None   # None: the export has no voice_typicality output


def typicality_warning(typicality: float | None,
                       warning_below: float = DEFAULT_TYPICALITY_WARNING_BELOW) -> str:
    """The warning for a voice below the threshold ("" when there is nothing to warn about)."""
    if typicality is None or not typicality < warning_below:
        return ""
    return (f"voice typicality {typicality:.3f} is below {warning_below:g}: this voice is "
            f"unlike the voices the model was trained on (farther from them than "
            f"{100 * (1 - warning_below):g} % of the known voices are), so the face says "
            f"little about it")


def _typicality_value(value) -> float | None:
    """A ``voice_typicality`` from an answer: a number in [0, 1], else PredictError."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise PredictError(f"unexpected {TYPICALITY_OUTPUT} in the answer: {value!r}")
    return float(value)


def _model_path(model: str, version: int | None) -> str:
    return f"/v1/models/{model}" + (f"/versions/{int(version)}" if version else "")


def rest_predict_png(server: str, model: str, wav_bytes: bytes, version: int | None = None,
                     timeout: float = 300.0) -> bytes:
    """The PNG the model makes from one WAV file, over TF-Serving's REST API."""
    return rest_predict(server, model, wav_bytes, version, timeout).png


def rest_predict(server: str, model: str, wav_bytes: bytes, version: int | None = None,
                 timeout: float = 300.0) -> Prediction:
    """The PNG and the voice typicality for one WAV file, over TF-Serving's REST API."""
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
        png = base64.b64decode(prediction["image_png_bytes"]["b64"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise PredictError(f"unexpected answer from {url} ({type(e).__name__}: {e}): "
                           f"{payload[:300]!r}") from None
    typicality = prediction.get(TYPICALITY_OUTPUT)
    return Prediction(png, None if typicality is None else _typicality_value(typicality))


def grpc_predict_png(target: str, model: str, wav_bytes: bytes, version: int | None = None,
                     timeout: float = 300.0, channel=None) -> bytes:
    """The same over gRPC (``target`` = ``host:8500``)."""
    return grpc_predict(target, model, wav_bytes, version, timeout, channel).png


def grpc_predict(target: str, model: str, wav_bytes: bytes, version: int | None = None,
                 timeout: float = 300.0, channel=None) -> Prediction:
    """The PNG and the voice typicality over gRPC (``target`` = ``host:8500``). An export
    without ``voice_typicality`` refuses an output filter that names it (INVALID_ARGUMENT,
    naming the alias): the request is then repeated for the PNG alone."""
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
        audio = tf.make_tensor_proto([wav_bytes], dtype=tf.string)

        def predict(outputs):
            # Only these come back (the float image would be 4x larger than the PNG).
            request = predict_pb2.PredictRequest(model_spec=spec, output_filter=outputs)
            request.inputs["audio"].CopyFrom(audio)
            return stub.Predict(request, timeout=timeout)

        try:
            try:
                response = predict(["image_png_bytes", TYPICALITY_OUTPUT])
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT or \
                        TYPICALITY_OUTPUT not in (e.details() or ""):
                    raise
                response = predict(["image_png_bytes"])   # an export without the output
        except grpc.RpcError as e:
            raise PredictError(e.details() or str(e), e.code().name) from None
        if "image_png_bytes" not in response.outputs:
            raise PredictError(f"unexpected answer: outputs {sorted(response.outputs)}")
        typicality = None
        if TYPICALITY_OUTPUT in response.outputs:
            typicality = _typicality_value(
                [float(v) for v in tf.make_ndarray(response.outputs[TYPICALITY_OUTPUT]).flat])
        return Prediction(response.outputs["image_png_bytes"].string_val[0], typicality)
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
