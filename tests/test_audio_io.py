"""Loading real audio files: every common encoding round-trips on the int16 scale, resampling
keeps frequencies, and every bad input names the file and the problem."""

import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import wave

import numpy as np
import pytest
import soundfile as sf

from keras_sf2f.audio import io as aio
from keras_sf2f.audio.io import AudioError

RATES = (8000, 22050, 44100, 48000)


def _int16_noise(seed, n, channels=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, size=(n, channels)).astype(np.int16)


def _write_wave(path, samples_int, sampwidth, rate):
    """Writes with the stdlib wave module (independent of libsndfile)."""
    samples_int = np.asarray(samples_int)
    channels = 1 if samples_int.ndim == 1 else samples_int.shape[1]
    dtype = {1: np.uint8, 2: "<i2"}[sampwidth]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples_int.astype(dtype)).tobytes())


def _sine(freq, rate, seconds=1.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def _peak_frequency(x, rate):
    x = np.asarray(x, np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return np.argmax(spec) * rate / (8 * len(x))


# --------------------------------------------------------------------------------------------
# Encodings


def test_wave_module_16bit_mono_and_stereo_exact(tmp_path):
    x = _int16_noise(0, 3000)[:, 0]
    _write_wave(tmp_path / "m.wav", x, 2, 22050)
    got, rate = aio.read_audio(tmp_path / "m.wav")
    assert rate == 22050 and got.dtype == np.float32
    np.testing.assert_array_equal(got, x)

    st = _int16_noise(1, 3000, channels=2)
    _write_wave(tmp_path / "s.wav", st, 2, 8000)
    got, rate = aio.read_audio(tmp_path / "s.wav")
    np.testing.assert_array_equal(got, st.astype(np.float64).mean(axis=1))


def test_wave_module_8bit_unsigned(tmp_path):
    u = np.random.default_rng(2).integers(0, 256, size=2000).astype(np.uint8)
    _write_wave(tmp_path / "u8.wav", u, 1, 8000)
    got, _ = aio.read_audio(tmp_path / "u8.wav")
    np.testing.assert_array_equal(got, (u.astype(np.float64) - 128) * 256)


@pytest.mark.parametrize("fmt,subtype,ext", [
    ("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_32", "wav"),
    ("WAV", "FLOAT", "wav"), ("WAV", "DOUBLE", "wav"), ("WAVEX", "PCM_16", "wav"),
    ("FLAC", "PCM_16", "flac"), ("FLAC", "PCM_24", "flac"), ("AIFF", "PCM_16", "aiff"),
])
def test_lossless_encodings_round_trip_on_int16_scale(tmp_path, fmt, subtype, ext):
    x = _int16_noise(3, 4000, channels=2)
    path = tmp_path / f"a.{ext}"
    # Integer subtypes take the int16 values as they are; float subtypes hold [-1, 1] values.
    data = x / 32768.0 if subtype in ("FLOAT", "DOUBLE") else x
    sf.write(path, data, 44100, format=fmt, subtype=subtype)
    got, rate = aio.read_audio(path)
    assert rate == 44100
    np.testing.assert_array_equal(got, x.astype(np.float64).mean(axis=1).astype(np.float32))


def test_24bit_fractions_and_float_scale(tmp_path):
    v = np.array([1, -1, 255, 8388607, -8388608], np.int32) * 256  # 24-bit values in int32
    sf.write(tmp_path / "p24.wav", v, 16000, subtype="PCM_24")
    got, _ = aio.read_audio(tmp_path / "p24.wav")
    np.testing.assert_allclose(got, v / 65536.0, rtol=0, atol=1e-6)  # 24-bit v -> v / 256
    f = np.array([0.0, 0.5, -1.0, 1.5], np.float32)  # float: [-1, 1] full scale, no clipping
    sf.write(tmp_path / "f.wav", f, 16000, subtype="FLOAT")
    got, _ = aio.read_audio(tmp_path / "f.wav")
    np.testing.assert_array_equal(got, f * 32768)


@pytest.mark.parametrize("fmt,subtype,ext", [("OGG", "VORBIS", "ogg"),
                                             ("MP3", "MPEG_LAYER_III", "mp3")])
def test_lossy_encodings_keep_level_and_pitch(tmp_path, fmt, subtype, ext):
    x = _sine(440.0, 22050, seconds=1.0, amp=0.5)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 22050, format=fmt, subtype=subtype)
    got, rate = aio.read_audio(path)
    assert rate == 22050
    assert abs(len(got) - len(x)) < 0.1 * len(x)
    assert abs(_peak_frequency(got, rate) - 440.0) < 2.0
    mid = got[len(got) // 4: 3 * len(got) // 4]
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("rate", RATES)
def test_resampling_to_16k_keeps_frequency_and_length(tmp_path, rate):
    freq = 1000.0 if rate > 8000 else 700.0
    x = np.round(_sine(freq, rate, seconds=1.5) * 32767).astype(np.int16)
    _write_wave(tmp_path / "s.wav", x, 2, rate)
    got = aio.load_audio(tmp_path / "s.wav")
    assert got.dtype == np.float32
    assert abs(len(got) - 1.5 * 16000) <= 1
    assert abs(_peak_frequency(got, 16000) - freq) < 1.0
    mid = got[2000:-2000]
    assert np.abs(mid).max() == pytest.approx(16383.5, rel=0.02)  # amplitude kept on int16 scale
    same = aio.decode_audio_bytes((tmp_path / "s.wav").read_bytes(), name="s.wav")
    np.testing.assert_array_equal(same, got)


def test_read_audio_bytes_keeps_native_rate(tmp_path):
    x = _int16_noise(7, 2205)[:, 0]
    _write_wave(tmp_path / "a.wav", x, 2, 22050)
    got, rate = aio.read_audio((tmp_path / "a.wav").read_bytes(), name="upload.wav")
    assert rate == 22050
    np.testing.assert_array_equal(got, x)
    with pytest.raises(AudioError, match="^upload.wav: empty file"):
        aio.read_audio(b"", name="upload.wav")
    with pytest.raises(TypeError):
        aio.read_audio(1234)


def test_16k_input_is_not_touched(tmp_path):
    x = _int16_noise(4, 1600)[:, 0]
    _write_wave(tmp_path / "a.wav", x, 2, 16000)
    np.testing.assert_array_equal(aio.load_audio(tmp_path / "a.wav"), x)
    np.testing.assert_array_equal(aio.load_audio(str(tmp_path / "a.wav"), target_rate=8000).size,
                                  800)


# --------------------------------------------------------------------------------------------
# Bad inputs: the message names the file and the problem


def _expect(path_or_bytes, pattern, name=None):
    if isinstance(path_or_bytes, bytes):
        with pytest.raises(AudioError) as e:
            aio.decode_audio_bytes(path_or_bytes, name=name)
        assert str(e.value).startswith(f"{name}: ")
    else:
        with pytest.raises(AudioError) as e:
            aio.load_audio(path_or_bytes)
        assert str(path_or_bytes) in str(e.value)
        assert e.value.source == str(path_or_bytes)
    assert isinstance(e.value, ValueError)
    assert pattern in str(e.value), str(e.value)
    return str(e.value)


@pytest.fixture
def good_wav(tmp_path):
    path = tmp_path / "good.wav"
    _write_wave(path, _int16_noise(5, 16000)[:, 0], 2, 16000)
    return path.read_bytes()


def test_missing_empty_directory(tmp_path):
    _expect(tmp_path / "nope.wav", "file not found")
    (tmp_path / "empty.wav").write_bytes(b"")
    _expect(tmp_path / "empty.wav", "empty file (0 bytes)")
    (tmp_path / "dir.wav").mkdir()
    _expect(tmp_path / "dir.wav", "is a directory")
    _expect(b"", "empty file (0 bytes)", name="clip.wav")


def test_not_audio(tmp_path):
    (tmp_path / "photo.wav").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(500))
    _expect(tmp_path / "photo.wav", "not an audio file (it looks like a JPEG image)")
    (tmp_path / "notes.wav").write_text("this is not audio at all\n" * 40)
    _expect(tmp_path / "notes.wav", "not an audio file (it contains text)")
    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(0).bytes(3000))
    _expect(tmp_path / "noise.flac", "not a recognised audio file")


def test_truncated_files(tmp_path, good_wav):
    (tmp_path / "hdr.wav").write_bytes(good_wav[:30])
    _expect(tmp_path / "hdr.wav", "truncated WAV header")
    (tmp_path / "riff.wav").write_bytes(good_wav[:10])
    _expect(tmp_path / "riff.wav", "truncated WAV header")
    (tmp_path / "cut.wav").write_bytes(good_wav[:len(good_wav) // 2])
    msg = _expect(tmp_path / "cut.wav", "truncated WAV file")
    assert "declares 32000 bytes" in msg and "only 15978 are present" in msg
    (tmp_path / "nodata.wav").write_bytes(good_wav[:36])
    _expect(tmp_path / "nodata.wav", "no 'data' chunk")

    sf.write(tmp_path / "a.flac", _int16_noise(6, 16000), 16000)
    data = (tmp_path / "a.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:len(data) // 2])
    _expect(tmp_path / "cut.flac", "truncated or unsupported FLAC file")
    sf.write(tmp_path / "a.ogg", _sine(300, 16000), 16000)
    data = (tmp_path / "a.ogg").read_bytes()
    _expect(data[:len(data) // 2], "truncated or unsupported OGG file", name="cut.ogg")


def test_truncated_mp3(tmp_path):
    sf.write(tmp_path / "a.mp3", _sine(300, 16000, seconds=2.0), 16000, format="MP3")
    data = (tmp_path / "a.mp3").read_bytes()
    _expect(data[:len(data) // 2], "truncated MP3 file", name="cut.mp3")


def test_unsupported_wav_encoding(good_wav):
    data = bytearray(good_wav)
    data[20:22] = struct.pack("<H", 0x0055)
    _expect(bytes(data), "unsupported WAV encoding: format tag 0x0055 (MPEG Layer 3 (MP3))",
            name="mp3inside.wav")
    data[20:22] = struct.pack("<H", 0x1234)
    _expect(bytes(data), "unsupported WAV encoding: format tag 0x1234 (unknown)", name="odd.wav")


def test_zero_length_and_nonfinite(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.int16), 16000)
    _expect(tmp_path / "zero.wav", "contains no audio (0 samples)")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32), 16000,
             subtype="FLOAT")
    _expect(tmp_path / "nan.wav", "NaN or infinite")
    sf.write(tmp_path / "inf.flac", np.zeros(10, np.int16), 16000)  # fine
    assert aio.load_audio(tmp_path / "inf.flac").size == 10
    sf.write(tmp_path / "inf.wav", np.array([0.0, np.inf], np.float64), 16000, subtype="DOUBLE")
    _expect(tmp_path / "inf.wav", "NaN or infinite")


def test_bytes_type_checked():
    with pytest.raises(TypeError):
        aio.decode_audio_bytes("not bytes")


# --------------------------------------------------------------------------------------------
# M4A / AAC: in-process with PyAV, else through an ffmpeg process


def _m4a_bytes(payload: bytes) -> bytes:
    return b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A mp42isom" + b"MARK" + payload


@pytest.fixture
def no_pyav(monkeypatch):
    """PyAV made unavailable: ``import av`` raises ImportError, as when it is not installed."""
    monkeypatch.setitem(sys.modules, "av", None)


@pytest.fixture(scope="module")
def real_m4a(tmp_path_factory):
    """Real AAC files made by the ffmpeg program from known signals: a stereo 44.1 kHz M4A
    (left a 440 Hz sine at half scale, right noise), a mono 16 kHz M4A (VoxCeleb2's kind) and
    the stereo one as raw ADTS AAC. Returns {name: path}."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg program makes the M4A files (and is the reference decoder)")
    folder = tmp_path_factory.mktemp("m4a")
    rng = np.random.default_rng(21)
    stereo = np.stack([_sine(440, 44100, 1.5, amp=0.5),
                       np.clip(rng.normal(0, 0.15, 66150), -1, 1)], 1)
    mono = _sine(300, 16000, 2.0, amp=0.3) + _sine(1700, 16000, 2.0, amp=0.1) \
        + rng.normal(0, 0.02, 32000)
    paths = {}
    for stem, x, rate, ext, extra in [("stereo", stereo, 44100, "m4a", []),
                                      ("mono", mono, 16000, "m4a", []),
                                      ("adts", stereo, 44100, "aac", ["-f", "adts"])]:
        wav = folder / f"{stem}.wav"
        sf.write(wav, x, rate, subtype="PCM_16")
        paths[stem] = folder / f"{stem}.{ext}"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav),
                        "-c:a", "aac", "-b:a", "64k", *extra, str(paths[stem])], check=True)
    return paths


def test_pyav_and_ffmpeg_process_give_the_same_samples(real_m4a, tmp_path, monkeypatch):
    """The in-process decoder and the ffmpeg program agree: same length, rate and channels,
    values on the int16 scale within 1 LSB. (Measured: the pip wheel's FFmpeg and Debian's
    ffmpeg 5.1 AAC decoders differ by at most 1.2e-7 before the conversion to 16 bits, which
    flips the rounding of ~0.02 % of the samples by 1 LSB; the conversion itself is the same.)"""
    pytest.importorskip("av")
    for stem, path in real_m4a.items():
        fmt = "aac" if path.suffix == ".aac" else "mov"
        via_pyav, rate = aio._pyav_decode(str(path), path.name, fmt)
        via_ffmpeg, ffmpeg_rate = aio._ffmpeg_decode(str(path), path.name)
        assert rate == ffmpeg_rate == (16000 if stem == "mono" else 44100), stem
        assert via_pyav.dtype == via_ffmpeg.dtype == np.float64
        assert via_pyav.shape == via_ffmpeg.shape, stem
        assert via_pyav.shape[1] == (1 if stem == "mono" else 2)
        diff = np.abs(via_pyav - via_ffmpeg)
        assert diff.max() <= 1.0, (stem, diff.max())
        assert np.count_nonzero(diff) <= 1e-3 * diff.size, (stem, np.count_nonzero(diff))
        assert np.array_equal(via_pyav, np.round(via_pyav))  # 16-bit values, as ffmpeg's s16le
        if stem != "mono":  # the int16 scale and the channel order: left is the 0.5 sine
            mid = via_pyav[len(via_pyav) // 4: 3 * len(via_pyav) // 4]
            assert np.sqrt(np.mean(mid[:, 0] ** 2)) == pytest.approx(0.5 * 32768 / np.sqrt(2),
                                                                    rel=0.05)
            assert abs(_peak_frequency(mid[:, 0], rate) - 440) < 2

    # The public loaders take the in-process path (no ffmpeg program needed): path and bytes.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(aio, "_ffmpeg_decode", None)  # calling it would fail
    path = real_m4a["stereo"]
    via_pyav, _ = aio._pyav_decode(str(path), path.name, "mov")
    native, rate = aio.read_audio(path)
    assert rate == 44100 and native.dtype == np.float32
    np.testing.assert_array_equal(native, via_pyav.mean(axis=1).astype(np.float32))
    at16k = aio.load_audio(path)
    assert abs(len(at16k) - len(native) * 16000 / 44100) <= 1
    np.testing.assert_array_equal(aio.decode_audio_bytes(path.read_bytes(), name="up.m4a"),
                                  at16k)
    adts, _ = aio.read_audio(real_m4a["adts"].read_bytes(), name="clip.aac")
    assert adts.size > 0.9 * 66150


def test_corrupt_m4a_through_pyav_names_the_file(real_m4a, tmp_path, monkeypatch):
    pytest.importorskip("av")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # so no ffmpeg process answers
    data = real_m4a["stereo"].read_bytes()
    corrupt = "corrupt, truncated or unsupported M4A/AAC file (FFmpeg via PyAV: "
    (tmp_path / "cut.m4a").write_bytes(data[:len(data) // 2])  # ffmpeg writes the index last
    _expect(tmp_path / "cut.m4a", corrupt)
    _expect(data[:len(data) // 2], corrupt, name="upload.m4a")
    (tmp_path / "head.m4a").write_bytes(data[:40])
    _expect(tmp_path / "head.m4a", corrupt)
    garbled = bytearray(data)
    start = garbled.find(b"mdat") + 2000
    garbled[start:start + 4000] = np.random.default_rng(3).bytes(4000)
    (tmp_path / "garbled.m4a").write_bytes(bytes(garbled))
    _expect(tmp_path / "garbled.m4a", corrupt)
    (tmp_path / "junk.m4a").write_bytes(_m4a_bytes(bytes(100)))
    _expect(tmp_path / "junk.m4a", corrupt)


def test_mp4_without_audio_through_pyav(tmp_path, monkeypatch):
    pytest.importorskip("av")
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg program makes the video")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=32x32:rate=5:duration=1", "-c:v", "mpeg4",
                    str(tmp_path / "video.mp4")], check=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    _expect(tmp_path / "video.mp4", "has no audio stream")


def test_without_pyav_the_ffmpeg_process_decodes(real_m4a, no_pyav, monkeypatch):
    calls = []
    real_decode = aio._ffmpeg_decode

    def spy(path, name):
        calls.append(name)
        return real_decode(path, name)

    monkeypatch.setattr(aio, "_ffmpeg_decode", spy)
    path = real_m4a["stereo"]
    want, _ = real_decode(str(path), path.name)
    native, rate = aio.read_audio(path)
    assert rate == 44100 and calls == [str(path)]
    np.testing.assert_array_equal(native, want.mean(axis=1).astype(np.float32))
    from_bytes = aio.decode_audio_bytes(path.read_bytes(), name="up.m4a")  # via a temp file
    assert calls[-1] == "up.m4a"
    np.testing.assert_array_equal(from_bytes, aio.load_audio(path))


def test_m4a_without_pyav_or_ffmpeg_says_how_to_get_them(tmp_path, monkeypatch, no_pyav):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    (tmp_path / "a.m4a").write_bytes(_m4a_bytes(bytes(100)))
    hint = "needs the PyAV package or the ffmpeg program"
    msg = _expect(tmp_path / "a.m4a", hint)
    assert "pip install av" in msg and "apt install ffmpeg" in msg
    _expect((tmp_path / "a.m4a").read_bytes(), hint, name="clip.m4a")
    _expect(b"\xff\xf1\x50\x80" + bytes(100), hint, name="raw.aac")


def test_m4a_with_ffmpeg_is_decoded(tmp_path, monkeypatch, no_pyav):
    """A stand-in ffmpeg (prints ffmpeg's stream line, emits the payload as s16le) exercises the
    routing, channel averaging, scaling and resampling around the real decoder."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ffmpeg"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        path = sys.argv[sys.argv.index("-i") + 1]
        data = open(path, "rb").read()
        if b"MARK" not in data:
            sys.stderr.write(path + ": Invalid data found when processing input\\n")
            sys.exit(1)
        sys.stderr.write("  Duration: 00:00:00.50, start: 0.000000, bitrate: 128 kb/s\\n")
        sys.stderr.write("  Stream #0:0(und): Audio: aac (LC), 22050 Hz, stereo, fltp, 128 kb/s\\n")
        sys.stderr.flush()
        sys.stdout.buffer.write(data.split(b"MARK", 1)[1])
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    left = np.round(_sine(500, 22050, seconds=0.5) * 20000).astype(np.int16)
    right = (left // 2).astype(np.int16)
    payload = np.stack([left, right], 1).astype("<i2").tobytes()
    (tmp_path / "a.m4a").write_bytes(_m4a_bytes(payload))
    native, rate = aio.read_audio(tmp_path / "a.m4a")
    assert rate == 22050
    np.testing.assert_array_equal(native, (left.astype(np.float64) + right) / 2)
    at16k = aio.load_audio(tmp_path / "a.m4a")
    assert abs(len(at16k) - 8000) <= 1
    assert abs(_peak_frequency(at16k, 16000) - 500) < 2
    from_bytes = aio.decode_audio_bytes((tmp_path / "a.m4a").read_bytes(), name="x.m4a")
    np.testing.assert_array_equal(from_bytes, at16k)
    (tmp_path / "bad.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(50))
    _expect(tmp_path / "bad.m4a", "ffmpeg could not decode it")


# --------------------------------------------------------------------------------------------
# speech_log_mel: the reference's offline pipeline end to end


@pytest.mark.filterwarnings("ignore:The 'warn' function is deprecated")
def test_speech_log_mel_matches_reference_pipeline(tmp_path, speech_like):
    from python_speech_features import logfbank

    from keras_sf2f.audio.features import normalize_log_mel
    from keras_sf2f.audio.vad import webrtc_vad

    x = speech_like(11, 3.0, 16000, gaps=[(1.0, 2.0)]).astype(np.int16)
    _write_wave(tmp_path / "u.wav", x, 2, 16000)
    got = aio.speech_log_mel(tmp_path / "u.wav")
    logging.disable(logging.WARNING)
    want = normalize_log_mel(logfbank(webrtc_vad(x, 16000), samplerate=16000, nfilt=40))
    logging.disable(logging.NOTSET)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.shape[0] < 300 - 50  # the 1 s gap went
    np.testing.assert_allclose(got, want, atol=1e-3 / 3.1661)
    np.testing.assert_allclose(aio.speech_log_mel(x.astype(np.float32)), got, atol=1e-6)
    np.testing.assert_allclose(aio.speech_log_mel((tmp_path / "u.wav").read_bytes()), got,
                               atol=1e-6)
    no_vad = aio.speech_log_mel(x, use_vad=False)
    assert no_vad.shape[0] == 299


def test_speech_log_mel_resamples_arrays(speech_like):
    x = speech_like(12, 1.5, 48000)
    got = aio.speech_log_mel(x, sample_rate=48000, use_vad=False)
    assert got.shape == (149, 40)


def test_speech_log_mel_errors(tmp_path, speech_like):
    _write_wave(tmp_path / "silence.wav", np.zeros(32000, np.int16), 2, 16000)
    with pytest.raises(AudioError) as e:
        aio.speech_log_mel(tmp_path / "silence.wav")
    assert str(e.value) == (f"{tmp_path / 'silence.wav'}: nothing left after voice activity "
                            "detection (no speech found in 2.00 s of audio)")
    short = speech_like(13, 0.7, 16000).astype(np.int16)
    with pytest.raises(AudioError) as e:
        aio.speech_log_mel(short, name="short-clip")
    msg = str(e.value)
    assert msg.startswith("short-clip: only 0.")
    assert msg.endswith(" s of speech after voice activity detection; at least 1.00 s "
                        "(100 frames) is needed")
    with pytest.raises(AudioError, match=r"only 0\.70 s of audio; at least 1\.00 s"):
        aio.speech_log_mel(short, use_vad=False)
    with pytest.raises(AudioError, match="NaN"):
        aio.speech_log_mel(np.array([0.0, np.nan] * 20000))
    with pytest.raises(AudioError, match="file not found"):
        aio.speech_log_mel(tmp_path / "missing.flac")


def test_io_and_vad_do_not_import_tensorflow():
    code = ("import sys, keras_sf2f.audio.io, keras_sf2f.audio.vad\n"
            "from keras_sf2f.audio import load_audio, webrtc_vad, AudioError\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
