"""Sample-rate conversion inside a TensorFlow graph: polyphase windowed-sinc, stock ops only.

The serving graph brings audio at every common rate (8, 11.025, 12, 22.05, 24, 32, 44.1, 48,
88.2 and 96 kHz: ``audio_formats.SUPPORTED_RATES``) to the features' 16 kHz (16 kHz passes
through untouched). Conversion by the rational factor ``L / M`` (``out / in`` in lowest terms:
2/1, 640/441, 4/3, 320/441, 2/3, 1/2, 160/441, 1/3, 80/441, 1/6) is done as in every polyphase
resampler: output sample ``m`` sits at
input position ``m * M / L``; it is a weighted sum of the input samples within the filter's
half-width around that position, with weights from a Kaiser-windowed sinc low-pass whose cut-off
is ``rolloff`` times the lower Nyquist frequency.

The output samples of one block of ``L`` (phases ``p = 0 .. L-1``) all read the same stretch of
input (``M`` new samples plus the filter's reach), so the whole conversion is a framing of the
input (hop ``M``) followed by one matrix product with a constant ``[taps, L]`` matrix (column
``p`` = phase ``p``'s filter at its offset), computed in numpy when the graph is built; each
column is normalised to unit DC gain.

How it runs: ``G`` blocks are grouped so that one group of ``G * L`` outputs reads at most 4
consecutive rows of ``G * M`` inputs (``G = 1`` for the ``M = 441`` rates; more for the small
integer hops, so that the frames stay within 4 times the input). The input is reshaped into
rows of ``G * M``, the frames are ``K <= 4`` row-shifted views concatenated (a copy of ``K``
times the input, no gather), and one ``MatMul`` with the ``[K * G * M, G * L]`` matrix (the
block filter placed ``G`` times) gives every output. An earlier version ran the framing and the
product as one strided ``tf.nn.conv1d``; with oneDNN (on by default on x86), graph-mode
``Conv2D`` aborted the whole process (``Check failed: dtype() == expected_dtype (1 vs. 4)``
in ``MklConvOp``) when a minute of 88.2 kHz audio followed a minute of 44.1 kHz audio, so the
resampler uses no convolution.

Every rate uses the same filter design (32 zero crossings, roll-off 0.92, Kaiser beta 8.6), so
the quality is the same at every rate. Measured on test tones away from the (zero-padded) ends:
sines from 0.44 to 6.5 kHz (to 3 kHz from 8 kHz input) come out within -92 dB (RMS error
relative to the tone) of the exact 16 kHz sine; tones above the 8 kHz output Nyquist frequency
come out more than 100 dB down instead of aliasing. ``tests/test_export.py`` asserts -80 dB and
-70 dB at every supported rate. Tones between the cut-off and the Nyquist frequency of the
lower rate (from 0.92 x 4 kHz for 8 kHz input, 0.92 x 5.5 / 6 kHz for 11.025 / 12 kHz,
0.92 x 8 kHz otherwise) are attenuated.

When ``L`` is large (the ``M = 441`` rates) the matrix is mostly zeros: it is cut into column
blocks, each multiplied with the columns of the frames it reads (``grouped_matrix``), which
keeps the constants in the graph at 0.01-0.3 MB per rate. Cost: 90-200 multiply-adds per
input sample; a minute of audio takes tens of milliseconds on 2 cores.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

# Defined in the TF-free module so that the REST client knows them without TensorFlow.
from keras_sf2f.serving.audio_formats import SUPPORTED_RATES, TARGET_RATE

__all__ = ["SUPPORTED_RATES", "TARGET_RATE", "polyphase_matrix", "grouped_matrix", "resample",
           "resample_to"]

ZERO_CROSSINGS = 32
ROLLOFF = 0.92
KAISER_BETA = 8.6

_CACHE: dict = {}


def polyphase_matrix(in_rate: int, out_rate: int, zero_crossings: int = ZERO_CROSSINGS,
                     rolloff: float = ROLLOFF, beta: float = KAISER_BETA):
    """``(L, M, first_tap, matrix [taps, L] float32)`` for converting ``in_rate`` -> ``out_rate``.

    ``matrix[t, p]`` weighs input sample ``q*M + first_tap + t`` for output sample ``q*L + p``.
    """
    key = (int(in_rate), int(out_rate), zero_crossings, rolloff, beta)
    if key in _CACHE:
        return _CACHE[key]
    g = math.gcd(int(in_rate), int(out_rate))
    up, down = int(out_rate) // g, int(in_rate) // g
    # Cut-off in cycles per input sample, and the filter's half-width in input samples.
    cutoff = rolloff * 0.5 * min(1.0, up / down)
    half_width = zero_crossings / (2.0 * cutoff)
    centers = np.arange(up, dtype=np.float64) * down / up            # phase p's input position
    first = int(math.floor(-half_width))
    last = int(math.ceil(centers[-1] + half_width))
    taps = np.arange(first, last + 1, dtype=np.float64)
    d = centers[None, :] - taps[:, None]                               # [taps, L]
    inside = np.abs(d) < half_width
    window = np.where(inside, np.i0(beta * np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0,
                                                           1.0))) / np.i0(beta), 0.0)
    matrix = 2.0 * cutoff * np.sinc(2.0 * cutoff * d) * window
    matrix /= matrix.sum(axis=0, keepdims=True)
    result = (up, down, first, matrix.astype(np.float32))
    _CACHE[key] = result
    return result


#: Most input rows of ``G * M`` samples that one output group reads (see the module doc).
MAX_ROWS = 4


def grouped_matrix(in_rate: int, out_rate: int):
    """``(row, width, rows, first, parts)``: output group ``q`` (``width = G * L`` samples) is
    ``frames[q] @ matrix``, where ``frames[q]`` is the ``rows * row`` input samples from
    ``q * row + first`` on (``row = G * M``) and ``matrix`` is ``[rows * row, width]``.

    ``matrix`` is mostly zeros when ``L`` is large (one output reads only the filter's width of
    input): ``parts`` is its non-zero band cut into column blocks, ``[(lo, hi, block [hi - lo,
    columns]), ...]`` in column order, so that ``frames[:, lo:hi] @ block`` for each part,
    concatenated, is the product (11.025 kHz: 0.3 MB of weights instead of 2.3 MB)."""
    key = ("grouped", int(in_rate), int(out_rate))
    if key in _CACHE:
        return _CACHE[key]
    up, down, first, block = polyphase_matrix(in_rate, out_rate)
    taps = block.shape[0]
    group = 1
    while math.ceil(((group - 1) * down + taps) / (group * down)) > MAX_ROWS:
        group += 1
    row, width = group * down, group * up
    rows = math.ceil(((group - 1) * down + taps) / row)
    matrix = np.zeros([rows * row, width], np.float32)
    for g in range(group):
        matrix[g * down:g * down + taps, g * up:(g + 1) * up] = block

    def cut(count):
        parts, step = [], width // count
        for c in range(0, width, step):
            used = np.flatnonzero(np.any(matrix[:, c:c + step] != 0, axis=1))
            lo, hi = int(used[0]), int(used[-1]) + 1
            parts.append((lo, hi, matrix[lo:hi, c:c + step]))
        return parts

    # Column blocks of at least 16 outputs (smaller MatMuls cost more than they save).
    counts = [c for c in range(1, 17) if width % c == 0 and width // c >= 16] or [1]
    parts = min((cut(c) for c in counts), key=lambda p: sum(b.size for _, _, b in p))
    result = (row, width, rows, first, parts)
    _CACHE[key] = result
    return result


def resample(x, in_rate: int, out_rate: int = TARGET_RATE) -> tf.Tensor:
    """Resamples a 1-D float32 signal between two rates known when the graph is built.

    Returns ``ceil(n * out_rate / in_rate)`` samples (sample ``m`` at time ``m / out_rate``).
    """
    x = tf.reshape(tf.cast(x, tf.float32), [-1])
    if int(in_rate) == int(out_rate):
        return x
    up, down, _, _ = polyphase_matrix(in_rate, out_rate)
    row, width, rows, first, parts = grouped_matrix(in_rate, out_rate)
    n = tf.shape(x, out_type=tf.int64)[0]
    n_out = (n * up + down - 1) // down
    groups = tf.maximum((n_out + width - 1) // width, 1)
    total = (groups + rows - 1) * row
    padded = tf.pad(x, [[-first, 0]])
    padded = tf.pad(padded, [[0, tf.maximum(total - tf.shape(padded, out_type=tf.int64)[0],
                                           0)]])[:total]
    lines = tf.reshape(padded, [-1, row])                              # [groups + rows - 1, row]
    frames = tf.concat([lines[k:k + groups] for k in range(rows)], 1)  # [groups, rows * row]
    y = tf.concat([tf.linalg.matmul(frames[:, lo:hi], tf.constant(block))
                   for lo, hi, block in parts], 1)                     # [groups, width]
    return tf.reshape(y, [-1])[:n_out]


def resample_to(x, sample_rate, out_rate: int = TARGET_RATE,
                rates: Sequence[int] = SUPPORTED_RATES) -> tf.Tensor:
    """Resamples ``x`` from a run-time ``sample_rate`` (scalar tensor) that must be one of
    ``rates`` (check that first: other rates select the last branch) to ``out_rate``."""
    rate = tf.cast(sample_rate, tf.int32)
    index = tf.constant(len(rates) - 1, tf.int32)
    for i, r in reversed(list(enumerate(rates))):
        index = tf.where(tf.equal(rate, r), i, index)
    branches = [(lambda r=r: resample(x, r, out_rate)) for r in rates]
    return tf.switch_case(index, branches)
