"""The speech front end: audio files -> int16-scale samples -> VAD -> log mel features.

* :mod:`~keras_sf2f.audio.features` — the reference's log mel filterbank in stock TF ops
  (python_speech_features ``logfbank`` semantics) and its normalisation.
* :mod:`~keras_sf2f.audio.vad` — the reference's offline webrtcvad collector and a pure-TF
  energy gate for graphs.
* :mod:`~keras_sf2f.audio.io` — loading WAV/FLAC/OGG/MP3 (and M4A with PyAV or ffmpeg) as 16 kHz mono
  int16-scale samples, with clear errors; ``speech_log_mel`` runs the whole offline pipeline.

The names below are exported lazily: ``import keras_sf2f.audio.io`` or ``.vad`` does not import
TensorFlow (data-preparation worker processes rely on that); ``features`` does.
"""

import importlib

_EXPORTS = {
    "features": [
        "LOG_EPS", "MEL_MEAN", "MEL_PAD_VALUE", "MEL_STD", "NFFT", "NUM_FILTERS",
        "denormalize_log_mel", "frame_geometry", "log_mel_filterbank",
        "log_mel_filterbank_batch", "mel_filterbank_matrix", "normalize_log_mel", "num_frames",
    ],
    "io": [
        "TARGET_RATE", "AudioError", "decode_audio_bytes", "load_audio", "read_audio",
        "resample", "speech_log_mel",
    ],
    "vad": ["WEBRTC_SAMPLE_RATES", "energy_gate", "to_int16", "webrtc_vad"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
