"""WAV decoding inside a TensorFlow graph, with stock ops only.

``tf.audio.decode_wav`` reads 16-bit PCM only and fails with terse messages on anything else.
:func:`decode_wav` parses the RIFF container itself (``tf.io.decode_raw`` on the bytes, a bounded
``tf.while_loop`` over the chunks) and decodes

* integer PCM, 8-bit (unsigned), 16-bit, 24-bit and 32-bit (signed, little-endian);
* IEEE float, 32-bit and 64-bit;
* the same encodings wrapped in WAVE_FORMAT_EXTENSIBLE (format tag 0xFFFE, sub-format GUID);
* any number of channels (1 to 16), averaged to mono.

Samples come out as float32 on the **int16 scale** (what the features expect), the same mapping
as ``keras_sf2f.audio.io``: 8-bit ``u`` -> ``(u - 128) * 256``, 16-bit exactly, 24-bit ``v`` ->
``v / 256``, 32-bit ``v`` -> ``v / 65536``, float ``f`` -> ``f * 32768``.

Everything else is refused by a ``tf.debugging.Assert`` whose message says what is wrong:
empty input, not a WAV file (naming FLAC / Ogg / MP3 / MP4 / RF64 / big-endian RIFX when it
recognises them), a missing or truncated ``fmt `` chunk, a missing ``data`` chunk, an unsupported
encoding (A-law, u-law, ADPCM, MP3-in-WAV, 12-bit PCM ...), an inconsistent header (block
alignment), a data chunk that declares more bytes than the file holds (truncated file), no
samples. Messages are prefixed with the caller's ``name`` (e.g. ``audio[3]``). Inside
TF-Serving an assertion becomes an ``INVALID_ARGUMENT`` status, i.e. an HTTP 400 whose
``error`` text contains the message.

A ``data`` chunk size of 0xFFFFFFFF (written by streaming encoders that cannot seek back) means
"until the end of the file". A trailing partial sample frame is dropped.

Messages avoid quote characters: TensorFlow C-escapes them in assertion texts.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from keras_sf2f.serving.audio_formats import MAX_CHANNELS, MAX_CHUNKS, SNIFF

__all__ = ["WavInfo", "read_wav_header", "decode_wav_data", "decode_wav", "assert_that",
           "MAX_CHUNKS", "ENCODINGS"]

#: Encodings decoded (index used by the decoder's switch).
ENCODINGS = ("8-bit unsigned PCM", "16-bit PCM", "24-bit PCM", "32-bit PCM", "32-bit float",
             "64-bit float")
_UNKNOWN_SIZE = 0xFFFFFFFF

# Format tags with a name worth printing (the rest print as a number).
_TAG_NAMES = {
    0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "u-law", 0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10", 0x0050: "MPEG audio", 0x0055: "MP3", 0x00FF: "AAC", 0x0161: "WMA",
    0x2000: "AC-3",
}


def _fourcc(text: str) -> int:
    b = text.encode("latin-1")
    return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24


_FMT, _DATA = _fourcc("fmt "), _fourcc("data")

class WavInfo(NamedTuple):
    """Header fields (scalar tensors) and the checks' outcome."""
    sample_rate: tf.Tensor      # int32
    channels: tf.Tensor         # int32
    num_frames: tf.Tensor       # int64, whole sample frames in the data chunk
    data_offset: tf.Tensor      # int64, first byte of the samples
    encoding: tf.Tensor         # int32 index into ENCODINGS (or -1)
    frame_bytes: tf.Tensor      # int64, bytes per sample frame (all channels)
    ok: tf.Tensor               # bool: every header check passed
    message: tf.Tensor          # string: the first failed check (empty when ok)


def assert_that(condition, message):
    """``tf.debugging.Assert(condition, [message])`` (the message is the only data printed)."""
    return tf.debugging.Assert(condition, [message], summarize=1)


class _Bytes:
    """Little-endian reads from the bytes of one file. Reads past the end return zeros and
    never fail (indices are clamped into a zero-padded copy), so every header field can be
    computed before anything is checked."""

    _HEAD = 16

    def __init__(self, contents):
        b = tf.io.decode_raw(contents, tf.uint8)
        self.size = tf.cast(tf.size(b), tf.int64)
        self.b = tf.concat([b, tf.zeros([self._HEAD], tf.uint8)], 0)
        self.last = tf.cast(tf.size(self.b) - 1, tf.int64)
        self.head = tf.cast(self.b[:self._HEAD], tf.int64)

    def read(self, offset, nbytes: int):
        """Unsigned little-endian integer of ``nbytes`` bytes at ``offset`` (int64)."""
        index = tf.clip_by_value(tf.cast(offset, tf.int64) + tf.range(nbytes, dtype=tf.int64),
                                 0, self.last)
        weights = tf.constant([256 ** k for k in range(nbytes)], tf.int64)
        return tf.reduce_sum(tf.cast(tf.gather(self.b, index), tf.int64) * weights)

    def u16(self, offset):
        return self.read(offset, 2)

    def u32(self, offset):
        return self.read(offset, 4)

    def starts_with(self, offset: int, magic: bytes):
        """Whether the file holds ``magic`` at ``offset`` (< 16)."""
        expected = tf.constant(list(magic), tf.int64)
        return (self.size >= offset + len(magic)) & tf.reduce_all(
            tf.equal(self.head[offset:offset + len(magic)], expected))


def _first_failure(checks, default=""):
    """The message of the first (condition_failed, message) pair whose condition holds."""
    message = tf.constant(default)
    for failed, text in reversed(checks):
        message = tf.where(failed, text, message)
    return message


def _not_wav_message(data: _Bytes, prefix):
    what = tf.constant("it does not start with a RIFF/WAVE header")
    for offset, magic, name, _ in reversed(SNIFF):
        what = tf.where(data.starts_with(offset, magic), tf.constant(f"it looks like {name}"),
                        what)
    return tf.strings.join([prefix, "not a WAV file (", what, "); send the bytes of a WAV file, "
                            "e.g. converted with ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav "
                            "(export/client.py converts FLAC, Ogg, MP3 and other audio files "
                            "itself)"])


def _tag_text(tag):
    text = tf.strings.join(["format tag ", tf.strings.as_string(tag)])
    for value, name in _TAG_NAMES.items():
        text = tf.where(tf.equal(tag, value), tf.constant(f"format tag {value} ({name})"), text)
    return text


def read_wav_header(contents, name="audio") -> WavInfo:
    """Parses the RIFF/WAVE header of one WAV file (scalar string); never raises by itself.

    Returns a :class:`WavInfo` whose ``ok``/``message`` say whether the file can be decoded.
    ``name`` (a Python or scalar string tensor) prefixes the message.
    """
    prefix = tf.strings.join([name, ": "])
    data = _Bytes(contents)
    n = data.size
    is_riff = data.starts_with(0, b"RIFF") & data.starts_with(8, b"WAVE")

    def cond(i, offset, fmt_off, fmt_size, data_off, data_size):
        return (i < MAX_CHUNKS) & (offset + 8 <= n) & (data_off < 0)

    def body(i, offset, fmt_off, fmt_size, data_off, data_size):
        chunk_id = data.u32(offset)
        size = data.u32(offset + 4)
        is_fmt = tf.equal(chunk_id, _FMT) & (fmt_off < 0)
        is_data = tf.equal(chunk_id, _DATA)
        fmt_off = tf.where(is_fmt, offset + 8, fmt_off)
        fmt_size = tf.where(is_fmt, size, fmt_size)
        data_off = tf.where(is_data, offset + 8, data_off)
        data_size = tf.where(is_data, size, data_size)
        return i + 1, offset + 8 + size + size % 2, fmt_off, fmt_size, data_off, data_size

    minus_one = tf.constant(-1, tf.int64)
    _, _, fmt_off, fmt_size, data_off, data_size = tf.while_loop(
        cond, body, [tf.constant(0), tf.constant(12, tf.int64), minus_one, minus_one,
                     minus_one, minus_one])
    has_fmt = fmt_off >= 0
    fmt_complete = has_fmt & (fmt_size >= 16) & (fmt_off + 16 <= n)
    tag = data.u16(fmt_off)
    channels = data.u16(fmt_off + 2)
    rate = data.u32(fmt_off + 4)
    block_align = data.u16(fmt_off + 12)
    bits = data.u16(fmt_off + 14)
    extensible = tf.equal(tag, 0xFFFE)
    ext_complete = (fmt_size >= 40) & (fmt_off + 26 <= n)
    tag = tf.where(extensible, data.u16(fmt_off + 24), tag)
    is_pcm = tf.equal(tag, 1)
    is_float = tf.equal(tag, 3)
    encoding = tf.where(is_pcm & tf.equal(bits, 8), 0,
               tf.where(is_pcm & tf.equal(bits, 16), 1,
               tf.where(is_pcm & tf.equal(bits, 24), 2,
               tf.where(is_pcm & tf.equal(bits, 32), 3,
               tf.where(is_float & tf.equal(bits, 32), 4,
               tf.where(is_float & tf.equal(bits, 64), 5, -1))))))
    frame_bytes = channels * (bits // 8)
    available = tf.maximum(n - data_off, 0)
    declared = tf.where(tf.equal(data_size, _UNKNOWN_SIZE), available, data_size)
    num_frames = tf.math.floordiv(tf.minimum(declared, available), tf.maximum(frame_bytes, 1))

    bits_text = tf.strings.as_string(bits)
    supported = ("supported: 8/16/24/32-bit integer PCM and 32/64-bit IEEE float "
                 "(also as WAVE_FORMAT_EXTENSIBLE)")
    checks = [
        (tf.equal(n, 0), tf.strings.join([prefix, "empty input (0 bytes); expected the bytes "
                                          "of a WAV file"])),
        (~is_riff, _not_wav_message(data, prefix)),
        (~has_fmt, tf.strings.join([prefix, "WAV file has no fmt chunk (corrupt or truncated "
                                    "header)"])),
        (~fmt_complete, tf.strings.join([prefix, "WAV file is truncated or corrupt: its fmt "
                                         "chunk is incomplete"])),
        (extensible & ~ext_complete, tf.strings.join(
            [prefix, "WAV file is corrupt: its WAVE_FORMAT_EXTENSIBLE fmt chunk is "
             "incomplete"])),
        (~is_pcm & ~is_float, tf.strings.join(
            [prefix, "unsupported WAV encoding: ", _tag_text(tag), "; ", supported])),
        (tf.equal(encoding, -1), tf.strings.join(
            [prefix, "unsupported WAV encoding: ", bits_text, "-bit ",
             tf.where(is_pcm, "integer PCM", "IEEE float"), "; ", supported])),
        ((channels < 1) | (channels > MAX_CHANNELS), tf.strings.join(
            [prefix, "WAV header is corrupt or unsupported: ", tf.strings.as_string(channels),
             f" channels (1 to {MAX_CHANNELS} are accepted)"])),
        (~tf.equal(block_align, frame_bytes), tf.strings.join(
            [prefix, "WAV header is corrupt: block align ", tf.strings.as_string(block_align),
             " does not match ", tf.strings.as_string(channels), " channel(s) of ", bits_text,
             " bits"])),
        (data_off < 0, tf.strings.join(
            [prefix, "WAV file has no data chunk (truncated or corrupt)"])),
        (~tf.equal(data_size, _UNKNOWN_SIZE) & (data_size > available), tf.strings.join(
            [prefix, "WAV file is truncated: its data chunk declares ",
             tf.strings.as_string(data_size), " bytes but only ",
             tf.strings.as_string(available), " follow"])),
        (tf.equal(num_frames, 0), tf.strings.join([prefix, "WAV file holds no samples"])),
    ]
    ok = tf.logical_not(tf.reduce_any(tf.stack([failed for failed, _ in checks])))
    return WavInfo(sample_rate=tf.cast(tf.minimum(rate, 2 ** 31 - 1), tf.int32),
                   channels=tf.cast(channels, tf.int32), num_frames=num_frames,
                   data_offset=tf.maximum(data_off, 0), encoding=tf.cast(encoding, tf.int32),
                   frame_bytes=frame_bytes, ok=ok, message=_first_failure(checks))


def decode_wav_data(contents, info: WavInfo) -> tf.Tensor:
    """Samples of a WAV whose header passed (``info.ok``): float32 ``[frames]`` mono, int16
    scale. Run it under a control dependency on the header assertion."""
    nbytes = info.num_frames * info.frame_bytes
    raw = tf.strings.substr(contents, info.data_offset, nbytes)

    def u8():
        return (tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.float32) - 128.0) * 256.0

    def i16():
        return tf.cast(tf.io.decode_raw(raw, tf.int16, little_endian=True), tf.float32)

    def i24():
        b = tf.cast(tf.reshape(tf.io.decode_raw(raw, tf.uint8), [-1, 3]), tf.int32)
        v = b[:, 0] + b[:, 1] * 256 + b[:, 2] * 65536
        v = tf.where(v >= 2 ** 23, v - 2 ** 24, v)
        return tf.cast(v, tf.float32) / 256.0

    def i32():
        v = tf.io.decode_raw(raw, tf.int32, little_endian=True)
        return tf.cast(tf.cast(v, tf.float64) / 65536.0, tf.float32)

    def f32():
        return tf.io.decode_raw(raw, tf.float32, little_endian=True) * 32768.0

    def f64():
        return tf.cast(tf.io.decode_raw(raw, tf.float64, little_endian=True) * 32768.0,
                       tf.float32)

    samples = tf.switch_case(tf.maximum(info.encoding, 0), [u8, i16, i24, i32, f32, f64])
    samples = tf.reshape(samples, [-1, info.channels])
    if_mono = samples[:, 0]
    return tf.cond(tf.equal(info.channels, 1), lambda: if_mono,
                   lambda: tf.reduce_mean(samples, axis=1))


def decode_wav(contents, name="audio"):
    """Checks and decodes one WAV file (scalar string) -> ``(samples [n] float32 int16-scale
    mono, sample_rate int32 scalar)``. Raises ``InvalidArgumentError`` with a clear message on
    anything it cannot decode."""
    info = read_wav_header(contents, name)
    with tf.control_dependencies([assert_that(info.ok, info.message)]):
        samples = decode_wav_data(contents, info)
    return samples, info.sample_rate
