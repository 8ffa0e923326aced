"""The reference's webrtcvad collector (exact frame bookkeeping) and the pure-TF energy gate."""

import numpy as np
import pytest
import tensorflow as tf
import webrtcvad

from keras_sf2f.audio import vad


class _FlagVad:
    """Stands in for webrtcvad.Vad: a frame is speech when its first sample is non-zero."""

    calls = []

    def __init__(self, mode):
        self.mode = mode

    def is_speech(self, buf, sample_rate):
        frame = np.frombuffer(buf, dtype="<i2")
        _FlagVad.calls.append((len(buf), sample_rate, self.mode))
        return bool(frame[0] != 0)


@pytest.fixture
def flag_vad(monkeypatch):
    _FlagVad.calls = []
    monkeypatch.setattr(webrtcvad, "Vad", _FlagVad)
    return _FlagVad


def _run(flags, sample_rate=16000, extra=1):
    """Runs webrtc_vad on frames tagged with their index; returns the emitted frame indices."""
    n = sample_rate * 30 // 1000
    # Tag every frame with its index in sample 1.. so unvoiced frames are identifiable too.
    x = np.zeros(len(flags) * n + extra, np.int16)
    for i, f in enumerate(flags):
        x[i * n] = 1 if f else 0
        x[i * n + 1:(i + 1) * n] = i + 1
    out = vad.webrtc_vad(x, sample_rate)
    assert out.dtype == np.int16 and out.size % n == 0
    return [int(f[1]) - 1 for f in out.reshape(-1, n)]


def test_collector_triggers_on_ten_voiced_frames_and_keeps_the_buffer(flag_vad):
    assert _run([1] * 9 + [0] * 5) == []
    assert _run([1] * 10) == list(range(10))
    # Rolling buffer: 5 unvoiced then 10 voiced -> triggers on frame 14, emits frames 5..14.
    assert _run([0] * 5 + [1] * 10) == list(range(5, 15))
    # 9 voiced, 1 unvoiced, 10 voiced: the buffer is full of voiced frames only at frame 19.
    assert _run([1] * 9 + [0] + [1] * 10) == list(range(10, 20))
    assert flag_vad.calls[0] == (960, 16000, 1)  # 30 ms of 16-bit PCM, aggressiveness 1


def test_collector_untriggers_after_ten_unvoiced_frames_which_are_kept(flag_vad):
    flags = [1] * 10 + [0] * 9 + [1] * 3 + [0] * 10 + [0] * 5 + [1] * 10
    kept = _run(flags)
    # Triggered at 9; 9 unvoiced then voiced keep it triggered; 10 unvoiced in a row (22..31)
    # un-trigger after frame 31 (those frames are emitted); 32..36 silent; 37..46 re-trigger
    # with a buffer holding only voiced frames 37..46.
    assert kept == list(range(0, 32)) + list(range(37, 47))


def test_collector_voiced_count_after_trigger_uses_a_fresh_buffer(flag_vad):
    # After the trigger the buffer is cleared: mixed frames never reach 10 unvoiced in a row.
    flags = [1] * 10 + [0, 1] * 20
    assert _run(flags) == list(range(50))


def test_frame_generator_drops_partial_and_exactly_fitting_last_frame(flag_vad):
    n = 480
    voiced = [1] * 12
    assert _run(voiced, extra=1) == list(range(12))   # 12 full frames + 1 sample: all 12 used
    assert _run(voiced, extra=0) == list(range(11))   # exactly 12 frames: the last is dropped
    assert _run(voiced, extra=n - 1) == list(range(12))
    assert vad.webrtc_vad(np.ones(n, np.int16), 16000).size == 0
    assert vad.webrtc_vad(np.zeros(0, np.int16), 16000).size == 0


@pytest.mark.parametrize("sample_rate", vad.WEBRTC_SAMPLE_RATES)
def test_frame_sizes_per_rate(flag_vad, sample_rate):
    kept = _run([1] * 10, sample_rate=sample_rate)
    assert kept == list(range(10))
    assert flag_vad.calls[0][0] == sample_rate * 30 // 1000 * 2


@pytest.mark.parametrize("bad", [11025, 22050, 44100, 16000.5, 0])
def test_unsupported_rates_raise(bad):
    with pytest.raises(ValueError, match="webrtcvad supports sample rates"):
        vad.webrtc_vad(np.zeros(16000, np.int16), bad)


def test_to_int16():
    np.testing.assert_array_equal(vad.to_int16(np.array([0.4, -0.6, 40000.0, -40000.0, 12.5])),
                                  [0, -1, 32767, -32768, 12])
    x = np.array([1, -2], np.int16)
    assert vad.to_int16(x) is x


@pytest.mark.parametrize("sample_rate", [8000, 16000, 48000])
def test_real_webrtcvad_removes_silence_keeps_speech(speech_like, sample_rate):
    x = speech_like(1, 5.0, sample_rate, gaps=[(1.5, 3.0)])
    out = vad.webrtc_vad(x.astype(np.int16), sample_rate)
    n = sample_rate * 30 // 1000
    assert out.dtype == np.int16 and out.size % n == 0
    speech_samples = int(np.count_nonzero(x))
    # Most of the speech survives; most of the 1.5 s gap goes (the collector keeps <= 300 ms
    # of silence after speech); the kept samples are whole frames of the input, in order.
    assert (out != 0).sum() > 0.8 * speech_samples
    assert out.size < x.size - 1.0 * sample_rate
    frames = x.astype(np.int16)[: (x.size - 1) // n * n].reshape(-1, n)
    kept = out.reshape(-1, n)
    positions = [np.flatnonzero((frames == k).all(axis=1)) for k in kept if k.any()]
    starts = [p[0] for p in positions if p.size]
    assert len(starts) == len(positions) and starts == sorted(starts)
    # Float int16-scale input gives the same result.
    np.testing.assert_array_equal(vad.webrtc_vad(x, sample_rate), out)


def test_real_webrtcvad_silence_gives_nothing():
    assert vad.webrtc_vad(np.zeros(32000, np.int16), 16000).size == 0


# --------------------------------------------------------------------------------------------
# Energy gate


def test_energy_gate_removes_gaps_and_keeps_loud_parts(speech_like):
    sr = 16000
    parts = [speech_like(s, 0.6, sr) for s in range(3)]
    gap = np.zeros(sr)  # 1 s of digital silence
    x = np.concatenate([gap, parts[0], gap, parts[1], gap, parts[2], gap])
    out = vad.energy_gate(x, sr).numpy()
    loud = sum(p.size for p in parts)
    assert out.dtype == np.float32
    # Every loud sample is kept, in order; of 4 s of silence at most 2 x 150 ms per burst stay.
    np.testing.assert_array_equal(out[out != 0], x[x != 0])
    assert loud <= out.size <= loud + 3 * 2 * int(0.15 * sr) + 3 * 480
    assert out.size < x.size - 3 * sr


def test_energy_gate_quiet_background_is_dropped_relative_to_speech(speech_like):
    sr = 16000
    rng = np.random.default_rng(0)
    speech = speech_like(2, 1.0, sr)
    hiss = np.round(rng.standard_normal(2 * sr) * 10)  # -70 dBFS, ~40 dB below the speech
    x = np.concatenate([hiss, speech, hiss])
    out = vad.energy_gate(x, sr).numpy()
    assert speech.size <= out.size <= speech.size + 2 * int(0.15 * sr) + 2 * 480


def test_energy_gate_drops_isolated_clicks():
    sr = 16000
    x = np.zeros(3 * sr)
    x[sr:sr + 100] = 20000.0  # one 6 ms click inside a single 30 ms frame
    assert vad.energy_gate(x, sr).numpy().size == 0


def test_energy_gate_silence_and_empty_give_nothing():
    assert vad.energy_gate(np.zeros(16000), 16000).numpy().size == 0
    assert vad.energy_gate(np.full(16000, 3.0), 16000).numpy().size == 0  # below the floor
    assert vad.energy_gate(np.zeros(0), 16000).numpy().size == 0


def test_energy_gate_in_graph_unknown_length_and_rate(speech_like):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
    def gate(w, sr):
        return vad.energy_gate(w, sr)

    for sr in (8000, 22050):
        x = np.concatenate([np.zeros(sr), speech_like(3, 0.8, sr), np.zeros(sr)])
        got = gate(x.astype(np.float32), sr).numpy()
        np.testing.assert_array_equal(got, vad.energy_gate(x, sr).numpy())
        assert 0.8 * sr <= got.size < x.size - sr
    assert gate(np.zeros(0, np.float32), 16000).numpy().size == 0
    assert gate.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("num_samples,flen,pattern", [
    (1000, 7, "random"), (1001, 10, "last_kept"), (999, 10, "last_dropped"),
    (480, 480, "all"), (2000, 30, "none"), (0, 30, "none"), (5, 30, "all")])
def test_kept_frames_are_the_samples_a_per_sample_mask_keeps(num_samples, flen, pattern):
    """vad._kept_frames gathers whole frames; the oracle masks every sample with its frame's
    decision (np.repeat) and must select the same samples in the same order, padding never."""
    rng = np.random.default_rng(num_samples + flen)
    x = rng.normal(size=num_samples).astype(np.float32)
    nframes = -(-num_samples // flen)
    keep = {"random": rng.random(nframes) > 0.4, "all": np.ones(nframes, bool),
            "none": np.zeros(nframes, bool),
            "last_kept": np.arange(nframes) % 2 == (nframes - 1) % 2,
            "last_dropped": np.arange(nframes) % 2 != (nframes - 1) % 2}[pattern]
    frames = np.pad(x, (0, nframes * flen - num_samples)).reshape(nframes, flen)
    got = vad._kept_frames(tf.constant(frames), tf.constant(keep), tf.constant(num_samples))
    expected = x[np.repeat(keep, flen)[:num_samples]]
    np.testing.assert_array_equal(got.numpy(), expected)
