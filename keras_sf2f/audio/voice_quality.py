"""Voice-quality channels: how regular the voice is and at what pitch, per feature frame.

Why. The log mel filterbank (:mod:`~keras_sf2f.audio.features`) averages the spectrum over a
25 ms frame and over bands 30 to 500 Hz wide. The irregularities of an ageing or breathy voice --
cycle-to-cycle changes of pitch period (jitter) and amplitude (shimmer), a slow tremor, aspiration
noise between the harmonics -- blur the fine harmonic structure that those bands sum over, so
they barely change the 40 numbers. A periodicity measure on the fine spectrum keeps them. On the
procedural corpus, an encoder probe read age at Pearson r 0.45-0.53 from log-mels alone and at
0.57-0.73 with these channels added (BUILD_NOTES.md, "Voice-quality channels").

What. For every log-mel frame (same count, :func:`~keras_sf2f.audio.features.num_frames`), a 40 ms
Hann window (640 samples at 16 kHz) centred where the log-mel frame is centred (its sample 200),
zero outside the signal, padded to a 2048-point FFT. Four channels:

0. **harmonicity**: the largest normalised autocorrelation at lags of 2.5-16 ms (pitch 62.5-400
   Hz), with the Hann window's own autocorrelation divided out; about 1 for a steady periodic
   voice, lower for a rough or breathy one, about 0 for noise and silence; clipped to [-1, 1.5];
1. **cepstral peak prominence**: the real cepstrum's largest value at quefrencies of 2.5-16 ms
   minus its mean over them (a clear pitch peak stands out of a flat cepstrum);
2. **log pitch**: ``log(16000 / lag)`` of that autocorrelation peak, in log Hz; meaningful
   where the harmonicity is high (the encoder sees both); ``log(400)`` where the harmonicity is
   at most 1e-3 (silence, where the peak would be rounding noise);
3. **log energy**: natural log of the window's energy on the [-1, 1] sample scale, plus 1e-10.

Each channel is then standardised with fixed constants (:data:`CHANNEL_MEAN`,
:data:`CHANNEL_STD`: the mean and standard deviation over the procedural corpus's 350 first
training voices, frames of silence included), as the reference standardises its log-mels with
one global mean and deviation. They only set the scale the encoder's first convolution sees.

Samples are at 16 kHz on the int16 scale, as for the log-mels (the project's loaders and the
served graph resample to 16 kHz first). Everything is float64 until the float32 result; the
test checks it against a NumPy float64 oracle.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sf2f.audio import features

__all__ = ["CHANNELS", "NUM_CHANNELS", "CHANNEL_MEAN", "CHANNEL_STD", "SAMPLE_RATE",
           "voice_quality_channels"]

#: Channel names, in order.
CHANNELS = ("harmonicity", "cepstral_peak", "log_pitch", "log_energy")
NUM_CHANNELS = len(CHANNELS)
SAMPLE_RATE = 16000
#: Standardisation constants (see the module doc).
CHANNEL_MEAN = (0.6837, 0.2919, 4.8304, -3.1814)
CHANNEL_STD = (0.3605, 0.1502, 0.4738, 4.9958)

WINDOW = 640          # 40 ms
FFT_SIZE = 2048       # room for the autocorrelation's lags without wrap-around
MIN_LAG, MAX_LAG = 40, 256   # 2.5 ms (400 Hz) .. 16 ms (62.5 Hz), MAX_LAG excluded
_LEFT = 120           # the window starts 120 samples before the log-mel frame (centre + 200)
#: Samples a frame's window reaches past the end of its 400-sample log-mel frame.
LOOKAHEAD = WINDOW - _LEFT - 400
#: Samples a frame's window reaches before the start of its log-mel frame.
LOOKBEHIND = _LEFT
_POWER_FLOOR = 1e-10
UNVOICED = 1e-3       # harmonicity at or below this: no pitch peak to read
_INT16 = 32768.0


def _window_autocorrelation() -> np.ndarray:
    w = np.hanning(WINDOW)
    spectrum = np.abs(np.fft.rfft(w, FFT_SIZE)) ** 2
    ac = np.fft.irfft(spectrum, FFT_SIZE)[:MAX_LAG]
    return ac / ac[0]


_GRAPH = None


def voice_quality_channels(waveform) -> tf.Tensor:
    """Standardised voice-quality channels of 16 kHz int16-scale samples.

    Args:
      waveform: 1-D samples (numpy, tensor or list; any real dtype; any length, also unknown
        inside ``tf.function``).

    Returns:
      float32 ``[num_frames(len, 16000), 4]``, frame ``f`` aligned with the log-mel frame
      ``f``; zero samples give ``[0, 4]``.
    """
    global _GRAPH
    if not isinstance(waveform, tf.Tensor):
        waveform = tf.convert_to_tensor(np.asarray(waveform, np.float64))
    if tf.executing_eagerly():
        # One traced graph for every eager call (data preparation calls this per utterance):
        # op-by-op execution costs more than the arithmetic.
        if _GRAPH is None:
            _GRAPH = tf.function(_channels, autograph=False).get_concrete_function(
                tf.TensorSpec([None], tf.float64))
        return _GRAPH(tf.reshape(tf.cast(waveform, tf.float64), [-1]))
    return _channels(waveform)


def _channels(waveform: tf.Tensor) -> tf.Tensor:
    x = tf.cast(waveform, tf.float64) / _INT16
    x = tf.reshape(x, [-1])
    _, step = features.frame_geometry(SAMPLE_RATE)
    count = features.num_frames(tf.shape(x)[0], SAMPLE_RATE)
    # Room for every window: _LEFT zeros before, and after the last frame's window end.
    padded = tf.concat([tf.zeros([_LEFT], tf.float64), x,
                        tf.zeros([WINDOW + step], tf.float64)], 0)
    frames = tf.signal.frame(padded, WINDOW, step)[:count]
    frames = frames * tf.constant(np.hanning(WINDOW), tf.float64)
    # Zero-padded to the FFT size by hand: RFFT rejects an empty batch of shorter rows.
    frames = tf.pad(frames, [[0, 0], [0, FFT_SIZE - WINDOW]])
    power = tf.math.square(tf.abs(tf.signal.rfft(frames, [FFT_SIZE])))
    autocorr = tf.signal.irfft(tf.complex(power, tf.zeros_like(power)), [FFT_SIZE])
    energy = autocorr[:, :1]
    lags = autocorr[:, MIN_LAG:MAX_LAG] / (energy + 1e-12) / tf.constant(
        _window_autocorrelation()[MIN_LAG:MAX_LAG], tf.float64)
    harmonicity = tf.clip_by_value(tf.reduce_max(lags, axis=1), -1.0, 1.5)
    lag = tf.cast(tf.argmax(lags, axis=1, output_type=tf.int32) + MIN_LAG, tf.float64)
    # No periodicity at all (silence, a lone click): the peak would be rounding noise, so the
    # pitch is that of the first lag, what an all-zero frame gives.
    lag = tf.where(harmonicity > UNVOICED, lag, float(MIN_LAG))
    log_power = tf.math.log(power + _POWER_FLOOR)
    cepstrum = tf.signal.irfft(tf.complex(log_power, tf.zeros_like(log_power)),
                               [FFT_SIZE])[:, MIN_LAG:MAX_LAG]
    peak = tf.reduce_max(cepstrum, axis=1) - tf.reduce_mean(cepstrum, axis=1)
    out = tf.stack([harmonicity, peak, tf.math.log(SAMPLE_RATE / lag),
                    tf.math.log(energy[:, 0] + _POWER_FLOOR)], axis=1)
    out = (out - tf.constant(CHANNEL_MEAN, tf.float64)) / tf.constant(CHANNEL_STD, tf.float64)
    return tf.cast(out, tf.float32)
