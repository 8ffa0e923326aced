"""The TF log mel filterbank against python_speech_features 0.6 (the reference's feature code)."""

import logging
import math

import numpy as np
import pytest
import tensorflow as tf
from python_speech_features import base as psf_base
from python_speech_features import logfbank
from python_speech_features.sigproc import round_half_up

from keras_sf2f.audio import features as F

pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' function is deprecated")

TOL = 1e-3  # acceptance criterion: max abs difference of the (unnormalised) log filterbank
RATES = (8000, 16000, 22050, 44100)


@pytest.fixture(autouse=True, scope="module")
def _quiet_psf():
    # psf warns "frame length (551) is greater than FFT size (512)" at 22.05/44.1 kHz.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _ref(x, sr):
    return logfbank(np.asarray(x, np.float64), samplerate=sr, nfilt=40)


def _noise(rng, n, scale=3000.0):
    return np.clip(np.round(rng.standard_normal(n) * scale), -32768, 32767)


def _band_limited(rng, n, sr):
    """Noise low-passed far below Nyquist (as upsampled telephone audio): near-empty top bands."""
    from scipy import signal
    sos = signal.butter(8, 0.2 * sr / 2, fs=sr, output="sos")
    return np.round(signal.sosfilt(sos, rng.standard_normal(n)) * 8000)


def _check(x, sr):
    got = F.log_mel_filterbank(x, sr).numpy()
    ref = _ref(x, sr)
    assert got.dtype == np.float32
    assert got.shape == ref.shape == (F.num_frames(len(x), sr), 40)
    err = np.abs(got - ref).max()
    assert err <= TOL, (sr, len(x), err)
    return ref


# --------------------------------------------------------------------------------------------
# Geometry and filterbank


def test_constants():
    assert F.MEL_MEAN == 10.9915 and F.MEL_STD == 3.1661
    assert F.MEL_PAD_VALUE == pytest.approx(-3.4716, abs=1e-4)
    assert F.normalize_log_mel(0.0) == F.MEL_PAD_VALUE
    assert F.normalize_log_mel(10.9915) == 0.0
    assert F.LOG_EPS == pytest.approx(-36.0437, abs=1e-4)
    x = np.array([-36.0, 0.0, 12.5])
    np.testing.assert_allclose(F.denormalize_log_mel(F.normalize_log_mel(x)), x)
    t = F.normalize_log_mel(tf.constant([10.9915]))
    assert abs(float(t[0])) < 1e-6


@pytest.mark.parametrize("sr,expected", [(8000, (200, 80)), (16000, (400, 160)),
                                         (22050, (551, 221)), (44100, (1103, 441)),
                                         (48000, (1200, 480))])
def test_frame_geometry(sr, expected):
    assert F.frame_geometry(sr) == expected
    assert (round_half_up(0.025 * sr), round_half_up(0.01 * sr)) == expected


def test_frame_geometry_tf_matches_reference_rounding():
    rates = np.arange(50, 200_001, 37)
    fl, fs = F._frame_geometry_tf(tf.constant(rates))
    want = np.array([(round_half_up(0.025 * r), round_half_up(0.01 * r)) for r in rates])
    np.testing.assert_array_equal(np.stack([fl.numpy(), fs.numpy()], 1), want)


def test_num_frames():
    for sr in RATES:
        fl, fs = F.frame_geometry(sr)
        for n in (1, 2, fl - 1, fl, fl + 1, fl + fs, fl + fs + 1, 560, 12345):
            assert F.num_frames(n, sr) == _ref(np.ones(n), sr).shape[0], (sr, n)
    assert F.num_frames(0, 16000) == 0
    assert (F.num_frames(400, 16000), F.num_frames(401, 16000), F.num_frames(560, 16000)) == (1, 2, 2)
    t = F.num_frames(tf.constant([0, 400, 401, 16000]), tf.constant(16000))
    np.testing.assert_array_equal(t.numpy(), [0, 1, 2, 99])


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000])
def test_filterbank_matrix_equals_psf(sr):
    fb = F.mel_filterbank_matrix(sr)
    np.testing.assert_array_equal(fb, psf_base.get_filterbanks(40, 512, sr).T)
    np.testing.assert_array_equal(F._mel_filterbank_tf(tf.constant(sr), 40).numpy(), fb)


def test_filter_edges_tf_equal_numpy_over_many_rates():
    rates = np.arange(50, 200_001, 3)
    np.testing.assert_array_equal(F._filter_edges_tf(tf.constant(rates), 40).numpy(),
                                  F._filter_edges(rates, 40))
    for sr in rates[::2003]:
        np.testing.assert_array_equal(F.mel_filterbank_matrix(int(sr)),
                                      psf_base.get_filterbanks(40, 512, int(sr)).T)


def test_bad_rates():
    for bad in (0, -16000, 10, float("nan")):
        with pytest.raises(ValueError, match="sample_rate"):
            F.log_mel_filterbank(np.zeros(1000), bad)
    with pytest.raises(ValueError, match="compute_dtype"):
        F.log_mel_filterbank(np.zeros(1000), 16000, compute_dtype=tf.int32)


# --------------------------------------------------------------------------------------------
# Parity with python_speech_features


@pytest.mark.parametrize("sr", RATES)
def test_parity_random_lengths_and_signals(sr):
    rng = np.random.default_rng(sr)
    fl, fs = F.frame_geometry(sr)
    lengths = [1, 37, fl - 1, fl, fl + 1, 400, 401, 560, fl + fs, 3 * sr // 2]
    lengths += list(rng.integers(2, 2 * sr, size=4))
    for i, n in enumerate(lengths):
        kind = i % 4
        if kind == 0:
            x = _noise(rng, n, scale=rng.choice([3.0, 300.0, 3000.0, 20000.0]))
        elif kind == 1:
            x = _band_limited(rng, n, sr)
        elif kind == 2:  # full-scale, clipped
            x = _noise(rng, n, scale=30000.0)
        else:  # noise with silent stretches (all-zero frames -> log(eps))
            x = _noise(rng, n)
            x[n // 4: n // 4 + max(n // 3, fl + 2 * fs)] = 0.0
        _check(x, sr)


@pytest.mark.parametrize("sr", RATES)
def test_parity_speech_like_with_silences(sr, speech_like):
    x = speech_like(sr, 6.0, sr, gaps=[(1.0, 1.7), (3.2, 3.25), (5.5, 6.0)])
    ref = _check(x, sr)
    assert (ref == math.log(np.finfo(float).eps)).all(axis=1).sum() > 10  # eps path exercised


def test_parity_long_utterance(speech_like):
    sr = 16000
    x = np.concatenate([speech_like(s, 10.0, sr, gaps=[(4.0, 4.5)]) for s in range(3)])
    x[x.size // 2:x.size // 2 + 7] = 0.0
    _check(x, sr)  # 30 s


def test_all_zero_frames_give_log_eps():
    for sr in RATES:
        got = F.log_mel_filterbank(np.zeros(3 * sr // 2), sr).numpy()
        ref = _ref(np.zeros(3 * sr // 2), sr)
        np.testing.assert_allclose(got, ref, atol=1e-5)
        np.testing.assert_allclose(got, -36.0437, atol=1e-4)


def test_input_dtypes_and_empty():
    rng = np.random.default_rng(0)
    x = _noise(rng, 5000)
    ref = _ref(x, 16000)
    for arr in (x.astype(np.int16), x.astype(np.float32), x, tf.constant(x, tf.float32),
                x.astype(np.int32)):
        np.testing.assert_allclose(F.log_mel_filterbank(arr, 16000).numpy(), ref, atol=TOL)
    empty = F.log_mel_filterbank(np.zeros([0]), 16000)
    assert empty.shape == (0, 40)
    with pytest.raises(ValueError, match="1-D"):
        F.log_mel_filterbank(np.zeros([800, 2]), 16000)


def test_float32_compute_is_close_but_optional():
    rng = np.random.default_rng(3)
    x = _noise(rng, 16000)
    got = F.log_mel_filterbank(x, 16000, compute_dtype=tf.float32).numpy()
    assert np.abs(got - _ref(x, 16000)).max() < 0.05


def test_num_filters_argument():
    rng = np.random.default_rng(4)
    x = _noise(rng, 4000)
    got = F.log_mel_filterbank(x, 16000, num_filters=26).numpy()
    np.testing.assert_allclose(got, logfbank(x, 16000, nfilt=26), atol=TOL)


# --------------------------------------------------------------------------------------------
# White noise at every rate, with the DC bin near a total cancellation
#
# From 29132 Hz one filter is FFT bin 0 alone (filter 0; filter 1 from 78249 Hz): its value is
# the square of the plain sum S of the frame's pre-emphasised samples, a sum of terms of
# thousands that white noise can cancel to almost nothing. Any rounding of the samples (a
# float32 conversion) or of their pre-emphasis (0.97 x in float32) then moves the band by far
# more than 1e-3, while exact integer pre-emphasis and a float64 FFT stay within ~1e-5.

ALL_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
TIGHT = 2e-5  # the default precision's measured worst is ~2.3e-6; 1.6e-5 is the rounding bound


def _cancel_dc(x, sr, rng, integer=True, every=2, sums=None):
    """``x`` with two samples of every ``every``-th frame (from frame 1) nudged so that the
    frame's pre-emphasised samples that reach the FFT sum to ``S`` = +-0.01 to +-0.30 (or to
    ``sums[i]`` for the i-th nudged frame). Returns ``(x, frames)``.

    In units of ``z = 100 y`` (integers for integer samples): the frame's last sample enters the
    sum once with weight 100 (its -97 term falls after the window), the one before it with
    100 - 97 = 3; since gcd(100, 3) = 1 any integer target is reachable. Frames are fixed in
    order: a nudge at the end of frame k's window reaches only frames after k."""
    x = np.array(x, np.float64)
    fl, fs = F.frame_geometry(sr)
    m = min(fl, F.NFFT)
    frames = []
    for i, k in enumerate(range(1, F.num_frames(len(x), sr), every)):
        s = k * fs
        if s + m > len(x):
            break
        total = 100 * x[s:s + m].sum() - 97 * x[s - 1:s + m - 1].sum()
        target = (int(rng.integers(1, 31)) * int(rng.choice([-1, 1])) if sums is None
                  else int(round(100 * sums[i % len(sums)])))
        if integer:
            r = int(round(target - total))
            three = (r * 67) % 100  # 67 = 3^-1 mod 100
            three -= 100 if three > 50 else 0
            x[s + m - 2] += three
            x[s + m - 1] += (r - 3 * three) // 100
        else:
            x[s + m - 1] += (target - total) / 100
        frames.append(k)
    assert np.abs(x).max() <= 32767
    return x, frames


def _dc_filters(sr):
    """Indices of the filters that are FFT bin 0 alone."""
    fb = F.mel_filterbank_matrix(sr)
    return [j for j in range(fb.shape[1]) if fb[0, j] > 0 and not fb[1:, j].any()]


def test_dc_alone_filters_start_at_29132_hz():
    assert [r for r in (27528, 29131, 29132, 32000, 78248, 78249) if _dc_filters(r)] == \
        [29132, 32000, 78248, 78249]
    assert (_dc_filters(44100), _dc_filters(78248), _dc_filters(96000)) == ([0], [0], [1])


@pytest.mark.parametrize("sr", ALL_RATES)
def test_parity_white_noise_every_rate(sr):
    """1 s of white noise (rms 2000) with every other frame's DC sum forced to +-0.01..0.30:
    integer samples, and non-integer ones given as float64, float32 and a Python list. The
    reference is python_speech_features on the same values in float64 (its path for int16)."""
    rng = np.random.default_rng(sr + 16)
    x, _ = _cancel_dc(np.round(rng.standard_normal(sr) * 2000), sr, rng)
    ref = _ref(x, sr)
    err = np.abs(F.log_mel_filterbank(x, sr).numpy() - ref).max()
    assert err <= TIGHT, (sr, "integer-valued", err)
    real, _ = _cancel_dc(rng.standard_normal(sr) * 2000, sr, rng, integer=False)
    for inp in (real, real.astype(np.float32), real.tolist()):
        want = _ref(np.asarray(inp, np.float64), sr)
        err = np.abs(F.log_mel_filterbank(inp, sr).numpy() - want).max()
        assert err <= TIGHT, (sr, type(inp).__name__, np.asarray(inp).dtype, err)
    for dc in _dc_filters(sr):
        # The signals are hard enough: rounding the pre-emphasis to float32 (the reference's
        # own arithmetic on a float32 array: 0.18 to 0.7 here), or the samples to float32
        # (TensorFlow's conversion of Python floats: 8e-3 to 4e-2) moves the DC band by more
        # than the 1e-3 criterion.
        f32_preemphasis = logfbank(x.astype(np.float32), samplerate=sr, nfilt=40)
        assert np.abs(f32_preemphasis - ref)[:, dc].max() > 10 * TOL, sr
        f32_samples = _ref(real.astype(np.float32), sr)
        assert np.abs(f32_samples - _ref(real, sr))[:, dc].max() > 2 * TOL, sr


def test_parity_white_noise_7s_44k_chunked_and_batched():
    """The reported case: 7 s of white noise at 44.1 kHz (699 frames: the chunked path), every
    frame's DC sum forced, through the single and the batched function, lists included."""
    sr = 44100
    rng = np.random.default_rng(44)
    x, frames = _cancel_dc(np.round(rng.standard_normal(7 * sr) * 2000), sr, rng, every=1)
    assert len(frames) > F.CHUNK_FRAMES
    ref = _ref(x, sr)
    assert np.abs(F.log_mel_filterbank(x, sr).numpy() - ref).max() <= TIGHT
    real, _ = _cancel_dc(rng.standard_normal(7 * sr) * 2000, sr, rng, integer=False, every=1)
    want = _ref(real, sr)
    assert np.abs(F.log_mel_filterbank(real.tolist(), sr).numpy() - want).max() <= TIGHT
    feats, counts = F.log_mel_filterbank_batch([real.tolist(), x.tolist()], [len(x)] * 2, sr)
    assert counts.numpy().tolist() == [len(ref)] * 2
    assert np.abs(feats[0].numpy() - want).max() <= TIGHT
    assert np.abs(feats[1].numpy() - ref).max() <= TIGHT


@pytest.mark.parametrize("sr", (32000, 44100, 96000))
def test_exactly_cancelling_dc_is_the_only_exception(sr):
    """Integer samples: a frame's DC sum is 0 or at least 0.01 in magnitude. At exactly 0 the
    DC-only band is log(eps) here and the reference's rounding noise (below log(eps)) there,
    the documented deviation; at +-0.01, the smallest non-zero sum, parity holds."""
    rng = np.random.default_rng(sr + 29)
    x, frames = _cancel_dc(np.round(rng.standard_normal(sr // 2) * 2000), sr, rng,
                           sums=[0.0, 0.01, -0.01])
    got, ref = F.log_mel_filterbank(x, sr).numpy(), _ref(x, sr)
    (dc,) = _dc_filters(sr)
    zero = frames[0::3]
    np.testing.assert_allclose(got[zero, dc], F.LOG_EPS, atol=1e-5)  # exactly 0 power
    assert (ref[zero, dc] <= F.LOG_EPS + 1e-9).all()
    mask = np.ones(got.shape, bool)
    mask[zero, dc] = False
    assert np.abs(got - ref)[mask].max() <= TIGHT
    smallest = frames[1::3] + frames[2::3]
    np.testing.assert_allclose(ref[smallest, dc], math.log(1e-4 / F.NFFT), atol=1e-6)


# --------------------------------------------------------------------------------------------
# Graph use: unknown length, run-time sample rate, batches, SavedModel


def test_tf_function_unknown_length_and_runtime_rate():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
    def fn(w, sr):
        return F.log_mel_filterbank(w, sr)

    rng = np.random.default_rng(5)
    for sr in (8000, 16000, 22050, 44100, 48000):
        for n in (1, 399, 1103, 1104, 20000):
            x = _noise(rng, n)
            np.testing.assert_allclose(fn(x.astype(np.float32), sr).numpy(), _ref(x, sr), atol=TOL)
        assert fn(np.zeros([0], np.float32), sr).shape == (0, 40)
    assert fn.experimental_get_tracing_count() == 1


def test_batch_equals_unbatched_rows():
    rng = np.random.default_rng(6)
    for sr in (16000, 44100):
        lengths = [0, 1, 400, 401, 560, 84000, 4000]  # 84000 samples: > 512 frames at 16 kHz
        w = rng.standard_normal((len(lengths), 84000)).astype(np.float32) * 3000  # junk tails
        feats, frame_lengths = F.log_mel_filterbank_batch(w, lengths, sr)
        want_frames = [F.num_frames(n, sr) for n in lengths]
        np.testing.assert_array_equal(frame_lengths.numpy(), want_frames)
        assert feats.shape == (len(lengths), max(want_frames), 40)
        for i, n in enumerate(lengths):
            f = feats[i].numpy()
            k = want_frames[i]
            if n:
                np.testing.assert_allclose(f[:k], F.log_mel_filterbank(w[i, :n], sr).numpy(),
                                           atol=1e-5)
                np.testing.assert_allclose(f[:k], _ref(w[i, :n], sr), atol=TOL)
            assert (f[k:] == 0.0).all()  # padding: raw 0 -> MEL_PAD_VALUE after normalising


def test_chunk_boundaries(monkeypatch):
    """Tiny chunks: frames computed segment by segment still equal the reference's."""
    monkeypatch.setattr(F, "CHUNK_FRAMES", 7)
    monkeypatch.setattr(F, "_EAGER_FNS", {})
    rng = np.random.default_rng(9)
    for sr in (44100,):
        for n in (1, 400, 3000, 12345):
            x = _noise(rng, n)
            np.testing.assert_allclose(F.log_mel_filterbank(x, sr).numpy(), _ref(x, sr), atol=TOL)
    w = (rng.standard_normal((3, 12000)) * 3000).astype(np.float32)
    feats, fl = F.log_mel_filterbank_batch(w, [12000, 5000, 0], 16000)
    assert feats.shape == (3, 74, 40)
    np.testing.assert_allclose(feats[1, :fl[1]].numpy(), _ref(w[1, :5000], 16000), atol=TOL)
    np.testing.assert_allclose(feats[0].numpy(), _ref(w[0], 16000), atol=TOL)


def test_batch_in_graph_with_runtime_rate():
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)])
    def fn(w, n, sr):
        return F.log_mel_filterbank_batch(w, n, sr)

    rng = np.random.default_rng(7)
    w = (rng.standard_normal((3, 5000)) * 3000).astype(np.float32)
    for sr in (8000, 22050):
        feats, fl = fn(w, [5000, 1200, 0], sr)
        np.testing.assert_array_equal(fl.numpy(), [F.num_frames(n, sr) for n in (5000, 1200, 0)])
        np.testing.assert_allclose(feats[0].numpy(), _ref(w[0], sr), atol=TOL)
        np.testing.assert_allclose(feats[1, :fl[1]].numpy(), _ref(w[1, :1200], sr), atol=TOL)
        assert (feats[1, fl[1]:].numpy() == 0).all() and (feats[2].numpy() == 0).all()
    feats, fl = fn(np.zeros([0, 0], np.float32), np.zeros([0], np.int32), 16000)
    assert feats.shape == (0, 0, 40) and fl.shape == (0,)
    assert fn.experimental_get_tracing_count() == 1


def test_saved_model_round_trip_stock_ops(tmp_path):
    class Features(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="waveform"),
                                      tf.TensorSpec([], tf.int32, name="sample_rate")])
        def __call__(self, waveform, sample_rate):
            return {"log_mel": F.normalize_log_mel(F.log_mel_filterbank(waveform, sample_rate))}

    module = Features()
    path = str(tmp_path / "features")
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    graph = module.__call__.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph.node}
    for fdef in graph.library.function:
        ops |= {n.op for n in fdef.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert not [op for op in ops if "IO>" in op]  # no tensorflow-io kernels

    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(8)
    x = _noise(rng, 7000).astype(np.float32)
    for sr in (16000, 22050):
        out = loaded.signatures["serving_default"](waveform=tf.constant(x),
                                                   sample_rate=tf.constant(sr))["log_mel"]
        np.testing.assert_allclose(out.numpy(), F.normalize_log_mel(_ref(x, sr)), atol=TOL)


# --------------------------------------------------------------------------------------------
# Precisions and code paths


@pytest.mark.parametrize("sr", RATES)
def test_parity_of_each_parity_safe_precision(sr, speech_like):
    """The default (float64 FFT, float32 filterbank) and float64 stay far inside the 1e-3
    criterion (measured ~2e-6) on every kind of signal; a float32 FFT does not at 48 kHz."""
    rng = np.random.default_rng(sr + 1)
    from scipy import signal
    high_passed = signal.sosfilt(signal.butter(4, 100, btype="high", fs=sr, output="sos"),
                                 speech_like(3, 2.0, sr, peak=30000.0))
    signals = [_noise(rng, sr, scale=300.0), _band_limited(rng, sr, sr),
               np.round(high_passed), speech_like(4, 2.0, sr) + 0.37]  # last: non-integer
    for x in signals:
        ref = _ref(x, sr)
        for precision in (None, "mixed", tf.float64):
            got = F.log_mel_filterbank(x, sr, compute_dtype=precision).numpy()
            assert np.abs(got - ref).max() < 2e-5, (sr, precision)


def test_precision_argument():
    x = _noise(np.random.default_rng(10), 3000)
    default = F.log_mel_filterbank(x, 16000).numpy()
    np.testing.assert_array_equal(F.log_mel_filterbank(x, 16000, compute_dtype="mixed"),
                                  default)
    for bad in ("float16", tf.float16, "double-ish"):
        with pytest.raises(ValueError, match="compute_dtype"):
            F.log_mel_filterbank(x, 16000, compute_dtype=bad)


@pytest.mark.parametrize("sr", RATES)
def test_integer_input_dtypes_and_short_path_equal_chunked_path(sr):
    """int16 input (pre-emphasis exact in any precision); an eager call on a short utterance
    takes the path without chunking, a graph with unknown length the chunked one."""
    rng = np.random.default_rng(sr + 2)
    x = _noise(rng, sr // 2).astype(np.int16)
    ref = _ref(x, sr)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int16)])
    def graph(w):
        return F.log_mel_filterbank(w, sr)

    eager = F.log_mel_filterbank(x, sr).numpy()
    np.testing.assert_allclose(eager, ref, atol=1e-5)
    np.testing.assert_allclose(graph(x).numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(F.log_mel_filterbank(x.astype(np.int32), sr).numpy(), eager,
                               atol=1e-6)


@pytest.mark.parametrize("sr", (22050, 44100))
def test_block_framing_rates_in_batches(sr, monkeypatch):
    """At 22.05 / 44.1 kHz frames are gathered as whole 10 ms blocks (gcd(512, step) is 1);
    tiny chunks put segment boundaries everywhere."""
    monkeypatch.setattr(F, "CHUNK_FRAMES", 5)
    monkeypatch.setattr(F, "_EAGER_FNS", {})
    rng = np.random.default_rng(sr + 3)
    w = (rng.standard_normal((3, sr // 3)) * 3000).round().astype(np.float32)
    lengths = [sr // 3, sr // 5, 700]
    feats, frames = F.log_mel_filterbank_batch(w, lengths, sr)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(feats[i, :frames[i]].numpy(), _ref(w[i, :n], sr), atol=TOL)
    for precision in (tf.float64, tf.float32):
        got = F.log_mel_filterbank_batch(w, lengths, sr, compute_dtype=precision)[0]
        np.testing.assert_allclose(got[0].numpy(), _ref(w[0], sr), atol=0.05)


@pytest.mark.parametrize("sr", (16000, 44100))
def test_compilable_features_under_xla(sr, speech_like):
    """``log_mel_filterbank_compilable``: without XLA ``log_mel_filterbank`` to the last float
    bit (oneDNN's matrix products on AVX2 CPUs round a few of the two layouts' 26k values one
    unit in the last place apart, 9.5e-7 at these magnitudes); compiled
    by XLA (``jit_compile``) within 1e-5 of it (float rounding) and within the reference
    tolerance, on speech with digital silence (log(eps) frames) and 6.5 s of frames (one
    chunk of 650 frames, more than CHUNK_FRAMES)."""
    x = np.clip(speech_like(sr, 6.5, sr, gaps=[(1.0, 1.7)]), -32768, 32767).astype(np.int16)
    expected = F.log_mel_filterbank(x, sr).numpy()
    plain = tf.function(lambda w: F.log_mel_filterbank_compilable(w, sr), autograph=False)
    compiled = tf.function(lambda w: F.log_mel_filterbank_compilable(w, sr), autograph=False,
                           jit_compile=True)
    np.testing.assert_allclose(plain(tf.constant(x)).numpy(), expected, rtol=0, atol=2e-6)
    got = compiled(tf.constant(x)).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5
    assert np.abs(got - _ref(x.astype(np.float64), sr)).max() <= TOL
    with pytest.raises(ValueError, match="Python sample rate"):
        tf.function(lambda w, r: F.log_mel_filterbank_compilable(w, r), autograph=False)(
            tf.constant(x), tf.constant(sr))
