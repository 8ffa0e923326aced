"""The reference's speech features (log mel filterbank) in stock TensorFlow ops.

The SF2F reference computes its features offline with
``python_speech_features.logfbank(samples, samplerate=sr, nfilt=40)`` (version 0.6) on raw int16
samples. :func:`log_mel_filterbank` reproduces those numbers with TensorFlow ops only, so the same
function runs eagerly, in ``tf.data`` and inside an exported SavedModel (no tensorflow-io, no
``py_function``):

* pre-emphasis 0.97 (``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``);
* rectangular frames of ``round_half_up(0.025 sr)`` samples every ``round_half_up(0.01 sr)``
  samples (400 / 160 at 16 kHz); ``1`` frame when the signal is not longer than one frame, else
  ``1 + ceil((n - frame_len) / step)``; the tail is zero-padded;
* a 512-point real FFT of every frame. The FFT size stays 512 at every sample rate, as in the
  reference library: when a frame is longer than 512 samples (sample rates above 20480 Hz, e.g.
  551 samples at 22.05 kHz, 1103 at 44.1 kHz) numpy's ``rfft(frame, 512)`` keeps only the first
  512 samples of the frame, and so does this implementation;
* power spectrum ``|X|^2 / 512``;
* 40 triangular filters on FFT bins (mel = 2595 log10(1 + f/700), 0 Hz to sr/2, bin edges
  ``floor(513 * hz / sr)``), exactly the matrix of ``python_speech_features.get_filterbanks``;
* filter energies that are exactly zero become ``np.finfo(float).eps``, then the natural log
  (an all-zero frame gives ``log(eps) = -36.0437`` in every band; above ~49 kHz some filters
  cover no FFT bin at all and are always ``log(eps)``, as in the reference).

Inputs are on the **int16 sample scale** (values up to +-32768), not in [-1, 1]: the
normalisation constants :data:`MEL_MEAN` / :data:`MEL_STD` were computed on that scale.
Normalisation is a separate step, :func:`normalize_log_mel`.

Precision (``compute_dtype``):

* default (``None``, "mixed"): pre-emphasis, frames and the FFT in float64, the filterbank
  product in float32 (its terms are all positive, so float32 costs ~1e-7 relative); max abs
  difference to the reference ~2e-6 (measured over noise, band-limited, high-passed and
  speech-like signals at 8-48 kHz, and white noise at every rate from 8 to 96 kHz with frames
  forced to near-total DC cancellation; bounds below);
* ``tf.float64``: everything in float64 (the filterbank product too); the same ~2e-6;
* ``tf.float32``: everything in float32, ~2.5x cheaper FFT, not parity-safe: a float32 FFT's
  rounding noise sits ~140 dB below the frame's energy, and pre-emphasis puts the lowest bins
  20-30 dB down, where single-bin filters (at 44.1/48 kHz the first filter is bin 0 alone)
  meet that noise: 4e-4 at 44.1 kHz but 1.1e-2 at 48 kHz in the same measurement. Pure
  tones are worse (the rectangular window's leakage nulls can leave a single-bin filter with
  almost nothing but rounding noise): sweeps of 60 frequencies x 3 amplitudes with random
  phases measured 3.9e-4 to 8.7e-4 at 16 kHz and 3.0e-3 to 1.05e-2 at 22.05 kHz
  (``benchmarks/feature_precision.py``), so float32 is not the default even at 16 kHz.

A float32 FFT with only the lowest bins recomputed in float64 (a direct DFT of 8 bins) was
parity-safe too (worst 1.1e-4), but measured no faster on this 2-core machine: the float64
matrix product cost as much as the float64 FFT it replaces.

Pre-emphasis is computed as ``z = 100 x[n] - 97 x[n-1]`` (= 100 y[n]), exact in floating point
for integer samples on the int16 scale; the factor is folded into the filterbank. Frame
geometry and the filterbank matrix are always computed in float64 exactly as the reference
does.

Input values. The samples are used exactly as given: any input dtype (int16, int32, float32,
float64, ...) is widened to float64 before pre-emphasis (default and float64 precisions), and
a Python sequence goes through numpy first (TensorFlow's own conversion would make Python
floats float32, rounding each sample to 24 bits: measured up to 6e-2 off at 32-96 kHz on
white noise). The reference library instead computes its pre-emphasis in the input's dtype: for a
float32 array, ``signal[1:] - 0.97 * signal[:-1]`` stays float32 (numpy does not widen an
array for a Python scalar), so each pre-emphasised sample is rounded to 24 bits before its
float64 FFT. Where a filter is FFT bin 0 alone (filter 0 from 29132 Hz, filter 1 from 78249 Hz,
filter 2 from 145715 Hz), its value is the square of the plain sum of the frame's 512
pre-emphasised samples, and that sum of large terms can cancel almost completely; the
rounding then moves the reference's own value without bound (up to 0.115 over four 7 s draws
of float32 white noise at 44.1 kHz; up to 1.5 on frames whose sum cancels to 0.01-0.3).
Parity is therefore defined, and tested, against the reference on the same values in float64,
which is its path for the int16 samples the SF2F reference reads:
``logfbank(np.asarray(x, np.float64), ...)``.

Bounds (default and float64 precisions) for a band that is bin 0 alone, the worst case: the
rounding of either computation moves the frame's pre-emphasised sum ``S`` by at most ~4e-8
each for samples within +-32768 (512 samples at float64 ulps, plus the FFT's summation), so
the log differs by at most ~``1.6e-7 / |S|``. For integer samples ``100 S`` is an integer:
``S`` is exactly 0 (the known deviation below) or ``|S| >= 0.01``, hence at most ~1.6e-5
(measured 3.4e-7 on frames forced to ``S = +-0.01``). For non-integer samples the band is
guaranteed within 1e-3 while its value is above ~-24 (``|S| >= 1.6e-4``); measured on white
noise of rms 2000-6000, 1e-3 was reached only around ``|S| ~ 1e-7`` (band values ~-37, at
``log(eps)``, where both say "no energy").

Sample rate: a Python number (or a tensor with a static value) builds the filterbank once as a
constant; a scalar tensor with no static value (e.g. an exported signature that takes the rate
as an input) computes frame sizes and the filterbank with TF ops from the rate at run time (a
40 x 257 matrix, microseconds), so one graph serves every rate. Both paths give the same matrix
(tested over a wide range of rates).

Known deviation (all precisions): when a filter covers FFT bin 0 alone (from 29132 Hz, see
above) and a frame's first 512 pre-emphasised samples sum to exactly zero (possible for very
quiet integer signals, e.g. a tone of amplitude 3 at 44.1 kHz), the DC power is exactly 0
here (band value ``log(eps) = -36.04``) but float64 rounding noise in the reference
(``0.97 x`` is inexact; ~1e-34, log ~ -77). Both mean "no energy"; no FFT with another
summation order could reproduce the reference's noise. ``benchmarks/feature_precision.py``
shows the case. The project's loaders resample to 16 kHz, where bin 0 is in no filter.

Empty input: the reference library fails on an empty signal (``IndexError``); here zero samples
give zero frames (``[0, num_filters]``).
"""

from __future__ import annotations

import decimal
import math
from typing import NamedTuple, Tuple, Union

import numpy as np
import tensorflow as tf

__all__ = [
    "MEL_MEAN", "MEL_STD", "MEL_PAD_VALUE", "LOG_EPS", "NUM_FILTERS", "NFFT", "PREEMPHASIS",
    "frame_geometry", "num_frames", "mel_filterbank_matrix", "log_mel_filterbank",
    "log_mel_filterbank_batch", "log_mel_filterbank_compilable", "normalize_log_mel",
    "denormalize_log_mel",
]

#: Global normalisation constants of the reference (datasets/utils.py): ``(x - mean) / std``.
MEL_MEAN = 10.9915
MEL_STD = 3.1661
#: The reference pads short crops with ``normalize(0.0)`` (a raw log-mel value of 0).
MEL_PAD_VALUE = (0.0 - MEL_MEAN) / MEL_STD
#: Number of mel filters the reference uses.
NUM_FILTERS = 40
#: FFT size of python_speech_features (fixed, whatever the sample rate).
NFFT = 512
PREEMPHASIS = 0.97
WINLEN_S = 0.025
WINSTEP_S = 0.01
_EPS = float(np.finfo(float).eps)
#: ``log(np.finfo(float).eps)``: the value of every band of an all-zero frame.
LOG_EPS = math.log(_EPS)
_NBINS = NFFT // 2 + 1

Number = Union[int, float, np.integer, np.floating]


# --------------------------------------------------------------------------------------------
# Frame geometry
# --------------------------------------------------------------------------------------------

def _round_half_up(x: float) -> int:
    # python_speech_features.sigproc.round_half_up: Decimal of the exact binary value.
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _check_rate(sample_rate) -> float:
    rate = float(sample_rate)
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"sample_rate must be a positive number, got {sample_rate!r}")
    if rate < 50:
        raise ValueError(f"sample_rate {sample_rate!r} is too low (at least 50 Hz: 10 ms steps "
                         "must be at least one sample)")
    return rate


def frame_geometry(sample_rate: Number) -> Tuple[int, int]:
    """``(frame_length, frame_step)`` in samples, as python_speech_features computes them.

    ``round_half_up(0.025 * sr)`` and ``round_half_up(0.01 * sr)``: (400, 160) at 16 kHz,
    (551, 221) at 22.05 kHz, (1103, 441) at 44.1 kHz.
    """
    if isinstance(sample_rate, (int, np.integer)):
        rate = int(sample_rate)
        _check_rate(rate)
    else:
        rate = _check_rate(sample_rate)
    return _round_half_up(WINLEN_S * rate), _round_half_up(WINSTEP_S * rate)


def _frame_geometry_tf(sample_rate: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Same as :func:`frame_geometry` with TF ops (float64, exact round-half-up)."""
    rate = tf.cast(sample_rate, tf.float64)

    def rhu(x):
        fl = tf.floor(x)
        return tf.cast(fl, tf.int32) + tf.cast(x - fl >= 0.5, tf.int32)

    return rhu(WINLEN_S * rate), rhu(WINSTEP_S * rate)


def _num_frames_from(num_samples, frame_len, frame_step):
    """Integer form of ``1 + ceil((n - frame_len) / step)`` (1 if ``n <= frame_len``; 0 if n == 0)."""
    if isinstance(num_samples, tf.Tensor) or isinstance(frame_len, tf.Tensor):
        n = tf.cast(num_samples, tf.int32)
        more = 1 + (n - frame_len + frame_step - 1) // frame_step
        return tf.where(n <= 0, 0, tf.where(n <= frame_len, 1, more))
    n = int(num_samples)
    if n <= 0:
        return 0
    if n <= frame_len:
        return 1
    return 1 + -(-(n - frame_len) // frame_step)


def num_frames(num_samples, sample_rate):
    """Number of feature frames for ``num_samples`` samples at ``sample_rate``.

    ``1 + ceil((n - frame_len) / step)``, 1 if ``n <= frame_len``, 0 for an empty signal.
    Python numbers give a Python int; a tensor argument (either one) gives an int32 tensor.
    """
    rate = _static_rate(sample_rate)
    if rate is not None and not isinstance(num_samples, tf.Tensor):
        return _num_frames_from(num_samples, *frame_geometry(rate))
    if rate is not None:
        fl, fs = frame_geometry(rate)
    else:
        fl, fs = _frame_geometry_tf(sample_rate)
    return _num_frames_from(tf.convert_to_tensor(num_samples), fl, fs)


def _static_rate(sample_rate):
    """The sample rate as a Python number if it is known at trace time, else None."""
    if isinstance(sample_rate, (int, np.integer)):
        return int(sample_rate)
    if isinstance(sample_rate, (float, np.floating)):
        r = float(sample_rate)
        return int(r) if r.is_integer() else r
    value = tf.get_static_value(sample_rate)
    if value is None:
        return None
    value = np.asarray(value)
    if value.shape != ():
        raise ValueError(f"sample_rate must be a scalar, got shape {value.shape}")
    if np.issubdtype(value.dtype, np.integer):
        return int(value)
    r = float(value)
    return int(r) if r.is_integer() else r


# --------------------------------------------------------------------------------------------
# Mel filterbank
# --------------------------------------------------------------------------------------------

def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def _filter_edges(sample_rate, num_filters: int) -> np.ndarray:
    """FFT-bin edges ``b[0..num_filters+1]`` (float64); ``sample_rate`` may be an array ``[...]``."""
    rate = np.asarray(sample_rate, dtype=np.float64)[..., None]
    highmel = _hz2mel(rate / 2)
    # numpy.linspace(0, highmel, n) as psf calls it: i * step + 0, last point exactly highmel.
    step = highmel / (num_filters + 1)
    melpoints = np.arange(num_filters + 2) * step
    melpoints[..., -1:] = highmel
    return np.floor((NFFT + 1) * _mel2hz(melpoints) / rate)


def mel_band_centres_hz(sample_rate: Number, num_filters: int = NUM_FILTERS) -> np.ndarray:
    """Centre frequency in Hz of each mel band (the FFT bin at its triangle's peak), for axis
    labels: ``[num_filters]`` float64, lowest band first."""
    return _filter_edges(sample_rate, num_filters)[..., 1:-1] * float(sample_rate) / NFFT


def mel_filterbank_matrix(sample_rate: Number, num_filters: int = NUM_FILTERS) -> np.ndarray:
    """The ``[257, num_filters]`` float64 triangular filterbank (psf ``get_filterbanks``, transposed).

    Filter ``j`` rises linearly from bin ``b[j]`` (weight 0) to ``b[j+1]`` (weight 1, exclusive)
    and falls from ``b[j+1]`` (1) to ``b[j+2]`` (exclusive); when two edges fall on the same bin the
    corresponding side is empty (a filter can be entirely zero at high sample rates).
    """
    if isinstance(sample_rate, (int, np.integer)):
        sample_rate = int(sample_rate)
    _check_rate(sample_rate)
    b = _filter_edges(sample_rate, num_filters)
    k = np.arange(_NBINS, dtype=np.float64)[:, None]
    lo, mid, hi = b[None, :-2], b[None, 1:-1], b[None, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((k >= lo) & (k < mid), (k - lo) / (mid - lo), 0.0)
        falling = np.where((k >= mid) & (k < hi), (hi - k) / (hi - mid), 0.0)
    return rising + falling


def _filter_edges_tf(sample_rate, num_filters: int) -> tf.Tensor:
    """:func:`_filter_edges` with TF float64 ops (``sample_rate`` scalar or ``[...]``)."""
    rate = tf.cast(sample_rate, tf.float64)[..., None]
    ln10 = tf.constant(math.log(10.0), tf.float64)
    highmel = 2595 * (tf.math.log(1 + (rate / 2) / 700.0) / ln10)
    step = highmel / (num_filters + 1)
    i = tf.range(num_filters + 2, dtype=tf.float64)
    melpoints = tf.where(i < num_filters + 1, i * step, highmel)
    hz = 700 * (tf.pow(tf.constant(10.0, tf.float64), melpoints / 2595.0) - 1)
    return tf.floor((NFFT + 1) * hz / rate)


def _mel_filterbank_tf(sample_rate: tf.Tensor, num_filters: int) -> tf.Tensor:
    """:func:`mel_filterbank_matrix` with TF float64 ops, for a rate known only at run time."""
    b = _filter_edges_tf(sample_rate, num_filters)
    k = tf.range(_NBINS, dtype=tf.float64)[:, None]
    lo, mid, hi = b[None, :-2], b[None, 1:-1], b[None, 2:]
    rising = tf.where((k >= lo) & (k < mid), tf.math.divide_no_nan(k - lo, mid - lo), 0.0)
    falling = tf.where((k >= mid) & (k < hi), tf.math.divide_no_nan(hi - k, hi - mid), 0.0)
    return rising + falling


# --------------------------------------------------------------------------------------------
# Log mel filterbank
# --------------------------------------------------------------------------------------------

#: Pre-emphasis is computed as ``z = 100 x[n] - 97 x[n-1] = 100 y[n]``: for integer samples on
#: the int16 scale every term is an integer below 2^24, so ``z`` is exact even in float32 (``y``
#: itself is not: ``0.97 x`` rounds, adding white noise at the level of the float32 FFT's own).
#: The scale is folded into the filterbank matrix.
_SCALE = 100.0
_PREV = 97.0

PRECISIONS = ("mixed", "float32", "float64")


class _Plan(NamedTuple):
    """Everything the per-segment computation needs (Python numbers or tensors)."""
    precision: str
    frame_len: object
    frame_step: object
    fft_input: object      # samples of a frame that reach the FFT: min(frame_len, 512)
    fb: tf.Tensor          # mixed/float32: [514, nf] float32, rows (re, im) of each bin;
                           # float64: [257, nf] float64. Includes 1 / (512 * 100^2).
    num_filters: int
    xla: bool = False      # ops XLA can compile (no complex bitcast)


def _precision(compute_dtype) -> str:
    if compute_dtype is None or (isinstance(compute_dtype, str) and compute_dtype == "mixed"):
        return "mixed"
    try:
        dtype = tf.as_dtype(compute_dtype)
    except TypeError:
        dtype = None
    if dtype == tf.float32:
        return "float32"
    if dtype == tf.float64:
        return "float64"
    raise ValueError(f"compute_dtype must be None (mixed), 'mixed', float32 or float64, "
                     f"got {compute_dtype!r}")


def _paired_filterbank(fb, precision, xp):
    """float64 keeps ``[257, nf]``; the others take the (re, im) pairs of the spectrum as
    ``[514, nf]`` rows (``xp``: numpy or tf)."""
    return fb if precision == "float64" else xp.repeat(fb, 2, axis=0)


_PLAN_CACHE: dict = {}


def _plan(sample_rate, num_filters: int, precision: str) -> _Plan:
    rate = _static_rate(sample_rate)
    scale = 1.0 / (NFFT * _SCALE * _SCALE)
    dtype = tf.float64 if precision == "float64" else tf.float32
    if rate is not None:
        key = (rate, num_filters, precision)
        fb = _PLAN_CACHE.get(key)
        if fb is None:
            fb = _paired_filterbank(mel_filterbank_matrix(rate, num_filters) * scale,
                                    precision, np)
            _PLAN_CACHE[key] = fb
        fl, fs = frame_geometry(rate)
        return _Plan(precision, fl, fs, min(fl, NFFT), tf.constant(fb, dtype), num_filters)
    rate_t = tf.convert_to_tensor(sample_rate)
    with tf.control_dependencies([tf.debugging.assert_greater_equal(
            tf.cast(rate_t, tf.float64), tf.constant(50.0, tf.float64),
            message="sample_rate must be at least 50 Hz")]):
        fl, fs = _frame_geometry_tf(rate_t)
    fb = _paired_filterbank(_mel_filterbank_tf(rate_t, num_filters) * scale, precision, tf)
    return _Plan(precision, fl, fs, tf.minimum(fl, NFFT), tf.cast(fb, dtype), num_filters)


def _pad_or_trim(x: tf.Tensor, length) -> tf.Tensor:
    """Zero-pads or truncates the last axis of ``x`` to ``length`` samples."""
    n = tf.shape(x)[-1]
    length = tf.maximum(length, 0)
    x = x[..., :length]
    pad = tf.maximum(length - n, 0)
    paddings = tf.concat([tf.zeros([tf.rank(x) - 1, 2], tf.int32),
                          tf.reshape(tf.stack([0, pad]), [1, 2])], 0)
    return tf.pad(x, paddings)


#: Frames per chunk. Intermediates (frames, spectrum, power) of a whole long utterance or a big
#: batch run to hundreds of MB, and allocating and touching that much memory costs more than
#: the FFT itself (fresh multi-MB buffers page-fault on every call: an rfft of 3000 frames
#: took 2.4 us per frame, of 512 frames 1.1 us); chunks of <= 512 frames stay in cache.
#: Short rows are grouped so that a chunk still holds up to this many frames.
CHUNK_FRAMES = 512


def _blocks_per_frame(fs):
    """``P = ceil(512 / fs)``: 10 ms blocks spanned by the samples an FFT frame can use."""
    if isinstance(fs, int):
        return -(-NFFT // fs)
    return (NFFT + fs - 1) // fs


def _frame(z: tf.Tensor, length, fs, count) -> tf.Tensor:
    """``[G, L]`` -> ``[G, count, length]`` with frame ``i = z[:, i*fs : i*fs + length]``, where
    ``L = (count - 1 + P) * fs`` (``P = ceil(512 / fs)``, ``length <= 512``).

    ``tf.signal.frame`` gathers sub-frames of ``gcd(length, fs)`` samples: 32 for 512 / 160,
    but a single sample for 512 / 221 (22.05 kHz) or 512 / 441 (44.1 kHz), which is many times
    slower. Then frames are gathered as ``P`` whole blocks of ``fs`` samples and cut to
    ``length``."""
    if isinstance(length, int) and isinstance(fs, int) and math.gcd(length, fs) >= 16:
        return tf.signal.frame(z[:, :(count - 1) * fs + length], length, fs, axis=-1)
    blocks_per_frame = _blocks_per_frame(fs)
    blocks = tf.reshape(z, [tf.shape(z)[0], count - 1 + blocks_per_frame, fs])
    frames = tf.signal.frame(blocks, blocks_per_frame, 1, axis=1)  # [G, count, P, fs]
    frames = tf.reshape(frames, [tf.shape(z)[0], count, blocks_per_frame * fs])
    return frames[:, :, :length]


def _fft_frames(z: tf.Tensor, fs, m, count) -> tf.Tensor:
    """``[G, L]`` -> ``[G, count, 512]`` FFT inputs: frame ``k`` holds ``z[k*fs : k*fs + m]``,
    then zeros. Framing straight to the FFT length and zeroing the tail measured faster than
    framing to ``m`` and letting the FFT op pad."""
    frames = tf.ensure_shape(_frame(z, NFFT, fs, count), [None, None, NFFT])
    if isinstance(m, int) and m >= NFFT:
        return frames
    return tf.where(tf.range(NFFT) < m, frames, tf.zeros([], frames.dtype))


def _finish(feat: tf.Tensor) -> tf.Tensor:
    feat = tf.where(tf.equal(feat, 0.0), tf.constant(_EPS, feat.dtype), feat)
    return tf.cast(tf.math.log(feat), tf.float32)


def _segment_log_mel(segments: tf.Tensor, valid: tf.Tensor, chunk, plan: _Plan) -> tf.Tensor:
    """``[G, fs + L]`` raw samples -> ``[G, chunk, nf]`` log energies.

    Segment ``g`` holds the ``fs`` samples before its first frame, then the ``L = (chunk - 1 +
    P) * fs`` samples its frames draw from; ``valid[g]`` of those ``L`` samples lie within the
    signal (pre-emphasised samples past the end are zero, as the reference pads them)."""
    fs, m, nf = plan.frame_step, plan.fft_input, plan.num_filters
    wide = tf.float32 if plan.precision == "float32" else tf.float64
    x = tf.cast(segments, wide)
    z = _SCALE * x[:, fs:] - _PREV * x[:, fs - 1:-1]
    z = tf.where(tf.range(tf.shape(z)[1])[None, :] < valid[:, None], z, tf.zeros([], wide))
    rows = tf.shape(z)[0] * chunk
    spec = tf.signal.rfft(_fft_frames(z, fs, m, chunk))
    if plan.precision == "float64":
        power = tf.math.square(tf.math.real(spec)) + tf.math.square(tf.math.imag(spec))
        feat = tf.matmul(tf.reshape(power, [rows, _NBINS]), plan.fb)
    elif plan.xla:
        # XLA has no complex bitcast, and fuses re^2 + im^2 into one pass: the power of each
        # bin, then the filterbank's rows of each bin once (its (re, im) rows are equal), half
        # the product of the pairs below (30 s of audio: 4.4 against 5.0 ms on 2 cores).
        power = tf.math.square(tf.math.real(spec)) + tf.math.square(tf.math.imag(spec))
        feat = tf.matmul(tf.reshape(tf.cast(power, tf.float32), [rows, _NBINS]),
                         plan.fb[0::2])
    else:
        # (re, im) pairs squared in one pass; the filterbank rows come in the same pairs. The
        # filter sums add positive terms, so float32 costs them ~1e-7 relative at most.
        pairs = tf.bitcast(spec, wide)
        power = tf.math.square(pairs)
        if plan.precision == "mixed":
            power = tf.cast(power, tf.float32)
        feat = tf.matmul(tf.reshape(power, [rows, 2 * _NBINS]), plan.fb)
    return tf.reshape(_finish(feat), [-1, chunk, nf])


def _direct_rows(x: tf.Tensor, lengths: tf.Tensor, max_frames, plan: _Plan) -> tf.Tensor:
    """:func:`_log_mel_rows` for little work (all frames in one chunk): each row is one
    segment, no chunking machinery (a single short utterance costs about half the ops)."""
    fs = plan.frame_step
    chunk = tf.maximum(max_frames, 1)
    seg_len = (chunk - 1 + _blocks_per_frame(fs)) * fs
    segments = _pad_or_trim(tf.pad(x, [[0, 0], [fs, 0]]), fs + seg_len)
    out = _segment_log_mel(segments, tf.minimum(lengths, seg_len), chunk, plan)
    return out[:, :max_frames]


def _log_mel_rows(x: tf.Tensor, lengths: tf.Tensor, max_frames, plan: _Plan,
                  direct: bool = False) -> tf.Tensor:
    """Raw rows ``[R, T]`` with ``lengths[r]`` valid samples -> ``[R, max_frames, nf]``.

    Rows are cut into segments of ``chunk = min(CHUNK_FRAMES, max_frames)`` frames (segments
    overlap by a few blocks of ``fs`` samples); segments are grouped up to ``CHUNK_FRAMES``
    frames and a ``tf.map_fn`` computes one group at a time (two at once); a single group is
    computed without the loop. Segment lengths are multiples of ``fs``, so that framing gathers
    whole blocks, not single samples.
    """
    if direct:
        return _direct_rows(x, lengths, max_frames, plan)
    fs, nf = plan.frame_step, plan.num_filters
    rows = tf.shape(x)[0]
    chunk = tf.maximum(tf.minimum(CHUNK_FRAMES, max_frames), 1)
    nch = (max_frames + chunk - 1) // chunk
    seg_len = (chunk - 1 + _blocks_per_frame(fs)) * fs
    hop = chunk * fs
    # x_ext[j] = x[j - fs]: segment c is x_ext[c * hop : c * hop + fs + seg_len].
    x_ext = tf.pad(x, [[0, 0], [fs, 0]])
    x_ext = _pad_or_trim(x_ext, (tf.maximum(nch, 1) - 1) * hop + fs + seg_len)
    segments = tf.signal.frame(x_ext, fs + seg_len, hop, axis=-1)[:, :nch]
    count = rows * nch
    segments = tf.reshape(segments, [count, fs + seg_len])
    starts = tf.range(nch) * hop
    valid = tf.reshape(tf.clip_by_value(lengths[:, None] - starts[None, :], 0, seg_len),
                       [count])
    # Balanced groups of at most CHUNK_FRAMES frames.
    most = tf.maximum(CHUNK_FRAMES // chunk, 1)
    groups = tf.maximum((count + most - 1) // most, 1)
    size = tf.maximum((count + groups - 1) // groups, 1)
    padded = groups * size
    segments = tf.reshape(tf.pad(segments, [[0, padded - count], [0, 0]]),
                          [groups, size, fs + seg_len])
    valid = tf.reshape(tf.pad(valid, [[0, padded - count]]), [groups, size])

    def direct():
        return _segment_log_mel(segments[0], valid[0], chunk, plan)[None]

    def looped():
        return tf.map_fn(lambda args: _segment_log_mel(args[0], args[1], chunk, plan),
                         (segments, valid), parallel_iterations=2,
                         fn_output_signature=tf.TensorSpec([None, None, nf], tf.float32))

    out = tf.cond(tf.equal(groups, 1), direct, looped)
    out = tf.reshape(out, [padded, chunk, nf])[:count]
    return tf.reshape(out, [rows, nch * chunk, nf])[:, :max_frames]


def _to_tensor(values) -> tf.Tensor:
    """``values`` as a tensor, without rounding the samples.

    Tensors and numpy arrays keep their dtype (a float32 array is widened to float64 only
    inside the computation, which is exact). Anything else (a list of samples) goes through
    numpy: TensorFlow's own conversion makes Python floats float32, rounding every sample to
    24 bits, where numpy (and so the reference library) keeps float64. At 44.1 kHz that
    rounding alone moved the DC-only first filter of white noise by 1.1e-3."""
    # numpy arrays first: the check costs nothing on the common path.
    if isinstance(values, np.ndarray) or tf.is_tensor(values) or isinstance(values, tf.Variable):
        return tf.convert_to_tensor(values)
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, NotImplementedError):
        # e.g. a list of symbolic tensors inside tf.function: TensorFlow stacks them.
        return tf.convert_to_tensor(values)
    if array.dtype == object:
        return tf.convert_to_tensor(values)
    return tf.convert_to_tensor(array)


def _as_1d(waveform) -> tf.Tensor:
    x = _to_tensor(waveform)
    if x.shape.rank is not None and x.shape.rank != 1:
        raise ValueError(f"waveform must be 1-D (mono samples), got shape {x.shape}; "
                         "use log_mel_filterbank_batch for [batch, samples]")
    return tf.reshape(x, [-1]) if x.shape.rank is None else x


def _log_mel_impl(waveform, sample_rate, num_filters, precision, direct=False, xla=False):
    x = _as_1d(waveform)
    plan = _plan(sample_rate, num_filters, precision)._replace(xla=xla)
    n = tf.shape(x)[0]
    nf = _num_frames_from(n, plan.frame_len, plan.frame_step)
    return _log_mel_rows(x[None, :], n[None], nf, plan, direct)[0]


_EAGER_FNS: dict = {}


def _eager_fn(key, build):
    """A cached concrete function per (kind, rate, filters, precision, input dtype): calling a
    concrete function skips the polymorphic dispatch of ``tf.function``."""
    fn = _EAGER_FNS.get(key)
    if fn is None:
        fn = build()
        _EAGER_FNS[key] = fn
    return fn


def log_mel_filterbank(waveform, sample_rate, num_filters: int = NUM_FILTERS,
                       compute_dtype=None) -> tf.Tensor:
    """Log mel filterbank of one waveform, ``python_speech_features.logfbank`` semantics.

    Args:
      waveform: 1-D samples on the int16 scale (any real dtype; numpy, tensor or a Python list,
        read as numpy reads it: float64 for Python floats; any length, also unknown inside
        ``tf.function``). Used exactly: see "Input values" in the module doc.
      sample_rate: Python number, or scalar tensor (static or run-time value).
      num_filters: number of mel filters (the reference uses 40).
      compute_dtype: None (default, "mixed": float64 FFT, float32 filterbank product, ~2e-6 from
        the reference), float64 (everything in float64) or float32 (fastest, not parity-safe:
        up to ~1e-2 off at 48 kHz); see the module doc.

    Returns:
      float32 tensor ``[num_frames(len, sr), num_filters]`` of natural-log filter energies
      (not normalised; see :func:`normalize_log_mel`).
    """
    precision = _precision(compute_dtype)
    rate = _static_rate(sample_rate)
    if rate is not None:
        _check_rate(rate)
    num_filters = int(num_filters)
    if tf.executing_eagerly() and rate is not None:
        x = _as_1d(waveform)
        # The length is known here: a short utterance skips the chunking ops.
        direct = num_frames(int(x.shape[0]), rate) <= CHUNK_FRAMES
        fn = _eager_fn(("single", rate, num_filters, precision, x.dtype, direct),
                       lambda: tf.function(
                           lambda w: _log_mel_impl(w, rate, num_filters, precision, direct),
                           autograph=False).get_concrete_function(
                               tf.TensorSpec([None], x.dtype)))
        return fn(x)
    return _log_mel_impl(waveform, sample_rate if rate is None else rate, num_filters,
                         precision)


def log_mel_filterbank_compilable(waveform, sample_rate: Number,
                                  num_filters: int = NUM_FILTERS) -> tf.Tensor:
    """:func:`log_mel_filterbank` (default precision) in ops that XLA compiles, for use inside
    ``tf.function(jit_compile=True)``, where each waveform length compiles anew (so cut the
    waveform to a few fixed lengths, e.g. whole windows). All frames in one chunk (no
    ``tf.map_fn`` / ``tf.cond``), the power spectrum from the real and imaginary parts (XLA
    has no complex bitcast); ``sample_rate`` must be a Python number. The same computation:
    differences are XLA's float rounding (max abs ~1e-6 on the 16 kHz test signals)."""
    rate = _static_rate(sample_rate)
    if rate is None:
        raise ValueError("log_mel_filterbank_compilable needs a Python sample rate")
    _check_rate(rate)
    return _log_mel_impl(waveform, rate, int(num_filters), "mixed", direct=True, xla=True)


def log_mel_filterbank_batch(waveforms, lengths, sample_rate, num_filters: int = NUM_FILTERS,
                             compute_dtype=None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Batched :func:`log_mel_filterbank` of right-padded waveforms.

    Args:
      waveforms: ``[B, S]`` samples on the int16 scale; row ``b`` holds ``lengths[b]`` valid
        samples, anything after them is ignored (it need not be zero).
      lengths: ``[B]`` integer number of valid samples per row (clipped to ``[0, S]``).
      sample_rate: shared by the whole batch (Python number or scalar tensor).
      compute_dtype: as for :func:`log_mel_filterbank`.

    Returns:
      ``(features, frame_lengths)``: float32 ``[B, max_frames, num_filters]`` where row ``b``'s
      first ``frame_lengths[b]`` frames equal ``log_mel_filterbank(waveforms[b, :lengths[b]])``,
      and int32 ``[B]`` frame counts. ``max_frames = max(frame_lengths)``. Frames past a row's
      length are filled with **0.0** (a raw log energy of 0; after :func:`normalize_log_mel` this is
      :data:`MEL_PAD_VALUE`, the value the reference pads short crops with).
    """
    precision = _precision(compute_dtype)
    rate = _static_rate(sample_rate)
    if rate is not None:
        _check_rate(rate)
    num_filters = int(num_filters)
    if tf.executing_eagerly() and rate is not None:
        x = _to_tensor(waveforms)
        if x.shape.rank != 2:
            raise ValueError(f"waveforms must be [batch, samples], got shape {x.shape}")
        n = tf.cast(tf.convert_to_tensor(lengths), tf.int32)
        longest = int(np.clip(n.numpy(), 0, x.shape[1]).max(initial=0))
        direct = int(x.shape[0]) * num_frames(longest, rate) <= CHUNK_FRAMES
        fn = _eager_fn(("batch", rate, num_filters, precision, x.dtype, direct),
                       lambda: tf.function(
                           lambda w, k: _log_mel_batch_impl(w, k, rate, num_filters,
                                                            precision, direct),
                           autograph=False).get_concrete_function(
                               tf.TensorSpec([None, None], x.dtype),
                               tf.TensorSpec([None], tf.int32)))
        return fn(x, n)
    return _log_mel_batch_impl(waveforms, lengths, sample_rate if rate is None else rate,
                               num_filters, precision)


def _log_mel_batch_impl(waveforms, lengths, sample_rate, num_filters, precision,
                        direct=False):
    x = tf.ensure_shape(_to_tensor(waveforms), [None, None])
    total = tf.shape(x)[1]
    lengths = tf.clip_by_value(tf.cast(tf.convert_to_tensor(lengths), tf.int32), 0, total)
    plan = _plan(sample_rate, num_filters, precision)
    frame_lengths = _num_frames_from(lengths, plan.frame_len, plan.frame_step)
    max_frames = tf.reduce_max(tf.concat([frame_lengths, [0]], 0))
    feats = _log_mel_rows(x, lengths, max_frames, plan, direct)
    frame_valid = tf.range(max_frames)[None, :] < frame_lengths[:, None]
    feats = tf.where(frame_valid[:, :, None], feats, 0.0)
    return feats, frame_lengths


def normalize_log_mel(x):
    """The reference's global normalisation ``(x - 10.9915) / 3.1661`` (numpy or tensor)."""
    return (x - MEL_MEAN) / MEL_STD


def denormalize_log_mel(x):
    """Inverse of :func:`normalize_log_mel`."""
    return x * MEL_STD + MEL_MEAN
