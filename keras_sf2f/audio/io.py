"""Loading real audio files for offline preparation (and for development/serving helpers).

Every loader returns mono float32 samples on the **int16 scale** (what the SF2F reference feeds
its features: raw int16 values, not [-1, 1]) at 16 kHz unless told otherwise:

* WAV of any common encoding (8-bit unsigned, 16/24/32-bit integer, 32/64-bit float, A-law,
  u-law, ADPCM ...), FLAC, OGG/Vorbis, MP3 and the other formats libsndfile reads, via
  ``soundfile``. Integer encodings map to the int16 scale (``float value * 32768``: 16-bit
  samples come back exactly, 8-bit ``u`` as ``(u - 128) * 256``, 24-bit ``v`` as ``v / 256``);
  float encodings are taken as [-1, 1] full scale and multiplied by 32768.
* M4A/AAC/MP4 (VoxCeleb2) in-process with PyAV (``av``, which bundles FFmpeg's libraries) when
  it is installed, else via ``audioread``'s ffmpeg backend when an ``ffmpeg`` binary is on
  ``PATH``. Both give 16-bit PCM values (as the reference's pydub route does), the same array.
* Several channels are averaged to mono (the reference's ``wave`` reader would silently
  interleave them).
* Other sample rates are resampled with soxr (``HQ``) to ``target_rate``.

Anything wrong raises :class:`AudioError`, whose message names the file and the problem.
"""

from __future__ import annotations

import io as _io
import os
import shutil
import struct
import tempfile
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np

__all__ = ["AudioError", "TARGET_RATE", "read_audio", "load_audio", "decode_audio_bytes",
           "resample", "speech_log_mel"]

#: Sample rate everything is brought to (VoxCeleb's rate, the reference's feature rate).
TARGET_RATE = 16000

PathLike = Union[str, os.PathLike]


class AudioError(ValueError):
    """An audio file (or buffer) that cannot be used; the message names it and the problem."""

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


_FFMPEG_HINT = ("decoding M4A/AAC needs the PyAV package or the ffmpeg program, and neither "
                "was found (PyAV is not installed, ffmpeg is not on PATH); install one (e.g. "
                "`pip install av`, `apt install ffmpeg` or `conda install ffmpeg`) or convert the "
                "file to WAV/FLAC first (`ffmpeg -i in.m4a -ar 16000 -ac 1 out.wav`)")

# WAVE format tags libsndfile decodes.
_WAV_TAGS_SUPPORTED = {0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0xFFFE}
_WAV_TAG_NAMES = {
    0x0001: "PCM", 0x0002: "Microsoft ADPCM", 0x0003: "IEEE float", 0x0006: "A-law",
    0x0007: "u-law", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0040: "G.721 ADPCM",
    0x0050: "MPEG audio", 0x0055: "MPEG Layer 3 (MP3)", 0x00FF: "AAC", 0x1610: "HE-AAC",
    0x0161: "Windows Media Audio", 0x0162: "Windows Media Audio Pro", 0x2000: "Dolby AC-3",
    0x0092: "Dolby AC-3 SPDIF", 0xFFFE: "extensible",
}


# --------------------------------------------------------------------------------------------
# Sniffing, for messages that say what a file actually is
# --------------------------------------------------------------------------------------------

def _sniff(head: bytes) -> Optional[str]:
    """A short description of what ``head`` (the first bytes) looks like, or None."""
    if head[4:8] == b"ftyp":
        return "m4a"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "aac"  # ADTS AAC (MPEG audio frames have a non-zero layer field)
    signatures = [
        (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"), (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
        (b"BM", "a BMP image"), (b"\x7fELF", "an executable"),
        (b"\x80\x02", "a Python pickle"), (b"\x80\x04", "a Python pickle"),
        (b"\x93NUMPY", "a numpy .npy file"),
    ]
    for magic, what in signatures:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "an AVI video"
    if head[:4] in (b"RIFF", b"RIFX") and (head[8:12] == b"WAVE" or len(head) < 12):
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    sample = head[:512]
    if sample:
        try:
            text = sample.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
            return "text"
    return None


def _describe_non_audio(kind: Optional[str]) -> str:
    if kind == "text":
        return "not an audio file (it contains text)"
    if kind and kind not in ("wav", "flac", "ogg", "mp3", "m4a", "aac"):
        return f"not an audio file (it looks like {kind})"
    return "not a recognised audio file"


def _inspect_wav(fh: BinaryIO, total: int) -> dict:
    """Walks a RIFF/WAVE file's chunks; returns format tag, declared data size, data offset.

    Raises ``ValueError`` with a description when the header itself is truncated or malformed.
    """
    fh.seek(0)
    riff = fh.read(12)
    if len(riff) < 12:
        raise ValueError(f"truncated WAV header ({total} bytes, the RIFF header alone is 12)")
    info = {"format_tag": None, "data_size": None, "data_offset": None}
    pos = 12
    while pos + 8 <= total:
        fh.seek(pos)
        head = fh.read(8)
        cid, size = head[:4], struct.unpack("<I", head[4:8])[0]
        if cid == b"fmt ":
            body = fh.read(min(size, 64))
            if len(body) < 16:
                raise ValueError("truncated WAV header (the 'fmt ' chunk is cut off)")
            tag = struct.unpack("<H", body[:2])[0]
            if tag == 0xFFFE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # SubFormat GUID's first two bytes
            info["format_tag"] = tag
            info["bits"] = struct.unpack("<H", body[14:16])[0]
        elif cid == b"data":
            info["data_size"] = size
            info["data_offset"] = pos + 8
            break
        pos += 8 + size + (size & 1)
    if info["format_tag"] is None:
        raise ValueError("truncated or malformed WAV header (no 'fmt ' chunk)")
    if info["data_offset"] is None:
        raise ValueError("truncated or malformed WAV file (no 'data' chunk)")
    return info


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

def _import_pyav():
    """The ``av`` module, or None when PyAV is not installed."""
    try:
        import av  # noqa: PLC0415 - optional, only for M4A
    except ImportError:
        return None
    return av


def _pyav_decode(source: Union[str, BinaryIO], name: str, fmt: str) -> Tuple[np.ndarray, int]:
    """M4A/AAC decoded in-process by PyAV -> (samples [n, channels] int16-scale, rate).

    Why: starting an ``ffmpeg`` process costs ~66 ms CPU per file, eight times the decoding
    itself, and VoxCeleb2 is a million M4A files. ``fmt`` forces the demuxer ("mov" or "aac"),
    so a hostile file cannot steer FFmpeg to a playlist/concat demuxer that opens other files.
    The conversion to s16 is swresample's, as in the ``ffmpeg -f s16le`` path: same values
    (up to float rounding differences between FFmpeg versions, at most 1 LSB).
    """
    av = _import_pyav()
    chunks, rate, channels = [], 0, 0
    try:
        with av.open(source, format=fmt) as container:
            if not container.streams.audio:
                raise AudioError(name, "has no audio stream (a video or other data only)")
            stream = container.streams.audio[0]
            to_s16 = av.AudioResampler(format="s16")  # keeps the layout and the rate
            for frame in container.decode(stream):
                for out in to_s16.resample(frame):
                    rate, channels = out.sample_rate, out.layout.nb_channels
                    chunks.append(out.to_ndarray().reshape(-1, channels))
    except AudioError:
        raise
    except av.FFmpegError as e:
        raise AudioError(name, f"corrupt, truncated or unsupported M4A/AAC file "
                               f"(FFmpeg via PyAV: {e.strerror})") from None
    except Exception as e:  # noqa: BLE001 - e.g. PyAV's ValueError for a mid-file format change
        raise AudioError(name, f"could not decode it (PyAV: {type(e).__name__}: {e})") from None
    if not chunks:
        raise AudioError(name, "contains no audio (0 samples)")
    return np.concatenate(chunks).astype(np.float64), rate


def _ffmpeg_decode(path: str, name: str) -> Tuple[np.ndarray, int]:
    """M4A/AAC through audioread's ffmpeg backend -> (samples [n, channels] int16-scale, rate)."""
    if shutil.which("ffmpeg") is None:
        raise AudioError(name, _FFMPEG_HINT)
    try:
        from audioread import ffdec  # noqa: PLC0415 - optional, only for M4A
    except ImportError as e:
        raise AudioError(name, "decoding M4A/AAC needs the audioread package "
                               "(pip install audioread) and ffmpeg") from e
    try:
        with ffdec.FFmpegAudioFile(path) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            pcm = b"".join(f.read_data())
    except Exception as e:  # audioread raises several unrelated types
        raise AudioError(name, f"ffmpeg could not decode it ({type(e).__name__}: {e})") from e
    if rate <= 0 or channels <= 0:
        raise AudioError(name, "ffmpeg did not report a sample rate / channel count")
    x = np.frombuffer(pcm[:len(pcm) // (2 * channels) * 2 * channels], dtype="<i2")
    return x.reshape(-1, channels).astype(np.float64), rate


def _soundfile_decode(fh: BinaryIO, name: str, total: int, head: bytes):
    """Decodes with libsndfile -> (samples [n, channels] on the int16 scale, rate)."""
    import soundfile as sf  # noqa: PLC0415

    kind = _sniff(head)
    if kind == "wav" and head[:4] == b"RIFF":
        try:
            wav = _inspect_wav(fh, total)
        except ValueError as e:
            raise AudioError(name, str(e)) from None
        tag = wav["format_tag"]
        if tag not in _WAV_TAGS_SUPPORTED:
            what = _WAV_TAG_NAMES.get(tag, "unknown")
            raise AudioError(name, f"unsupported WAV encoding: format tag 0x{tag:04X} ({what}); "
                                   "convert it to PCM WAV or FLAC")
        declared, present = wav["data_size"], total - wav["data_offset"]
        if declared not in (0, 0xFFFFFFFF) and present < declared:
            raise AudioError(name, f"truncated WAV file: the header declares {declared} bytes of "
                                   f"samples but only {present} are present")
    fh.seek(0)
    try:
        with sf.SoundFile(fh) as f:
            rate, declared_frames, fmt = f.samplerate, f.frames, f.format
            data = f.read(dtype="float64", always_2d=True)
    except sf.LibsndfileError as e:
        detail = str(e).split(": ", 1)[-1] if "Error opening" in str(e) else str(e)
        if kind in ("wav", "flac", "ogg", "mp3"):
            label = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[kind]
            raise AudioError(name, f"corrupt, truncated or unsupported {label} file "
                                   f"(libsndfile: {detail})") from None
        raise AudioError(name, f"{_describe_non_audio(kind)} (libsndfile: {detail})") from None
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioError(name, f"could not decode it ({type(e).__name__}: {e})") from None
    if fmt not in ("WAV", "WAVEX", "RF64", "W64") and declared_frames > 0 \
            and data.shape[0] < declared_frames * 0.99:
        raise AudioError(name, f"truncated {fmt} file: the header declares {declared_frames} "
                               f"samples but only {data.shape[0]} could be decoded")
    return data * 32768.0, int(rate)


def _decode(fh: BinaryIO, name: str, total: int, path: Optional[str]) -> Tuple[np.ndarray, int]:
    if total == 0:
        raise AudioError(name, "empty file (0 bytes)")
    fh.seek(0)
    head = fh.read(64)
    kind = _sniff(head)
    ext = os.path.splitext(name)[1].lower()
    if kind in ("m4a", "aac") or (ext in (".m4a", ".aac", ".mp4", ".m4b") and kind is None):
        if _import_pyav() is not None:
            fmt = "aac" if kind == "aac" or (kind is None and ext == ".aac") else "mov"
            fh.seek(0)
            return _pyav_decode(path if path is not None else fh, name, fmt)
        if path is not None:
            return _ffmpeg_decode(path, name)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = os.path.join(tmp, "audio" + (ext or ".m4a"))
            fh.seek(0)
            with open(tmp_path, "wb") as out:
                shutil.copyfileobj(fh, out)
            return _ffmpeg_decode(tmp_path, name)
    return _soundfile_decode(fh, name, total, head)


def _finish(data: np.ndarray, rate: int, name: str,
            target_rate: Optional[int]) -> Tuple[np.ndarray, int]:
    if data.shape[0] == 0:
        raise AudioError(name, "contains no audio (0 samples)")
    if rate <= 0:
        raise AudioError(name, f"invalid sample rate {rate}")
    if not np.all(np.isfinite(data)):
        raise AudioError(name, "contains NaN or infinite sample values")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if target_rate is not None and rate != target_rate:
        mono = resample(mono, rate, target_rate)
        rate = int(target_rate)
    return mono.astype(np.float32), rate


def read_audio(source: Union[PathLike, bytes], target_rate: Optional[int] = None,
               name: Optional[str] = None) -> Tuple[np.ndarray, int]:
    """Reads an audio file (path) or an in-memory file (bytes).

    Returns ``(mono float32 int16-scale samples, sample_rate)``; ``target_rate=None`` keeps the
    file's rate, otherwise the samples are resampled to ``target_rate``. ``name`` is what error
    messages call the input (default: the path, or ``<bytes>``).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
        samples, rate = _decode(_io.BytesIO(data), name, len(data), None)
        return _finish(samples, rate, name, target_rate)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path or bytes, got {type(source).__name__}")
    path = os.fspath(source)
    name = name or path
    if not os.path.exists(path):
        raise AudioError(name, "file not found")
    if os.path.isdir(path):
        raise AudioError(name, "is a directory, not an audio file")
    try:
        total = os.path.getsize(path)
        with open(path, "rb") as fh:
            samples, rate = _decode(fh, name, total, path)
    except OSError as e:
        raise AudioError(name, f"cannot be read ({e.strerror or e})") from e
    return _finish(samples, rate, name, target_rate)


def load_audio(path: PathLike, target_rate: int = TARGET_RATE) -> np.ndarray:
    """Loads an audio file as mono float32 samples on the int16 scale at ``target_rate`` Hz."""
    return read_audio(path, int(target_rate))[0]


def decode_audio_bytes(data: bytes, name: str = "<bytes>",
                       target_rate: int = TARGET_RATE) -> np.ndarray:
    """:func:`load_audio` for an in-memory file; ``name`` is used in error messages (and, for
    M4A, its extension). Use :func:`read_audio` to keep the native rate."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_audio_bytes expects bytes, got {type(data).__name__}")
    return read_audio(bytes(data), int(target_rate), name=name)[0]


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resamples 1-D samples with soxr (high quality); returns float64 (float32 in -> float32)."""
    import soxr  # noqa: PLC0415

    if int(orig_rate) == int(target_rate):
        return samples
    x = np.asarray(samples)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    y = soxr.resample(x.astype(np.float64), int(orig_rate), int(target_rate), quality="HQ")
    return y.astype(dtype)


# --------------------------------------------------------------------------------------------
# File -> normalised log mel (the reference's offline pipeline)
# --------------------------------------------------------------------------------------------

def speech_log_mel(path_or_samples, *, sample_rate: int = TARGET_RATE, min_frames: int = 100,
                   use_vad: bool = True, name: Optional[str] = None,
                   voice_quality: bool = False) -> np.ndarray:
    """The reference's offline features: load -> webrtcvad -> log mel filterbank -> normalise.

    Args:
      path_or_samples: a file path, the file's bytes, or 1-D int16-scale samples at
        ``sample_rate`` (resampled to 16 kHz when different).
      sample_rate: rate of ``path_or_samples`` when it is an array (ignored for files).
      min_frames: fewest feature frames (10 ms each) accepted; the reference trains on crops
        of 100-150 frames.
      use_vad: apply :func:`~keras_sf2f.audio.vad.webrtc_vad` (aggressiveness 1, 30 ms frames,
        300 ms padding) before the features, as the reference does.
      name: how to call an array input in error messages.
      voice_quality: also compute the four voice-quality channels of the same speech
        (:mod:`~keras_sf2f.audio.voice_quality`) and append them after the log-mels.

    Returns:
      float32 ``[frames, 40]``, normalised with :func:`~keras_sf2f.audio.features.normalize_log_mel`;
      ``[frames, 44]`` with ``voice_quality``.

    Raises:
      AudioError: unreadable input, nothing left after VAD, or fewer than ``min_frames`` frames.
    """
    from keras_sf2f.audio import features, vad  # noqa: PLC0415 - TF import only when needed

    if isinstance(path_or_samples, (str, os.PathLike)):
        name = name or os.fspath(path_or_samples)
        samples = load_audio(path_or_samples, TARGET_RATE)
    elif isinstance(path_or_samples, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        samples = decode_audio_bytes(path_or_samples, name, TARGET_RATE)
    else:
        name = name or "<samples>"
        samples = np.asarray(path_or_samples)
        if samples.ndim != 1:
            raise AudioError(name, f"expected 1-D samples, got shape {samples.shape}")
        if samples.size == 0:
            raise AudioError(name, "contains no audio (0 samples)")
        if not np.issubdtype(samples.dtype, np.number) or np.iscomplexobj(samples):
            raise AudioError(name, f"expected real-valued samples, got dtype {samples.dtype}")
        if not np.all(np.isfinite(samples)):
            raise AudioError(name, "contains NaN or infinite sample values")
        if int(sample_rate) != TARGET_RATE:
            samples = resample(samples.astype(np.float64), int(sample_rate), TARGET_RATE)
    total_s = len(samples) / TARGET_RATE
    if use_vad:
        speech = vad.webrtc_vad(vad.to_int16(samples), TARGET_RATE)
        where = "of speech after voice activity detection"
        if speech.size == 0:
            raise AudioError(name, f"nothing left after voice activity detection (no speech "
                                   f"found in {total_s:.2f} s of audio)")
    else:
        speech = samples
        where = "of audio"
    n_frames = features.num_frames(len(speech), TARGET_RATE)
    if n_frames < min_frames:
        raise AudioError(name, f"only {len(speech) / TARGET_RATE:.2f} s {where}; at least "
                               f"{min_frames / 100:.2f} s ({min_frames} frames) is needed")
    feats = features.log_mel_filterbank(np.asarray(speech, np.float32), TARGET_RATE)
    mel = features.normalize_log_mel(feats.numpy()).astype(np.float32)
    if not voice_quality:
        return mel
    from keras_sf2f.audio.voice_quality import voice_quality_channels  # noqa: PLC0415
    return np.concatenate([mel, voice_quality_channels(speech).numpy()], axis=1)
