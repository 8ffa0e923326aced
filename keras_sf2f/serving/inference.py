"""The audio -> face graph that the SavedModel serves (stock TensorFlow ops only).

``FaceFromVoice(generator, ServingConfig(...))`` holds a restored generator and three
``tf.function``s, one per exported signature:

``serving_default(audio)``
    ``audio``: string ``[batch]``, each the bytes of a WAV file (8/16/24/32-bit integer PCM or
    32/64-bit float, any channel count, at 8, 11.025, 12, 16, 22.05, 24, 32, 44.1, 48, 88.2 or
    96 kHz; see :mod:`keras_sf2f.serving.wav`). Returns ``image_png_bytes`` (string
    ``[batch]``, PNG) and ``image`` (float32 ``[batch, H, W, 3]`` in [0, 1]).
``predict_waveform(waveform, sample_rate)``
    ``waveform``: float32 ``[batch, samples]`` on the **int16 scale** (+-32768, not [-1, 1]);
    rows of different lengths are padded at the end: a trailing run of samples equal to the
    row's first sample is dropped (zeros from a client, or the first value that TF-Serving's
    batching pads with). ``sample_rate``: int32, a scalar or one per row. Returns ``image``
    and ``embedding`` (float32 ``[batch, embedding_dim]``, unit norm).
``predict_mel(log_mel)``
    ``log_mel``: float32 ``[batch, segments, frames, 40]``, already normalised
    (``keras_sf2f.audio.features.normalize_log_mel``). Constant segments (all 0.0 from a
    client, or the request's first value, which TF-Serving's batching pads with) are padding
    and ignored; every item needs at least one real segment. All items of a batch must have
    the same number of frames per segment (125 for the evaluation's windows). Returns
    ``image`` and ``embedding``.

Audio inputs go through the evaluation's fuser protocol:

1. decode (WAV) and check: sample rate supported, no NaN/inf, at most ``max_audio_seconds``;
2. resample to 16 kHz in the graph (:mod:`keras_sf2f.serving.resample`);
3. remove silence with the **energy gate** (``keras_sf2f.audio.vad.energy_gate``), a pure-TF
   stand-in for the webrtcvad collector the offline data preparation uses -- serving does not
   run webrtcvad, so on noisy audio the kept speech can differ from training features;
4. log mel filterbank (python_speech_features semantics) and the reference normalisation;
5. cut 125-frame windows with stride 125 (1.25 s each, no overlap) from the start of the speech,
   keeping the first ``max_windows`` (20, as the evaluation's window stacks; 0 keeps all);
   fewer than 125 frames of speech is an error: 1.265 s, since the frames are 25 ms long every
   10 ms (124 hops of 10 ms plus one 25 ms frame);
6. encode each window alone (unit-norm embedding), then fuse: with an attention-fuser
   checkpoint (stage 2) the windows are fused by the fuser and re-normalised; with a stage-1
   checkpoint (no fuser) the window embeddings are **averaged and re-normalised to unit norm**.
   (The generator's own ``call`` averages without re-normalising, the reference's
   ``average_voice_embedding`` evaluation mode; the decoder was trained on unit-norm
   embeddings, so the export re-normalises.) The voice2face baseline's embedding noise is never
   added when serving: outputs are deterministic;
7. decode the face at the largest resolution; ImageNet de-normalisation, clipped to [0, 1].

Voice typicality (every signature, when the export was given the prepared data): a third
output ``voice_typicality``, float32 ``[batch]`` in [0, 1], says how typical the voice is of
the voices the model was trained on:

* distance: for the fused unit-norm embedding ``e`` (step 6),
  ``d(e) = 1 - max_i cos(e, b_i)`` over the **reference bank** ``b``, one unit-norm vector per
  training identity (the re-normalised mean of the fused embeddings of its speech, computed
  at export from the prepared data by ``keras_sf2f.serving.savedmodel.typicality_reference``);
* calibration: the sorted distances of the calibration identities -- every training identity
  (leave-one-out: its own bank vector is excluded, so it is measured like a voice the model
  has never heard) and every validation identity -- each from its speech exactly as serving
  embeds it (its first ``max_windows`` windows, fused);
* ``voice_typicality = #{calibration distances >= d(e)} / #calibration``: the share of known
  voices that are at least as far from the bank as this one. 1.0: as typical as the most
  typical known voice; below ``typicality_warning_below`` (recorded in the metadata, default
  0.05): farther from every training identity than 95 % of the known voices are, so the face
  says little about this voice.

The bank and the calibration are non-trainable variables of the SavedModel (restored by the
C++ loader like the generator's), and the computation is a matmul, a max and a comparison:
stock ops. An export without prepared data has no ``voice_typicality`` output at all (the
metadata's ``voice_typicality.reason`` says why), never a made-up value.

Every check is a ``tf.debugging.Assert`` whose message names the input item
(``audio[2]: ...``); TF-Serving returns it as an HTTP 400 / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import tensorflow as tf

from keras_sf2f.audio import features, voice_quality
from keras_sf2f.audio.vad import energy_gate
from keras_sf2f.data.pipelines import MAX_WINDOWS, WINDOW_FRAMES
from keras_sf2f.image_ranges import normalized_to_unit, unit_to_uint8
from keras_sf2f.models.layers import l2_normalize
from keras_sf2f.serving import resample, wav
from keras_sf2f.serving.wav import assert_that

__all__ = ["ServingConfig", "TypicalityReference", "FaceFromVoice", "SIGNATURES",
           "TYPICALITY_OUTPUT", "TYPICALITY_THRESHOLD_KEY", "DEFAULT_TYPICALITY_WARNING_BELOW",
           "TYPICALITY_DEFINITION", "waveform_to_face_function"]

SIGNATURES = ("serving_default", "predict_waveform", "predict_mel")
_RATE = resample.TARGET_RATE

# Names other code relies on (the try-your-voice page, the client): the output and the key of
# the warning threshold in the export's metadata.
TYPICALITY_OUTPUT = "voice_typicality"
TYPICALITY_THRESHOLD_KEY = "typicality_warning_below"
# Warn when the voice is farther from every training identity than 95 % of the known voices.
DEFAULT_TYPICALITY_WARNING_BELOW = 0.05
TYPICALITY_DEFINITION = (
    "voice_typicality = share of the calibration identities whose own distance is >= this "
    "voice's distance d(e) = 1 - max cosine similarity of the fused unit-norm voice embedding e "
    "to the reference bank (one re-normalised mean fused embedding per training identity). "
    "Calibration distances: every training identity (leave-one-out: its own bank vector "
    "excluded) and every validation identity, each embedded from its first max_windows "
    "125-frame windows exactly as serving embeds audio. 1 = as typical as the most typical "
    "known voice; small = unlike the voices the model was trained on.")


@dataclasses.dataclass
class ServingConfig:
    """What the serving graph accepts (recorded in the export's metadata)."""
    max_audio_seconds: float = 60.0
    max_windows: int = MAX_WINDOWS          # 0: every window of the audio
    window_frames: int = WINDOW_FRAMES
    sample_rates: tuple = resample.SUPPORTED_RATES

    def validate(self) -> "ServingConfig":
        if not (self.max_audio_seconds > 0 and math.isfinite(self.max_audio_seconds)):
            raise ValueError(f"max_audio_seconds must be positive, got {self.max_audio_seconds}")
        if self.max_windows < 0:
            raise ValueError(f"max_windows must be >= 0, got {self.max_windows}")
        if self.window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {self.window_frames}")
        min_seconds = self.min_speech_samples / _RATE
        if self.max_audio_seconds < min_seconds:
            raise ValueError(f"max_audio_seconds={self.max_audio_seconds} is shorter than one "
                             f"window ({min_seconds:.3f} s)")
        return self

    @property
    def max_frames(self) -> int:
        """Feature frames of the longest accepted audio (at 16 kHz)."""
        return features.num_frames(int(math.floor(self.max_audio_seconds * _RATE)), _RATE)

    @property
    def window_capacity(self) -> int:
        """Static number of window slots per item."""
        most = max(1, self.max_frames // self.window_frames)
        return min(self.max_windows, most) if self.max_windows else most

    @property
    def min_speech_samples(self) -> int:
        """16 kHz samples that give exactly one window of frames."""
        length, step = features.frame_geometry(_RATE)
        return (self.window_frames - 1) * step + length

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["sample_rates"] = list(self.sample_rates)
        return values


@dataclasses.dataclass
class TypicalityReference:
    """What ``voice_typicality`` is computed from (see "Voice typicality" above).

    ``bank``: float32 ``[identities, embedding_dim]``, one unit-norm vector per training
    identity; ``calibration``: the calibration identities' own distances (any order; stored
    sorted); ``warning_below``: the threshold recorded in the metadata; ``info``: where it all
    came from (data directory, splits, counts), merged into the metadata."""
    bank: np.ndarray
    calibration: np.ndarray
    warning_below: float = DEFAULT_TYPICALITY_WARNING_BELOW
    info: dict = dataclasses.field(default_factory=dict)
    # For the export's voice_typicality.json (too long for the metadata): the bank's identity
    # names in bank order, and one {"split", "name", "distance", "windows"} per calibration
    # identity.
    bank_names: list = dataclasses.field(default_factory=list)
    calibration_identities: list = dataclasses.field(default_factory=list)

    def validate(self, embedding_dim: int) -> "TypicalityReference":
        self.bank = np.asarray(self.bank, np.float32)
        self.calibration = np.sort(np.asarray(self.calibration, np.float32).reshape(-1))
        if self.bank.ndim != 2 or self.bank.shape[0] < 1 or self.bank.shape[1] != embedding_dim:
            raise ValueError(f"the typicality bank must be [identities >= 1, {embedding_dim}], "
                             f"got {list(self.bank.shape)}")
        if self.calibration.size < 1:
            raise ValueError("the typicality calibration needs at least one distance")
        if not (np.isfinite(self.bank).all() and np.isfinite(self.calibration).all()):
            raise ValueError("the typicality bank or calibration is not finite")
        norms = np.linalg.norm(self.bank, axis=1)
        if np.abs(norms - 1.0).max() > 1e-3:
            raise ValueError("the typicality bank's vectors must have unit norm")
        if not 0.0 <= self.warning_below <= 1.0:
            raise ValueError(f"typicality_warning_below must be in [0, 1], got "
                             f"{self.warning_below}")
        return self


def _join(*parts):
    return tf.strings.join([p if isinstance(p, tf.Tensor) else tf.constant(p) for p in parts])


def _seconds(x, precision=2):
    return tf.strings.as_string(tf.cast(x, tf.float32), precision=precision)


def _dbfs(peak):
    """A positive int16-scale amplitude in dB relative to full scale (32768), as text."""
    level = 20.0 * tf.math.log(tf.maximum(peak, 1e-6) / 32768.0) / math.log(10.0)
    return tf.strings.as_string(level, precision=1)


# What the energy gate (keras_sf2f.audio.vad.energy_gate, default arguments) keeps, for the
# "no speech found" message.
_GATE_RULE = ("the energy gate keeps only stretches of at least 90 ms whose 30 ms frames are "
              "louder than -75 dBFS")


class FaceFromVoice:
    """The serving functions around a generator (see the module docstring).

    ``signature_functions()`` gives the plain functions and their input signatures, which
    ``keras_sf2f/serving/savedmodel.py`` hands to ``keras.export.ExportArchive`` (that saves the
    generator's variables so that the C++ loader -- TF-Serving, ``saved_model_cli run`` --
    restores them). ``serving_default`` / ``predict_waveform`` / ``predict_mel`` are the same
    functions as ``tf.function``s, for use in Python.
    """

    def __init__(self, generator, config: ServingConfig | None = None,
                 typicality: TypicalityReference | None = None, typicality_reason: str = ""):
        """``typicality``: the bank and calibration of the ``voice_typicality`` output; without
        it the signatures have no such output and ``typicality_reason`` (recorded in the
        metadata) says why."""
        self.config = (config or ServingConfig()).validate()
        self.generator = generator
        self.encoder = generator.encoder
        # Feature channels per frame the encoder takes: the log-mel bands, then (a model
        # trained with --voice_quality_channels) the voice-quality channels.
        self.num_mel_bins = int(self.encoder.input_channels)
        self.voice_quality_channels = int(getattr(self.encoder, "voice_quality_channels", 0))
        self.log_mel_bands = self.num_mel_bins - self.voice_quality_channels
        self.image_size = int(generator.output_resolutions[-1])
        self.embedding_dim = int(self.encoder.embedding_dim)
        self.has_fuser = self.encoder.fuser is not None
        self._functions = {}
        self.typicality = typicality.validate(self.embedding_dim) if typicality else None
        self.typicality_reason = "" if typicality else (
            typicality_reason or "no typicality reference was given to the export")
        # Variables, not constants: the three signatures share one copy, and the SavedModel
        # stores them with the generator's (the export tracks ``typicality_variables``).
        self.typicality_variables = []
        if self.typicality is not None:
            with tf.init_scope():
                self._typicality_bank = tf.Variable(
                    self.typicality.bank, trainable=False, name="voice_typicality_bank")
                self._typicality_calibration = tf.Variable(
                    self.typicality.calibration, trainable=False,
                    name="voice_typicality_calibration")
            self.typicality_variables = [self._typicality_bank, self._typicality_calibration]

    @property
    def has_typicality(self) -> bool:
        return self.typicality is not None

    def signature_functions(self) -> dict:
        """name -> (python function, input signature), in SIGNATURES order."""
        return {
            "serving_default": (self._serving_default,
                                [tf.TensorSpec([None], tf.string, name="audio")]),
            "predict_waveform": (self._predict_waveform,
                                 [tf.TensorSpec([None, None], tf.float32, name="waveform"),
                                  tf.TensorSpec(None, tf.int32, name="sample_rate")]),
            "predict_mel": (self._predict_mel,
                            [tf.TensorSpec([None, None, None, self.num_mel_bins], tf.float32,
                                           name="log_mel")]),
        }

    def function(self, name: str):
        """The signature ``name`` as a ``tf.function`` (traced once, on first use)."""
        if name not in self._functions:
            fn, signature = self.signature_functions()[name]
            self._functions[name] = tf.function(fn, input_signature=signature,
                                                autograph=False)
        return self._functions[name]

    @property
    def serving_default(self):
        return self.function("serving_default")

    @property
    def predict_waveform(self):
        return self.function("predict_waveform")

    @property
    def predict_mel(self):
        return self.function("predict_mel")

    # ----------------------------------------------------------------------------------------
    # Checks
    # ----------------------------------------------------------------------------------------

    def _rate_and_length_checks(self, num_samples, sample_rate, name):
        """Assert ops: supported rate, then not too long (needs a valid rate)."""
        rates = self.config.sample_rates
        rate_ok = tf.reduce_any(tf.equal(tf.cast(sample_rate, tf.int64),
                                         tf.constant(rates, tf.int64)))
        rate_assert = assert_that(rate_ok, _join(
            name, ": unsupported sample rate ", tf.strings.as_string(sample_rate), " Hz; "
            "supported: ", ", ".join(str(r) for r in rates), " Hz (resample the audio first, "
            "e.g. ffmpeg -i INPUT -ar 16000 OUTPUT.wav)"))
        with tf.control_dependencies([rate_assert]):
            seconds = tf.cast(num_samples, tf.float64) / tf.cast(
                tf.maximum(sample_rate, 1), tf.float64)
            limit = self.config.max_audio_seconds
            length_assert = assert_that(seconds <= limit, _join(
                name, ": the audio is ", _seconds(seconds), " s long; the maximum is ",
                f"{limit:g} s (set by --max_audio_seconds at export)"))
        return [rate_assert, length_assert]

    def _finite_check(self, samples, name, what="samples"):
        return assert_that(tf.reduce_all(tf.math.is_finite(samples)),
                           _join(name, f": contains NaN or infinite {what}"))

    # ----------------------------------------------------------------------------------------
    # One item: 16 kHz samples -> windows
    # ----------------------------------------------------------------------------------------

    def _windows(self, samples_16k, name, silence_hint):
        """Energy gate, features, windows: ``([capacity, 125, mels], mask [capacity])``.

        ``silence_hint`` (string tensor) ends the "no speech found" message."""
        cfg = self.config
        speech = energy_gate(samples_16k, _RATE)
        n = tf.shape(speech)[0]
        min_samples = cfg.min_speech_samples
        length, step = features.frame_geometry(_RATE)
        # 125 frames need 124 hops of 10 ms plus one whole 25 ms frame: 1.265 s, not 1.25 s.
        silent = assert_that(n > 0, _join(
            name, ": no speech found: the audio is silent or too quiet (nothing is left after "
            "silence removal by the energy gate)", silence_hint))
        with tf.control_dependencies([silent]):
            short = assert_that(n >= min_samples, _join(
                name, ": too short: ", _seconds(tf.cast(n, tf.float32) / _RATE),
                f" s of speech after silence removal; at least {min_samples / _RATE:.3f} s "
                f"are needed ({cfg.window_frames} feature frames of {1000 * length // _RATE} "
                f"ms every {1000 * step // _RATE} ms)"))
        # Only the samples of the windows used are turned into features.
        needed = (cfg.window_capacity * cfg.window_frames - 1) * step + length
        with tf.control_dependencies([short]):
            feats = features.log_mel_filterbank(speech[:needed], _RATE, self.log_mel_bands)
        feats = features.normalize_log_mel(feats)
        if self.voice_quality_channels:
            # Their windows reach LOOKAHEAD samples past a log-mel frame's end: the speech
            # after `needed`, as the records' channels were computed on whole utterances.
            quality = voice_quality.voice_quality_channels(
                speech[:needed + voice_quality.LOOKAHEAD])[:tf.shape(feats)[0]]
            feats = tf.concat([feats, quality], axis=1)
        frames = tf.shape(feats)[0]
        count = tf.minimum(frames // cfg.window_frames, cfg.window_capacity)
        used = feats[:count * cfg.window_frames]
        windows = tf.reshape(used, [count, cfg.window_frames, self.num_mel_bins])
        windows = tf.pad(windows, [[0, cfg.window_capacity - count], [0, 0], [0, 0]],
                         constant_values=features.MEL_PAD_VALUE)
        windows = tf.ensure_shape(windows, [cfg.window_capacity, cfg.window_frames,
                                            self.num_mel_bins])
        mask = tf.range(cfg.window_capacity) < count
        return windows, mask

    def _audio_item(self, contents, index):
        name = _join("audio[", tf.strings.as_string(index), "]")
        info = wav.read_wav_header(contents, name)
        header_ok = assert_that(info.ok, info.message)
        with tf.control_dependencies([header_ok]):
            checks = self._rate_and_length_checks(info.num_frames, info.sample_rate, name)
        with tf.control_dependencies(checks):
            samples = wav.decode_wav_data(contents, info)
        with tf.control_dependencies([self._finite_check(samples, name)]):
            samples_16k = resample.resample_to(samples, info.sample_rate)
        peak = tf.reduce_max(tf.concat([tf.abs(samples), [0.0]], 0))
        hint = tf.where(peak > 0.0, _join(
            " (the loudest sample is at ", _dbfs(peak), f" dBFS; {_GATE_RULE}: check the "
            "recording level, or normalise the file, e.g. ffmpeg -i INPUT -af loudnorm "
            "OUTPUT.wav)"), " (every sample is 0: the file holds digital silence)")
        return self._windows(samples_16k, name, hint)

    def _waveform_item(self, waveform, sample_rate, index):
        name = _join("waveform[", tf.strings.as_string(index), "]")
        finite = self._finite_check(waveform, name)
        # Batch padding: TF-Serving's batching (pad_variable_length_inputs) pads a shorter
        # request with its first value, clients pad with zeros; a trailing run of samples equal
        # to the first sample is dropped (in real audio it is silence or a constant DC level).
        n = tf.shape(waveform)[0]
        first = tf.concat([waveform[:1], [0.0]], 0)[0]
        differs = tf.not_equal(waveform, first)
        last = tf.reduce_max(tf.concat([tf.boolean_mask(tf.range(n), differs), [-1]], 0))
        waveform = waveform[:last + 1]
        with tf.control_dependencies([finite]):
            checks = self._rate_and_length_checks(tf.shape(waveform)[0], sample_rate, name)
        with tf.control_dependencies(checks):
            samples_16k = resample.resample_to(waveform, sample_rate)
        peak = tf.reduce_max(tf.concat([tf.abs(waveform), [0.0]], 0))
        # Samples within [-1, 1] are most likely float audio that was not scaled to int16.
        hint = tf.where(
            peak <= 0.0, tf.constant(" (every sample is 0)"),
            tf.where(peak <= 1.0,
                     tf.constant(" (the samples never exceed 1.0: waveforms must be on the "
                                 "int16 scale, i.e. multiply [-1, 1] audio by 32768)"),
                     _join(" (the loudest sample is at ", _dbfs(peak), " dBFS of the int16 "
                           f"scale; {_GATE_RULE})")))
        return self._windows(samples_16k, name, hint)

    def _map_items(self, fn, elems):
        cfg = self.config
        spec = (tf.TensorSpec([cfg.window_capacity, cfg.window_frames, self.num_mel_bins],
                              tf.float32),
                tf.TensorSpec([cfg.window_capacity], tf.bool))
        windows, mask = tf.map_fn(lambda args: fn(*args), elems, fn_output_signature=spec)
        used = tf.reduce_max(tf.concat([tf.reduce_sum(tf.cast(mask, tf.int32), 1), [1]], 0))
        return windows[:, :used], mask[:, :used]

    # ----------------------------------------------------------------------------------------
    # Model
    # ----------------------------------------------------------------------------------------

    def embed(self, segments, mask):
        """Windows ``[B, W, F, mels]`` + mask ``[B, W]`` -> unit-norm embedding ``[B, D]``.

        Only the real windows are encoded; each item needs at least one."""
        valid = tf.boolean_mask(segments, mask)
        # Serving is deterministic: the voice2face baseline's inference noise is left out of
        # the traced graph (the flag is only read while tracing; the model is left as it was).
        noisy = bool(getattr(self.encoder, "add_noise", False))
        saved = getattr(self.encoder, "noise_at_inference", None)
        if noisy:
            self.encoder.noise_at_inference = False
        try:
            unit = self.encoder.embed(valid, training=False)        # [V, D], unit norm each
        finally:
            if noisy:
                self.encoder.noise_at_inference = saved
        shape = tf.shape(mask, out_type=tf.int64)
        per_window = tf.scatter_nd(tf.where(mask), unit,
                                   tf.concat([shape, [self.embedding_dim]], 0))
        per_window = tf.ensure_shape(per_window, [None, None, self.embedding_dim])
        if self.has_fuser:
            fused = self.encoder.fuser(per_window, mask)
        else:
            weights = tf.cast(mask, per_window.dtype)[:, :, None]
            fused = tf.reduce_sum(per_window * weights, 1) / tf.maximum(
                tf.reduce_sum(weights, 1), 1.0)
        return tf.cast(l2_normalize(fused), tf.float32)

    def voice_typicality(self, embedding):
        """Unit-norm fused embeddings ``[B, D]`` -> float32 ``[B]`` in [0, 1] (module doc)."""
        similarity = tf.matmul(embedding, self._typicality_bank, transpose_b=True)   # [B, N]
        distance = 1.0 - tf.reduce_max(similarity, axis=1)                            # [B]
        calibration = self._typicality_calibration                                    # [M]
        as_far = tf.reduce_sum(tf.cast(calibration[None, :] >= distance[:, None], tf.int32), 1)
        return tf.cast(as_far, tf.float32) / float(self.typicality.calibration.size)

    def _with_typicality(self, outputs: dict, embedding) -> dict:
        if self.has_typicality:
            outputs[TYPICALITY_OUTPUT] = self.voice_typicality(embedding)
        return outputs

    def faces(self, embedding):
        """Unit-norm embedding -> the largest image, in [0, 1] (float32 ``[B, H, W, 3]``)."""
        images = self.generator.decoder(embedding, training=False)
        if isinstance(images, (list, tuple)):
            images = images[-1]
        return normalized_to_unit(tf.cast(images, tf.float32))

    def _non_empty(self, batch, what):
        return assert_that(batch > 0, f"empty batch: send at least one {what}")

    # ----------------------------------------------------------------------------------------
    # Signatures
    # ----------------------------------------------------------------------------------------

    def _serving_default(self, audio):
        batch = tf.shape(audio)[0]
        with tf.control_dependencies([self._non_empty(batch, "audio item")]):
            index = tf.range(batch)
        windows, mask = self._map_items(self._audio_item, (audio, index))
        embedding = self.embed(windows, mask)
        image = self.faces(embedding)
        pixels = unit_to_uint8(image)
        png = tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.string)
        return self._with_typicality({"image_png_bytes": png, "image": image}, embedding)

    def _predict_waveform(self, waveform, sample_rate):
        batch = tf.shape(waveform)[0]
        rate = tf.reshape(sample_rate, [-1])
        count = tf.size(rate)
        rate_shape = assert_that(
            (tf.rank(sample_rate) <= 1) & ((count == 1) | (count == batch)),
            "sample_rate must be a scalar or hold one value per waveform row")
        with tf.control_dependencies([self._non_empty(batch, "waveform row"), rate_shape]):
            rate = tf.broadcast_to(rate, [batch])
            index = tf.range(batch)
        windows, mask = self._map_items(self._waveform_item, (waveform, rate, index))
        embedding = self.embed(windows, mask)
        return self._with_typicality({"image": self.faces(embedding), "embedding": embedding},
                                     embedding)

    def _predict_mel(self, log_mel):
        shape = tf.shape(log_mel)
        batch, frames = shape[0], shape[2]
        first = [self._non_empty(batch, "log_mel item"),
                 assert_that(tf.reduce_all(tf.math.is_finite(log_mel)),
                             "log_mel contains NaN or infinite values")]
        with tf.control_dependencies(first):
            # Padding segments are constant (all 0.0 from clients, or the request's first value
            # repeated by TF-Serving's batching); a real log-mel window never is.
            mask = tf.reduce_max(log_mel, axis=[2, 3]) > tf.reduce_min(log_mel, axis=[2, 3])
        per_item = tf.reduce_sum(tf.cast(mask, tf.int32), 1)
        max_frames = self.config.max_frames
        checks = [
            assert_that(frames >= 1, "log_mel has 0 frames per segment"),
            assert_that(tf.reduce_all(per_item >= 1), _join(
                "log_mel[", tf.strings.as_string(tf.argmin(per_item)),
                "] has no segment with data (every segment is constant, i.e. padding)")),
            assert_that(tf.reduce_all(per_item * frames <= max_frames), _join(
                "log_mel[", tf.strings.as_string(tf.argmax(per_item)), "] holds ",
                tf.strings.as_string(tf.reduce_max(per_item) * frames),
                f" frames; the maximum is {max_frames} (--max_audio_seconds="
                f"{self.config.max_audio_seconds:g} at export)")),
        ]
        with tf.control_dependencies(checks):
            log_mel = tf.identity(log_mel)
        embedding = self.embed(log_mel, mask)
        return self._with_typicality({"image": self.faces(embedding), "embedding": embedding},
                                     embedding)

    # ----------------------------------------------------------------------------------------

    def typicality_metadata(self) -> dict:
        """The ``voice_typicality`` section of the metadata: the definition, the threshold and
        the calibration's summary when the output exists, else why it does not."""
        if not self.has_typicality:
            return {"available": False, "reason": self.typicality_reason}
        ref = self.typicality
        calibration = ref.calibration.astype(np.float64)
        return {
            "available": True,
            "output": TYPICALITY_OUTPUT,
            "definition": TYPICALITY_DEFINITION,
            TYPICALITY_THRESHOLD_KEY: ref.warning_below,
            "warning": f"{TYPICALITY_OUTPUT} < {ref.warning_below:g}: the voice is farther from "
                       f"every training identity than {100 * (1 - ref.warning_below):g} % of "
                       f"the known voices are; the face says little about it",
            "bank_identities": int(ref.bank.shape[0]),
            "calibration_identities": int(calibration.size),
            # Typicality at a distance d is the share of these that are >= d: the distance at
            # which a voice crosses the threshold is the (1 - threshold) quantile.
            "calibration_distance_quantiles": {
                f"{q:g}": float(np.quantile(calibration, q))
                for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)},
            **ref.info,
        }

    def metadata(self) -> dict:
        """What the export records in assets.extra/sf2f_export.json."""
        cfg = self.config
        typicality_output = {TYPICALITY_OUTPUT: "float32 [batch] in [0, 1]: how typical the "
                                                "voice is of the training voices (see "
                                                "voice_typicality)"} \
            if self.has_typicality else {}
        return {
            "signatures": {
                "serving_default": {"inputs": {"audio": "string [batch]: WAV file bytes"},
                                    "outputs": {"image_png_bytes": "string [batch]: PNG",
                                                "image": f"float32 [batch, {self.image_size}, "
                                                         f"{self.image_size}, 3] in [0, 1]",
                                                **typicality_output}},
                "predict_waveform": {
                    "inputs": {"waveform": "float32 [batch, samples], int16 scale; a "
                                           "trailing run equal to the first sample is "
                                           "padding",
                               "sample_rate": "int32 scalar or [batch]"},
                    "outputs": {"image": "float32 [batch, H, W, 3] in [0, 1]",
                                "embedding": f"float32 [batch, {self.embedding_dim}]",
                                **typicality_output}},
                "predict_mel": {
                    "inputs": {"log_mel": f"float32 [batch, segments, frames, "
                                          f"{self.num_mel_bins}], normalised; constant "
                                          "segments are padding"},
                    "outputs": {"image": "float32 [batch, H, W, 3] in [0, 1]",
                                "embedding": f"float32 [batch, {self.embedding_dim}]",
                                **typicality_output}},
            },
            "audio_pipeline": {
                "wav_encodings": list(wav.ENCODINGS) + ["WAVE_FORMAT_EXTENSIBLE of those",
                                                        "any channel count, averaged"],
                "sample_rates": list(cfg.sample_rates),
                "resampling": f"polyphase Kaiser-windowed sinc to {_RATE} Hz "
                              f"({resample.ZERO_CROSSINGS} zero crossings, roll-off "
                              f"{resample.ROLLOFF})",
                "voice_activity": "energy gate (keras_sf2f.audio.vad.energy_gate, stock TF "
                                  "ops), NOT the webrtcvad collector of the offline data "
                                  "preparation",
                "features": "log mel filterbank, python_speech_features logfbank semantics, "
                            f"{self.log_mel_bands} bands, normalised (x - {features.MEL_MEAN}) / "
                            f"{features.MEL_STD}"
                            + (f"; then the {self.voice_quality_channels} voice-quality "
                               f"channels of keras_sf2f.audio.voice_quality ("
                               f"{', '.join(voice_quality.CHANNELS)})"
                               if self.voice_quality_channels else ""),
                "windows": f"{cfg.window_frames} frames, stride {cfg.window_frames}, from the "
                           f"start of the speech, at most "
                           f"{cfg.max_windows or 'all'} (capacity {cfg.window_capacity})",
                "fusion": ("attention fuser, re-normalised" if self.has_fuser else
                           "mean of the unit window embeddings, re-normalised (stage-1 "
                           "checkpoint: no fuser)"),
                "min_speech_seconds": cfg.min_speech_samples / _RATE,
                "max_audio_seconds": cfg.max_audio_seconds,
            },
            "serving_config": cfg.to_dict(),
            "image_size": self.image_size,
            "embedding_dim": self.embedding_dim,
            "deterministic": True,
            "voice_typicality": self.typicality_metadata(),
            # Also at the top level, where the try-your-voice page and other readers look
            # first; null when the export has no typicality output.
            TYPICALITY_THRESHOLD_KEY: (self.typicality.warning_below if self.has_typicality
                                       else None),
        }

    def metadata_json(self) -> str:
        return json.dumps(self.metadata(), indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------------
# Python inference (not exported)
# --------------------------------------------------------------------------------------------

#: ``waveform_to_face_function`` splits the windows into groups of at least this many.
MIN_GROUP_WINDOWS = 4


def waveform_to_face_function(generator, sample_rate: int = _RATE,
                              max_windows: int = MAX_WINDOWS, jit_compile: bool = True,
                              window_groups: int | None = None,
                              min_group_windows: int = MIN_GROUP_WINDOWS):
    """One ``tf.function`` for Python callers: a 1-D waveform on the int16 scale (any real
    dtype, any length with at least one 125-frame window) -> ``(largest image [1, H, W, 3]
    in the model's normalised space, embedding [1, D])``.

    The evaluation protocol without the serving checks: log mel features of only the samples
    that the first ``count = min(frames // 125, max_windows)`` windows use (the same frames as
    from the whole waveform), normalised, cut into ``[1, count, 125, mels]`` and passed to
    ``generator(..., training=False)`` (its own fusion: the fuser, or the plain mean of a
    stage-1 model).

    ``jit_compile``: features and encoder, then fusion and decoder, run as XLA clusters. The
    waveform is cut to the samples of whole windows first, so it compiles once per window
    count (at most ``max_windows`` shapes, ~1-2 s each on first use), not per waveform length.
    On a 2-core Xeon with oneDNN (sf2f_64_fuser, batch 1, interleaved with the uncompiled
    graph on a loaded machine) this measured 1.0-1.4x (1 window), 1.2-1.6x (3) and 1.1-1.5x
    (20) faster end to end: oneDNN convolutions re-lay-out variable weights on every call and
    pick slow kernels for some window counts, and the features' elementwise passes fuse. Max
    abs difference to the uncompiled graph: ~2e-6 on the log mel features (XLA's float32
    rounding), ~2e-7 on embeddings, ~1e-8 on the images.

    ``window_groups``: the windows' features and encoder run as this many independent calls
    of consecutive windows (each of at least ``min_group_windows`` windows, else one call),
    which TensorFlow runs side by side on its inter-op threads before the fusion and the
    decoder. Why: at batch 1 XLA's CPU kernels use a second core poorly (sf2f_64_fuser, 20
    windows, 2-core Intel Xeon: 33.5 ms on one thread, 27.8 on two); two groups of 10 windows
    took 24.4 ms against 27.8 for one call, with the same faces and embeddings (each window's
    features and encoding are its own; a group's compilation only changes float rounding).
    Default: 2 on a machine without a GPU, 1 with one (a GPU runs one call faster than two).

    Not used by the SavedModel export, on purpose: TF-Serving disables XLA:CPU by default
    (``--xla_cpu_compilation_enabled``) and fails requests that reach a must-compile function,
    so the exported signatures stay plain graphs (tested).
    """
    rate = int(sample_rate)
    length, step = features.frame_geometry(rate)
    frames = WINDOW_FRAMES
    num_mel_bins = int(generator.encoder.input_channels)
    quality = int(getattr(generator.encoder, "voice_quality_channels", 0))
    if quality and rate != voice_quality.SAMPLE_RATE:
        raise ValueError(f"voice-quality channels are computed at "
                         f"{voice_quality.SAMPLE_RATE} Hz, got a {rate} Hz waveform")
    if window_groups is None:
        window_groups = 1 if tf.config.list_logical_devices("GPU") else 2
    window_groups = int(window_groups)
    if window_groups < 1:
        raise ValueError(f"window_groups must be at least 1, got {window_groups}")
    log_mel = features.log_mel_filterbank_compilable if jit_compile else \
        features.log_mel_filterbank

    # The voice-quality windows reach past the last frame, as in the served graph, and
    # LOOKBEHIND samples before the first: a group that does not start at sample 0 is given
    # one frame more in front (its features are computed and dropped), so each of its frames
    # sees exactly the samples it sees in the whole waveform.
    lookahead = voice_quality.LOOKAHEAD if quality else 0
    if quality and voice_quality.LOOKBEHIND > step:
        raise ValueError("a voice-quality window reaches more than one frame step back")

    def embed_windows(samples, lead_frames):
        """Samples of ``lead_frames`` frames, then of whole windows (then ``lookahead``
        more) -> one unit-norm embedding per window [1, count, D]."""
        mel = features.normalize_log_mel(log_mel(samples[:tf.shape(samples)[0] - lookahead]
                                                 if lookahead else samples,
                                                 rate, num_mel_bins - quality))
        if quality:
            channels = voice_quality.voice_quality_channels(samples)[:tf.shape(mel)[0]]
            mel = tf.concat([mel, channels], axis=1)
        windows = tf.reshape(mel[lead_frames:], [1, -1, frames, num_mel_bins])
        return generator.encoder.embed_segments(windows, training=False)

    def face_from_window_embeddings(embeddings):
        # What generator(windows) does after the per-window embeddings.
        embedding = generator.encoder.fuse(embeddings)
        images = generator.decoder(embedding, training=False)
        images = images if isinstance(images, (list, tuple)) else [images]
        return images[-1], embedding

    xla = bool(jit_compile)
    embed_first = tf.function(lambda s: embed_windows(s, 0), autograph=False, jit_compile=xla)
    embed_later = tf.function(lambda s: embed_windows(s, 1), autograph=False, jit_compile=xla)
    to_face = tf.function(face_from_window_embeddings, autograph=False, jit_compile=xla)

    def samples_of(waveform, first, count):
        """The samples that windows ``first`` .. ``first + count - 1`` read (and the
        lookahead), from one frame earlier unless ``first`` is 0."""
        begin = tf.maximum(first * frames * step - step, 0)
        end = ((first + count) * frames - 1) * step + length + lookahead
        return waveform[begin:end]

    def forward(waveform):
        count = features.num_frames(tf.shape(waveform)[0], rate) // frames
        if max_windows:
            count = tf.minimum(count, max_windows)
        enough = tf.debugging.assert_positive(
            count, message=f"need at least one window of {frames} frames "
                           f"({((frames - 1) * step + length) / rate:.3f} s)")
        with tf.control_dependencies([enough]):
            count = tf.identity(count)
        # Groups of consecutive windows, the first ones one window larger when the count
        # does not divide. Few windows are not worth the split (3 windows in 2 groups: 14.1
        # against 13.6 ms): then the first group takes all and the others are empty (skipped).
        most = min(window_groups, int(max_windows) if max_windows else window_groups)
        used = tf.where(count >= most * int(min_group_windows), most, 1)
        sizes = [tf.where(g < used, (count + used - 1 - g) // used, 0) for g in range(most)]
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        parts = [embed_first(samples_of(waveform, 0, sizes[0]))]
        for first, size in zip(starts[1:], sizes[1:]):
            parts.append(tf.cond(size > 0,
                                 lambda f=first, n=size: embed_later(samples_of(waveform, f, n)),
                                 lambda: tf.zeros_like(parts[0][:, :0])))
        return to_face(tf.concat(parts, axis=1) if len(parts) > 1 else parts[0])

    # reduce_retracing: one trace per input dtype, not one per waveform length.
    return tf.function(forward, autograph=False, reduce_retracing=True)
