"""What audio the serving graph takes as it is, and conversion of the rest to a WAV it takes.

The exported graph decodes WAV only (TF-Serving has no op for FLAC, Ogg or MP3), at the sample
rates in :data:`SUPPORTED_RATES`. The REST client (``export/client.py``) and the development
server (``rest_server``) convert everything else that ``keras_sf2f.audio.io`` can read before
it reaches the graph:

* :func:`inspect_wav` mirrors the graph's own header checks (``keras_sf2f.serving.wav``) in pure
  Python and says whether the bytes go through unchanged (``OK``), are a well-formed WAV with
  an encoding, rate or channel count the graph refuses (``CONVERT``), are a broken WAV whose
  problem the graph itself reports best (``BROKEN``), or are not a WAV at all (``NOT_WAV``);
* :func:`convert_to_wav` decodes any format the project reads (libsndfile's WAV encodings,
  FLAC, Ogg, MP3, AIFF ...; M4A/AAC through ffmpeg when allowed) into a mono 32-bit float WAV,
  at the file's own rate when the model takes it, else at 16 kHz. Float keeps the decoded
  values exactly: the graph maps float ``f`` to ``f * 32768``, the same int16 scale the loader
  returns.

This module imports no TensorFlow (the client must run without it); numpy, soundfile and soxr
are imported only when something is converted.
"""

from __future__ import annotations

import io
from typing import NamedTuple, Optional, Sequence

__all__ = ["SUPPORTED_RATES", "TARGET_RATE", "MAX_CHANNELS", "MAX_CHUNKS", "SNIFF",
           "OK", "CONVERT", "BROKEN", "NOT_WAV", "WavVerdict", "inspect_wav", "sniff",
           "convert_to_wav", "ConversionError"]

#: The features' rate; everything is resampled to it in the graph.
TARGET_RATE = 16000
#: Input rates the serving graph accepts (each converted to TARGET_RATE by
#: ``keras_sf2f.serving.resample``): every common rate from telephone to studio audio.
SUPPORTED_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
#: Channels the graph averages to mono (more is refused as a corrupt header).
MAX_CHANNELS = 16
#: Chunks the graph examines before giving up on finding ``fmt `` and ``data``.
MAX_CHUNKS = 64
_UNKNOWN_SIZE = 0xFFFFFFFF

# (offset, magic bytes, what the file looks like, whether it is an audio container that the
# project's loader may read). Shared with the graph's "not a WAV file" message (wav.py).
SNIFF = (
    (0, b"fLaC", "a FLAC file", True), (0, b"OggS", "an Ogg file", True),
    (0, b"ID3", "an MP3 file", True), (0, b"\xff\xfb", "an MP3 file", True),
    (0, b"\xff\xf3", "an MP3 file", True), (0, b"\xff\xf2", "an MP3 file", True),
    (0, b"\xff\xf1", "an AAC file", True), (0, b"\xff\xf9", "an AAC file", True),
    (4, b"ftyp", "an MP4/M4A file", True),
    (0, b"RF64", "an RF64 (64-bit) WAV file, which is not supported", True),
    (0, b"RIFX", "a big-endian RIFX file, which is not supported", True),
    (0, b"FORM", "an AIFF file", True), (0, b"caff", "a CAF file", True),
    (0, b".snd", "an AU file", True),
    (0, b"\x89PNG", "a PNG image", False), (0, b"\xff\xd8\xff", "a JPEG image", False),
    (0, b"{", "text (JSON?)", False), (0, b"<", "text (HTML/XML?)", False),
)

OK, CONVERT, BROKEN, NOT_WAV = "ok", "convert", "broken", "not-wav"
_TAG_NAMES = {0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "u-law", 0x0011: "IMA ADPCM",
              0x0031: "GSM 6.10", 0x0055: "MP3"}


class WavVerdict(NamedTuple):
    verdict: str          # OK, CONVERT, BROKEN or NOT_WAV
    detail: str = ""      # what the graph would refuse (CONVERT, BROKEN)
    sample_rate: int = 0  # from the header when there is one


class ConversionError(ValueError):
    """Audio that looks like a format the project reads but cannot be converted."""


def sniff(data: bytes) -> tuple[Optional[str], bool]:
    """(what the bytes look like or None, whether that is an audio container)."""
    for offset, magic, what, audio in SNIFF:
        if data[offset:offset + len(magic)] == magic:
            return what, audio
    return None, False


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 2].ljust(2, b"\0"), "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4].ljust(4, b"\0"), "little")


def inspect_wav(data: bytes, rates: Sequence[int] = SUPPORTED_RATES) -> WavVerdict:
    """Whether the graph (``keras_sf2f.serving.wav`` + the rate check) decodes ``data`` as it is.

    Only the header is read. The walk over the chunks is the graph's: the first ``fmt ``
    chunk, the first ``data`` chunk, at most MAX_CHUNKS chunks.
    """
    n = len(data)
    if n == 0:
        return WavVerdict(BROKEN, "empty input")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return WavVerdict(NOT_WAV)
    offset, fmt_at, fmt_size, data_at, data_size = 12, -1, 0, -1, 0
    for _ in range(MAX_CHUNKS):
        if offset + 8 > n:
            break
        chunk, size = data[offset:offset + 4], _u32(data, offset + 4)
        if chunk == b"fmt " and fmt_at < 0:
            fmt_at, fmt_size = offset + 8, size
        if chunk == b"data":
            data_at, data_size = offset + 8, size
            break
        offset += 8 + size + size % 2
    if fmt_at < 0 or fmt_size < 16 or fmt_at + 16 > n:
        return WavVerdict(BROKEN, "no complete fmt chunk")
    tag, channels, rate = _u16(data, fmt_at), _u16(data, fmt_at + 2), _u32(data, fmt_at + 4)
    block_align, bits = _u16(data, fmt_at + 12), _u16(data, fmt_at + 14)
    if tag == 0xFFFE:
        if fmt_size < 40 or fmt_at + 26 > n:
            return WavVerdict(BROKEN, "incomplete WAVE_FORMAT_EXTENSIBLE fmt chunk", rate)
        tag = _u16(data, fmt_at + 24)
    if data_at < 0:
        return WavVerdict(BROKEN, "no data chunk", rate)
    available = n - data_at
    if data_size != _UNKNOWN_SIZE and data_size > available:
        return WavVerdict(BROKEN, "truncated data chunk", rate)
    decodable = (tag == 1 and bits in (8, 16, 24, 32)) or (tag == 3 and bits in (32, 64))
    refused = []
    if not decodable:
        name = _TAG_NAMES.get(tag, f"{bits}-bit " + ("PCM" if tag == 1 else "float")
                              if tag in (1, 3) else f"format tag {tag}")
        refused.append(f"encoding {name}")
    if not 1 <= channels <= MAX_CHANNELS:
        refused.append(f"{channels} channels")
    elif decodable and block_align != channels * (bits // 8):
        return WavVerdict(BROKEN, f"block align {block_align}", rate)
    if rate not in tuple(rates):
        refused.append(f"sample rate {rate} Hz")
    if refused:
        return WavVerdict(CONVERT, ", ".join(refused), rate)
    declared = available if data_size == _UNKNOWN_SIZE else data_size
    if min(declared, available) // (channels * (bits // 8)) == 0:
        return WavVerdict(BROKEN, "no samples", rate)
    return WavVerdict(OK, "", rate)


def convert_to_wav(data: bytes, name: str = "audio", *,
                   rates: Sequence[int] = SUPPORTED_RATES,
                   max_seconds: Optional[float] = None, allow_ffmpeg: bool = True) -> bytes:
    """Decodes ``data`` (any format ``keras_sf2f.audio.io`` reads) -> a mono 32-bit float WAV.

    The file's own rate is kept when it is in ``rates`` (the graph resamples it as it would a
    WAV at that rate); other rates are resampled to 16 kHz by the loader (soxr, high quality).
    ``max_seconds``: refuse longer audio before decoding it, with the graph's own message (the
    development server bounds its memory this way; the length is read from the header).
    ``allow_ffmpeg=False`` refuses M4A/AAC, which only an ffmpeg subprocess decodes, and whose
    length cannot be checked first.

    Raises:
      ConversionError: naming ``name`` and the problem.
    """
    import numpy as np  # noqa: PLC0415 - only when converting
    import soundfile as sf  # noqa: PLC0415

    from keras_sf2f.audio import io as audio_io  # noqa: PLC0415 - imports no TensorFlow

    what, _ = sniff(data)
    if what in ("an MP4/M4A file", "an AAC file") and not allow_ffmpeg:
        raise ConversionError(
            f"{name}: {what} cannot be converted here (only ffmpeg decodes it); convert it "
            "first, e.g. with export/client.py (which needs ffmpeg) or ffmpeg -i INPUT -ar "
            "16000 -ac 1 OUTPUT.wav")
    if max_seconds is not None and what not in ("an MP4/M4A file", "an AAC file"):
        try:
            info = sf.info(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - the loader below names the problem
            info = None
        if info is not None and info.samplerate > 0:
            seconds = info.frames / info.samplerate
            if seconds > max_seconds:
                raise ConversionError(
                    f"{name}: the audio is {seconds:.2f} s long; the maximum is "
                    f"{max_seconds:g} s (set by --max_audio_seconds at export)")
    try:
        samples, rate = audio_io.read_audio(data, None, name=name)
        if rate not in tuple(rates):
            samples = audio_io.resample(samples, rate, TARGET_RATE)
            rate = TARGET_RATE
    except audio_io.AudioError as e:
        raise ConversionError(str(e)) from None
    out = io.BytesIO()
    sf.write(out, np.asarray(samples, np.float32) / np.float32(32768.0), int(rate),
             subtype="FLOAT", format="WAV")
    return out.getvalue()
