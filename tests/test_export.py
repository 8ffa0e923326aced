"""Export to a TF-Serving SavedModel: in-graph WAV decoding and resampling, the serving graph
against an eager re-implementation, signatures, saved_model_cli, stock ops only, warm-up
records, versions and the export command's errors.

The tiny exported model (``exported_tiny_model``) is shared with tests/test_serving.py: it is
built once per test process.
"""

import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_sf2f import runs
from keras_sf2f.audio import features
from keras_sf2f.audio.vad import energy_gate
from keras_sf2f.image_ranges import normalized_to_unit, unit_to_uint8_np
from keras_sf2f.models import builder, reference_import
from keras_sf2f.models.layers import l2_normalize
from keras_sf2f.serving import audio_formats, resample, savedmodel, wav
from keras_sf2f.serving.inference import FaceFromVoice, ServingConfig

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SUBPROCESS_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")

# A tiny stage-2 SF2F-128 generator: attention fuser + 64/128 px decoder.
TINY_FLAGS = """# tiny test model
--encoder=inception
--encoder_channels=8,8,8,8
--embedding_dim=32
--noencoder_add_noise
--fuser=attention
--decoder=upconv_multires
--image_size=128
--image_discriminator_arch_128=
--identity_classifier_arch_128=
--num_train_identities=5
--batch_size=4
"""
TINY_CONFIG = dict(encoder_channels=(8, 8, 8, 8), embedding_dim=32, fuser="attention",
                   decoder="upconv_multires", image_size=128, image_discriminator_arch_128="",
                   identity_classifier_arch_128="", num_train_identities=5)

_SHARED = {}


def randomize(generator, seed=0):
    """Weights that make clearly different, mostly unclipped faces for different voices (a
    freshly initialised decoder draws nearly the same flat image for every embedding)."""
    rng = np.random.default_rng(seed)
    for v in generator.weights:
        shape = tuple(v.shape)
        if "moving_variance" in v.path:
            value = rng.uniform(0.1, 0.2, shape)
        elif "moving_mean" in v.path:
            value = rng.normal(0, 0.1, shape)
        elif "gamma" in v.path:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            value = rng.normal(0, 1.5 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        v.assign(value.astype("float32"))


def exported_tiny_model(tmp_path_factory):
    """(Built once per process.) A checkpoint directory with flags.cfg, its export
    ``<base>/sf2f_tiny/1`` and the in-process Python model with the same weights."""
    if "model" not in _SHARED:
        root = tmp_path_factory.mktemp("tiny_export")
        models = builder.build_models(builder.ModelConfig(**TINY_CONFIG))
        randomize(models.generator)
        checkpoint_dir = root / "run"
        reference_import.write_tf_checkpoint(models, str(checkpoint_dir), 120)
        (checkpoint_dir / "flags.cfg").write_text(TINY_FLAGS)
        export_dir = root / "models" / "sf2f_tiny"
        exported = savedmodel.export_checkpoint(str(checkpoint_dir), str(export_dir))
        # The export restored its own generator from the checkpoint; the Python model is
        # those serving functions (already traced) on that generator.
        _SHARED["model"] = types.SimpleNamespace(
            root=root, checkpoint_dir=str(checkpoint_dir), export_dir=str(export_dir),
            version_dir=exported.path, generator=exported.module.generator,
            python_model=exported.module, loaded=exported.loaded)
    return _SHARED["model"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(tiny):
    return tiny.loaded  # reloaded by the export's own check


def wav_bytes(samples, rate, subtype="PCM_16", fmt="WAV"):
    """samples: int16-scale floats ([n] or [n, channels])."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, np.float64) / 32768.0, rate, subtype=subtype,
             format=fmt)
    return buffer.getvalue()


def assertion_message(error):
    return error.message.split("assertion failed: [", 1)[1].split("]\n", 1)[0]


# ---------------------------------------------------------------------------------------------
# WAV decoding
# ---------------------------------------------------------------------------------------------

_decode = tf.function(lambda contents: wav.decode_wav(contents, "audio[0]"),
                      input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


@pytest.mark.parametrize("subtype,fmt,channels", [
    ("PCM_U8", "WAV", 1), ("PCM_16", "WAV", 1), ("PCM_24", "WAV", 2), ("PCM_32", "WAV", 1),
    ("FLOAT", "WAV", 2), ("DOUBLE", "WAV", 1), ("PCM_16", "WAVEX", 2), ("PCM_24", "WAVEX", 1),
    ("FLOAT", "WAVEX", 1), ("PCM_16", "WAV", 6)])
def test_wav_encodings_decode_to_int16_scale_mono(subtype, fmt, channels):
    rng = np.random.default_rng(channels)
    x = rng.uniform(-30000, 30000, size=(777, channels))
    data = wav_bytes(x, 22050, subtype, fmt)
    samples, rate = _decode(tf.constant(data))
    expected, expected_rate = sf.read(io.BytesIO(data), always_2d=True)
    assert int(rate) == expected_rate == 22050
    np.testing.assert_allclose(samples.numpy(), expected.mean(axis=1) * 32768.0, atol=4e-3)


def test_wav_extra_chunks_odd_sizes_and_streamed_length():
    x = np.arange(-500, 500, dtype=np.float64) * 30
    data = bytearray(wav_bytes(x, 16000))
    # A LIST chunk of odd size (padded to even) between fmt and data.
    data_at = data.index(b"data")
    extra = b"LIST" + (5).to_bytes(4, "little") + b"abcde" + b"\x00"
    patched = data[:data_at] + extra + data[data_at:]
    patched[4:8] = (len(patched) - 8).to_bytes(4, "little")
    samples, _ = _decode(tf.constant(bytes(patched)))
    np.testing.assert_array_equal(samples.numpy(), x)
    # Streaming encoders write 0xFFFFFFFF for an unknown data size: read to the end.
    streamed = bytearray(data)
    streamed[data_at + 4:data_at + 8] = b"\xff\xff\xff\xff"
    samples, _ = _decode(tf.constant(bytes(streamed)))
    np.testing.assert_array_equal(samples.numpy(), x)
    # A trailing partial sample frame is dropped.
    samples, _ = _decode(tf.constant(bytes(data) + b"\x01"))
    np.testing.assert_array_equal(samples.numpy(), x)


def _bad_wavs():
    good = wav_bytes(np.full(4000, 1000.0), 16000)
    data_at = good.index(b"data")
    bad_align = bytearray(good)
    fmt_at = good.index(b"fmt ")
    bad_align[fmt_at + 8 + 12:fmt_at + 8 + 14] = (3).to_bytes(2, "little")
    twelve_bit = bytearray(good)
    twelve_bit[fmt_at + 8 + 14:fmt_at + 8 + 16] = (12).to_bytes(2, "little")
    no_channels = bytearray(good)
    no_channels[fmt_at + 8 + 2:fmt_at + 8 + 4] = (0).to_bytes(2, "little")
    no_data = bytearray(good[:data_at])
    return [
        (b"", "empty input (0 bytes)"),
        (b"hello, this is not audio at all", "not a WAV file (it does not start with a RIFF"),
        (b"fLaC" + good[4:], "it looks like a FLAC file"),
        (b"ID3\x04" + bytes(100), "it looks like an MP3 file"),
        (b"RIFX" + good[4:], "big-endian RIFX"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "it looks like a PNG image"),
        (good[:20], "fmt chunk is incomplete"),
        (good[:30], "fmt chunk is incomplete"),
        (bytes(no_data), "has no data chunk"),
        (good[:data_at + 8 + 100], "truncated: its data chunk declares 8000 bytes but only 100"),
        (good[:data_at + 8], "truncated: its data chunk declares 8000 bytes but only 0"),
        (bytes(bad_align), "block align 3 does not match 1 channel(s) of 16 bits"),
        (bytes(twelve_bit), "unsupported WAV encoding: 12-bit integer PCM"),
        (bytes(no_channels), "0 channels"),
        (wav_bytes(np.zeros(100), 8000, "ULAW"), "format tag 7 (u-law)"),
        (wav_bytes(np.zeros(100), 8000, "ALAW"), "format tag 6 (A-law)"),
        (wav_bytes(np.zeros(100), 8000, "IMA_ADPCM"), "format tag 17 (IMA ADPCM)"),
        (wav_bytes(np.zeros(100), 8000, "MS_ADPCM"), "format tag 2 (Microsoft ADPCM)"),
        (wav_bytes(np.zeros(0), 16000), "holds no samples"),
    ]


@pytest.mark.parametrize("data,message", _bad_wavs())
def test_bad_wav_is_refused_with_a_clear_message(data, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _decode(tf.constant(data))
    text = assertion_message(info.value)
    assert text.startswith("audio[0]: ") and message in text, text


def test_inspect_wav_agrees_with_the_graph():
    """The client and the development server decide in Python which files go to the graph
    unchanged: a file is OK for inspect_wav exactly when the graph decodes it."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-3000, 3000, size=(500, 2))
    good = [wav_bytes(x[:, :c], rate, subtype, fmt)
            for subtype, fmt, c, rate in [
                ("PCM_U8", "WAV", 1, 8000), ("PCM_16", "WAV", 1, 16000),
                ("PCM_24", "WAV", 2, 24000), ("PCM_32", "WAV", 1, 32000),
                ("FLOAT", "WAV", 2, 11025), ("DOUBLE", "WAV", 1, 96000),
                ("PCM_16", "WAVEX", 2, 44100), ("FLOAT", "WAVEX", 1, 88200)]]
    for data in good:
        assert audio_formats.inspect_wav(data).verdict == audio_formats.OK
        _decode(tf.constant(data))
    refused = [data for data, _ in _bad_wavs()] + [
        wav_bytes(x[:, :1], 7000), wav_bytes(x[:, :1], 16000, "PCM_16", "RF64"),
        wav_bytes(x[:, :1], 16000, "PCM_16", "FLAC")]
    def decode_and_check_rate(contents):
        samples, rate = wav.decode_wav(contents)
        with tf.control_dependencies([wav.assert_that(tf.reduce_any(tf.equal(
                rate, resample.SUPPORTED_RATES)), "unsupported rate")]):
            return tf.identity(samples)

    rate_check = tf.function(decode_and_check_rate, autograph=False)
    for data in refused:
        verdict = audio_formats.inspect_wav(data)
        assert verdict.verdict != audio_formats.OK, data[:40]
        with pytest.raises(tf.errors.InvalidArgumentError):
            rate_check(tf.constant(data))
    assert audio_formats.inspect_wav(wav_bytes(x[:, :1], 7000)) == (
        audio_formats.CONVERT, "sample rate 7000 Hz", 7000)
    assert audio_formats.inspect_wav(wav_bytes(x[:, :1], 8000, "ULAW")).detail == "encoding u-law"
    assert audio_formats.inspect_wav(_bad_wavs()[0][0]).verdict == audio_formats.BROKEN


def test_random_bytes_never_crash_the_parser():
    rng = np.random.default_rng(7)
    good = wav_bytes(np.full(400, 1000.0), 16000)
    for k in range(40):
        if k % 2:
            data = rng.bytes(int(rng.integers(0, 300)))
        else:  # a RIFF/WAVE header with random chunks after it
            data = good[:12] + rng.bytes(int(rng.integers(0, 200)))
        try:
            _decode(tf.constant(data))
        except tf.errors.InvalidArgumentError as e:
            assert assertion_message(e).startswith("audio[0]: ")


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [r for r in resample.SUPPORTED_RATES if r != 16000])
def test_resampled_sine_matches_the_analytic_sine(rate):
    t = np.arange(rate) / rate
    for freq in (440.0, 1000.0, 3000.0):
        x = 10000 * np.sin(2 * np.pi * freq * t)
        y = resample.resample(tf.constant(x, tf.float32), rate).numpy()
        assert len(y) == int(np.ceil(len(x) * 16000 / rate))
        ref = 10000 * np.sin(2 * np.pi * freq * np.arange(len(y)) / 16000)
        middle = slice(len(y) // 8, -len(y) // 8)  # away from the zero-padded ends
        error_db = 20 * np.log10(np.sqrt(np.mean((y[middle] - ref[middle]) ** 2)) / 7071.0)
        assert error_db < -80, (rate, freq, error_db)


@pytest.mark.parametrize("rate", [r for r in resample.SUPPORTED_RATES if r > 16000])
def test_tones_above_8khz_are_removed_not_aliased(rate):
    t = np.arange(rate) / rate
    freqs = [9000.0] + [f for f in (12000.0, 20000.0, 40000.0) if f < 0.48 * rate]
    for freq in freqs:
        y = resample.resample(tf.constant(10000 * np.sin(2 * np.pi * freq * t), tf.float32),
                              rate).numpy()
        level_db = 20 * np.log10(np.sqrt(np.mean(y[len(y) // 8:-len(y) // 8] ** 2)) / 7071.0)
        assert level_db < -70, (freq, level_db)


def test_resampler_runs_no_convolution():
    # With oneDNN, graph-mode Conv2D aborted the process (MklConvOp "Check failed: dtype() ==
    # expected_dtype") when a minute of 88.2 kHz audio followed a minute of 44.1 kHz audio:
    # the resampler is a reshape, a concat and one MatMul per rate.
    fn = tf.function(resample.resample_to, autograph=False).get_concrete_function(
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32))
    ops = {op.type for op in fn.graph.get_operations()}
    for f in fn.graph._functions.values():
        ops |= {node.op for node in f.definition.node_def}
    assert "MatMul" in ops and not {o for o in ops if "Conv" in o}, sorted(ops)


def test_every_common_rate_is_supported():
    assert set(resample.SUPPORTED_RATES) == {8000, 11025, 12000, 16000, 22050, 24000, 32000,
                                             44100, 48000, 88200, 96000}


def test_resample_to_switches_on_the_run_time_rate():
    fn = tf.function(resample.resample_to, autograph=False)
    x = tf.constant(np.random.default_rng(0).normal(size=4410).astype(np.float32))
    np.testing.assert_array_equal(fn(x, tf.constant(16000)).numpy(), x.numpy())
    for rate in (44100, 11025, 24000, 32000, 96000):
        np.testing.assert_allclose(fn(x, tf.constant(rate)).numpy(),
                                   resample.resample(x, rate).numpy(), rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The serving graph against an eager re-implementation
# ---------------------------------------------------------------------------------------------

def eager_face(generator, samples_16k, max_windows=20, fuser=True):
    """The evaluation's fuser protocol, step by step in eager mode."""
    speech = energy_gate(samples_16k.astype(np.float32), 16000)
    feats = features.normalize_log_mel(features.log_mel_filterbank(speech, 16000)).numpy()
    count = min(len(feats) // 125, max_windows)
    windows = feats[:count * 125].reshape(1, count, 125, 40)
    encoder = generator.encoder
    unit = encoder.embed(tf.constant(windows[0]), training=False)[None]
    fused = encoder.fuser(unit) if fuser else tf.reduce_mean(unit, axis=1)
    embedding = l2_normalize(fused)
    image = generator.decoder(embedding, training=False)
    image = image[-1] if isinstance(image, (list, tuple)) else image
    return normalized_to_unit(image).numpy()[0], embedding.numpy()[0], count


def test_serving_default_equals_the_eager_pipeline(tiny, speech_like):
    model = tiny.python_model
    x16 = speech_like(1, 4.0)
    x44 = speech_like(2, 3.0, sample_rate=44100)
    x24 = speech_like(8, 2.6, sample_rate=24000)
    batch = [wav_bytes(x16, 16000), wav_bytes(np.stack([x44, x44 * 0.5], 1), 44100, "PCM_24"),
             wav_bytes(x24, 24000)]
    out = model.serving_default(tf.constant(batch))
    images = out["image"].numpy()
    assert images.shape == (3, 128, 128, 3)
    expected24, _, count24 = eager_face(
        tiny.generator, resample.resample(tf.constant(x24, tf.float32), 24000).numpy())
    assert count24 == 2
    np.testing.assert_allclose(images[2], expected24, atol=2e-3)
    expected16, _, count16 = eager_face(tiny.generator, x16)
    resampled = resample.resample(tf.constant(x44 * 0.75, tf.float32), 44100).numpy()
    expected44, _, count44 = eager_face(tiny.generator, resampled)
    assert count16 == 3 and count44 == 2
    # Graph vs eager float32 rounding, amplified by the randomised weights: ~3e-4 at most.
    np.testing.assert_allclose(images[0], expected16, atol=2e-3)
    np.testing.assert_allclose(images[1], expected44, atol=2e-3)
    png = tf.io.decode_png(out["image_png_bytes"][0]).numpy()
    np.testing.assert_array_equal(png, unit_to_uint8_np(images[0]))
    assert images.std(axis=0).mean() > 0.02  # the two voices give different faces


def test_predict_waveform_and_predict_mel_agree(tiny, speech_like):
    model = tiny.python_model
    x = speech_like(3, 3.0)
    short = np.concatenate([x[:len(x) * 2 // 3], np.zeros(len(x) - len(x) * 2 // 3)])
    out = model.predict_waveform(tf.constant(np.stack([x, short]), tf.float32),
                                 tf.constant(16000))
    image, embedding, count = eager_face(tiny.generator, x)
    np.testing.assert_allclose(out["image"].numpy()[0], image, atol=2e-3)
    np.testing.assert_allclose(out["embedding"].numpy()[0], embedding, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, atol=1e-5)
    # The zero-padded row equals that row alone; so does a row padded with its first sample,
    # as TF-Serving's batching pads.
    alone = model.predict_waveform(tf.constant(short[None, :len(x) * 2 // 3], tf.float32),
                                   tf.constant([16000]))
    np.testing.assert_allclose(alone["embedding"][0], out["embedding"][1], atol=1e-5)
    row = np.concatenate([[300.0], short[:len(x) * 2 // 3]])
    padded = np.stack([np.concatenate([row, np.full(20000, 300.0)]),
                       np.concatenate([row, np.full(20000, 0.0)])])
    embeddings = model.predict_waveform(tf.constant(padded, tf.float32),
                                        tf.constant(16000))["embedding"]
    unpadded = model.predict_waveform(tf.constant(row[None], tf.float32),
                                      tf.constant(16000))["embedding"][0]
    np.testing.assert_allclose(embeddings[0], unpadded, atol=1e-5)
    np.testing.assert_allclose(embeddings[1], unpadded, atol=2e-3)  # + gate context
    # predict_mel on the same windows; constant segments (zeros, or the first value as
    # TF-Serving pads) are padding.
    speech = energy_gate(x.astype(np.float32), 16000)
    feats = features.normalize_log_mel(features.log_mel_filterbank(speech, 16000)).numpy()
    windows = feats[:count * 125].reshape(1, count, 125, 40)
    mel = model.predict_mel(tf.constant(windows))
    np.testing.assert_allclose(mel["embedding"][0], embedding, atol=1e-5)
    padded = np.concatenate([windows, np.zeros((1, 2, 125, 40), np.float32)], 1)
    padded = np.concatenate([padded, np.concatenate(
        [windows[:, :1], np.full((1, count + 1, 125, 40), windows[0, 0, 0, 0])], 1)], 0)
    both = model.predict_mel(tf.constant(padded))
    np.testing.assert_allclose(both["embedding"][0], embedding, atol=1e-5)
    np.testing.assert_allclose(both["embedding"][1], model.predict_mel(
        tf.constant(windows[:, :1]))["embedding"][0], atol=1e-5)


def test_stage1_model_averages_and_renormalises(speech_like):
    config = dict(TINY_CONFIG, fuser="none", decoder="upconv_64", image_size=64)
    generator = builder.build_generator(builder.ModelConfig(**config))
    randomize(generator, seed=3)
    model = FaceFromVoice(generator, ServingConfig(max_windows=2))
    x = speech_like(4, 4.0)
    image, embedding, count = eager_face(generator, x, max_windows=2, fuser=False)
    assert count == 2
    speech = energy_gate(x.astype(np.float32), 16000)
    feats = features.normalize_log_mel(features.log_mel_filterbank(speech, 16000)).numpy()
    out = model.predict_mel(tf.constant(feats[:250].reshape(1, 2, 125, 40)))
    np.testing.assert_allclose(out["embedding"][0], embedding, atol=1e-5)
    np.testing.assert_allclose(out["image"][0], image, atol=2e-3)
    # The generator's own call averages without re-normalising (the reference's evaluation
    # mode); the export re-normalises that mean.
    windows = np.random.default_rng(1).normal(size=(1, 3, 125, 40)).astype(np.float32)
    _, mean = generator(tf.constant(windows), training=False)
    assert np.linalg.norm(mean[0]) < 0.99
    exported = model.predict_mel(tf.constant(windows))["embedding"][0]
    np.testing.assert_allclose(exported, mean[0] / np.linalg.norm(mean[0]), atol=1e-5)


def test_baseline_noise_is_left_out_of_the_served_graph():
    config = builder.ModelConfig(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
                                 encoder_add_noise=True, decoder="deconv_64",
                                 deconv_decoder_channels=(8, 8, 8, 8, 8))
    generator = builder.build_generator(config)
    model = FaceFromVoice(generator)
    windows = tf.constant(np.random.default_rng(2).normal(size=(1, 2, 125, 40)), tf.float32)
    first, second = (model.predict_mel(windows)["embedding"] for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert model.predict_mel(windows)["image"].shape == (1, 64, 64, 3)
    assert generator.encoder.noise_at_inference  # the model itself is unchanged
    _, noisy = generator(windows[:, 0], training=False)
    _, noisy_again = generator(windows[:, 0], training=False)
    assert np.abs(noisy - noisy_again).max() > 1e-4


def _serving_error(model, audio):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        model.serving_default(tf.constant(audio, tf.string))
    return assertion_message(info.value)


def test_audio_checks_name_the_problem(tiny, speech_like):
    model = tiny.python_model
    good = wav_bytes(speech_like(5, 2.0), 16000)
    nan = np.full(40000, 0.1, np.float32)
    nan[1000] = np.nan
    inf = np.full(40000, 0.1, np.float32)
    inf[5] = np.inf
    buffer = io.BytesIO()
    sf.write(buffer, nan, 16000, subtype="FLOAT", format="WAV")
    nan_wav = buffer.getvalue()
    buffer = io.BytesIO()
    sf.write(buffer, inf, 16000, subtype="FLOAT", format="WAV")
    cases = [
        (wav_bytes(speech_like(5, 2.0, sample_rate=7000), 7000),
         "unsupported sample rate 7000 Hz; supported: 8000, 11025, 12000, 16000, 22050, 24000, "
         "32000, 44100, 48000, 88200, 96000 Hz"),
        (wav_bytes(np.tile(speech_like(6, 1.0, sample_rate=8000), 61), 8000),
         "the audio is 61.00 s long; the maximum is 60 s"),
        (wav_bytes(speech_like(5, 1.1), 16000), "too short: 1.10 s of speech after silence "
         "removal; at least 1.265 s are needed (125 feature frames of 25 ms every 10 ms)"),
        # WAV advice, not the int16-scale hint meant for predict_waveform's float samples.
        (wav_bytes(np.zeros(48000), 16000), "no speech found: the audio is silent or too quiet "
         "(nothing is left after silence removal by the energy gate) (every sample is 0: the "
         "file holds digital silence)"),
        (wav_bytes(np.where(np.arange(48000) % 7, 0.0, 1.0), 16000), "(the loudest sample is "
         "at -90.3 dBFS; the energy gate keeps only stretches of at least 90 ms whose 30 ms "
         "frames are louder than -75 dBFS: check the recording level, or normalise the file"),
        (wav_bytes(np.concatenate([np.zeros(30000), speech_like(5, 0.8), np.zeros(30000)]),
                   16000), "too short"),
        (nan_wav, "contains NaN or infinite samples"),
        (buffer.getvalue(), "contains NaN or infinite samples"),
    ]
    for data, message in cases:
        text = _serving_error(model, [good, data])
        assert text.startswith("audio[1]: ") and message in text, (message, text)
        assert "int16 scale" not in text
    assert _serving_error(model, []).startswith("empty batch")


def test_waveform_and_mel_checks(tiny, speech_like):
    model = tiny.python_model
    x = speech_like(7, 2.0)[None].astype(np.float32)

    def error(fn, *args):
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            fn(*[tf.constant(a) for a in args])
        return assertion_message(info.value)

    assert "waveforms must be on the int16 scale" in error(model.predict_waveform,
                                                           x / 32768, 16000)
    assert "(the loudest sample is at -90.2 dBFS of the int16 scale; the energy gate" in error(
        model.predict_waveform,
        np.where(np.arange(40000) % 5 == 2, 1.01, 0.0)[None].astype(np.float32), 16000)
    bad = x.copy()
    bad[0, 3] = np.nan
    assert "waveform[0]: contains NaN" in error(model.predict_waveform, bad, 16000)
    assert "unsupported sample rate 44000" in error(model.predict_waveform, x, 44000)
    noise = np.random.default_rng(0).normal(size=(1, 49, 125, 40)).astype(np.float32)
    assert "one value per waveform" in error(model.predict_waveform, x, [16000, 16000])
    assert "log_mel[1] has no segment with data" in error(
        model.predict_mel, np.stack([noise[0, :1], np.full((1, 125, 40), 0.7, np.float32)]))
    bad_mel = noise[:, :1].copy()
    bad_mel[0, 0, 3, 3] = np.inf
    assert "NaN or infinite" in error(model.predict_mel, bad_mel)
    assert "holds 6125 frames; the maximum is 5999" in error(model.predict_mel, noise)


# ---------------------------------------------------------------------------------------------
# The exported SavedModel
# ---------------------------------------------------------------------------------------------

def test_export_layout_metadata_and_warmup(tiny, loaded):
    assert tiny.version_dir == os.path.join(tiny.export_dir, "1")
    assert sorted(os.listdir(tiny.export_dir)) == ["1"]  # the temporary directory is gone
    meta = json.load(open(os.path.join(tiny.version_dir, "assets.extra", "sf2f_export.json")))
    assert "energy gate" in meta["audio_pipeline"]["voice_activity"]
    assert "NOT the webrtcvad" in meta["audio_pipeline"]["voice_activity"]
    assert meta["model_config"]["fuser"] == "attention"
    assert meta["checkpoint"].endswith("ckpt-120")
    assert meta["verified_warmup_outputs"]["serving_default"]["image"] == [1, 128, 128, 3]
    logs = savedmodel.read_warmup_file(tiny.version_dir)
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == \
        ["serving_default", "predict_waveform", "predict_mel"]
    assert {log.predict_log.request.model_spec.name for log in logs} == {"sf2f_tiny"}
    for log in logs:
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert outputs["image"].shape == (1, 128, 128, 3)


def test_saved_model_matches_the_python_model(tiny, loaded, speech_like):
    audio = tf.constant([wav_bytes(speech_like(8, 2.5, sample_rate=48000), 48000, "FLOAT")])
    expected = tiny.python_model.serving_default(audio)
    got = loaded.signatures["serving_default"](audio=audio)
    np.testing.assert_allclose(got["image"], expected["image"], atol=1e-3)
    assert set(loaded.signatures) >= {"serving_default", "predict_waveform", "predict_mel"}


def test_saved_model_cli_run_matches_python(tiny, tmp_path, speech_like):
    """``saved_model_cli run`` restores the variables as TF-Serving's C++ loader does (a
    SavedModel that only works after tf.saved_model.load in Python fails here)."""
    model = tiny.python_model
    audio = np.array([wav_bytes(speech_like(9, 2.0, sample_rate=22050), 22050, "PCM_U8"),
                      wav_bytes(speech_like(10, 3.0), 16000)], dtype=object)
    np.save(tmp_path / "audio.npy", audio, allow_pickle=True)
    result = subprocess.run(
        [os.path.join(BIN, "saved_model_cli"), "run", "--dir", tiny.version_dir, "--tag_set",
         "serve", "--signature_def", "serving_default", "--inputs",
         f"audio={tmp_path / 'audio.npy'}", "--outdir", str(tmp_path / "out"), "--overwrite"],
        capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = model.serving_default(tf.constant(list(audio), tf.string))
    images = np.load(tmp_path / "out" / "image.npy")
    np.testing.assert_allclose(images, expected["image"], atol=1e-3)
    for png, image in zip(np.load(tmp_path / "out" / "image_png_bytes.npy", allow_pickle=True),
                          expected["image"].numpy()):
        pixels = tf.io.decode_png(png).numpy().astype(int)
        assert np.abs(pixels - np.round(image * 255)).max() <= 1


_FRESH_TF_SCRIPT = """
import contextlib, io, json, sys
import tensorflow as tf
from tensorflow.python.framework import op_def_registry
from tensorflow.python.saved_model import loader_impl
from tensorflow.python.tools import saved_model_cli

path = sys.argv[1]
proto = loader_impl.parse_saved_model(path)
functions = {f.signature.name for mg in proto.meta_graphs for f in mg.graph_def.library.function}
ops = set()
for mg in proto.meta_graphs:
    ops.update(n.op for n in mg.graph_def.node)
    for f in mg.graph_def.library.function:
        ops.update(n.op for n in f.node_def)
ops -= functions
# `saved_model_cli show --all --dir PATH`: the console script's own entry point.
sys.argv = ["saved_model_cli", "show", "--all", "--dir", path]
shown = io.StringIO()
with contextlib.redirect_stdout(shown):
    try:
        saved_model_cli.main()
    except SystemExit as e:
        assert not e.code, e.code
print(json.dumps({
    "tensorflow_io_loaded": sorted(m for m in sys.modules if "tensorflow_io" in m),
    "unregistered": sorted(o for o in ops if op_def_registry.get(o) is None),
    "count": len(ops), "show": shown.getvalue()}))
"""


def test_only_stock_ops_and_saved_model_cli_show(tiny):
    """In a fresh, plain TensorFlow process (no tensorflow-io, no custom op library): every op
    of every function graph of the SavedModel is registered, and ``saved_model_cli show
    --all`` lists the three predict signatures."""
    assert {"DecodeRaw", "RFFT", "EncodePng"} <= savedmodel.op_types(tiny.version_dir)
    assert savedmodel.unregistered_ops(tiny.version_dir) == []
    result = subprocess.run([sys.executable, "-c", _FRESH_TF_SCRIPT, tiny.version_dir],
                            capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tensorflow_io_loaded"] == []
    assert report["unregistered"] == []
    assert report["count"] > 50
    text = report["show"]
    for signature in ("serving_default", "predict_waveform", "predict_mel"):
        assert f"signature_def['{signature}']" in text
    assert text.count("Method name is: tensorflow/serving/predict") == 3
    for name in ("inputs['audio']", "outputs['image_png_bytes']", "inputs['sample_rate']",
                 "inputs['waveform']", "inputs['log_mel']", "outputs['embedding']"):
        assert name in text


def test_no_xla_in_the_savedmodel(tiny, tmp_path):
    """No function of the export asks for XLA (TF-Serving's XLA:CPU is off by default and
    would fail those requests); the check itself does see a ``jit_compile`` function."""
    assert savedmodel.xla_compiled_functions(tiny.version_dir) == []
    module = tf.Module()
    module.f = tf.function(lambda x: 2.0 * x, jit_compile=True,
                           input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "xla"),
                        signatures=module.f.get_concrete_function())
    assert savedmodel.xla_compiled_functions(str(tmp_path / "xla"))


@pytest.mark.parametrize("seconds,max_windows", [(1.3, 20), (3.0, 20), (3.0, 1), (5.5, 20)])
def test_python_waveform_to_face_function(seconds, max_windows, speech_like):
    """``waveform_to_face_function`` (the benchmark's Keras graph path): features and
    generator compiled by XLA give the plain graph's faces and embeddings (float rounding
    only), and feeding only the samples the windows use gives the result of the features of
    the whole waveform (to the last bit with Eigen's kernels; oneDNN's AVX2 kernels block
    the shorter input's products differently: one unit in the last place, ~6e-8). So do the
    windows encoded in groups (the 4 windows as 2 + 2 and as 2 + 1 + 1): each group's first
    window sees exactly the samples it sees in the whole waveform."""
    from keras_sf2f.serving.inference import waveform_to_face_function  # noqa: PLC0415
    generator = builder.build_generator(builder.ModelConfig(**TINY_CONFIG))
    # Random encoder and fuser (different voices, different embeddings); the decoder keeps its
    # initialisation: randomize()'s BatchNorm statistics amplify any float rounding ~1e5x
    # (eager vs graph execution alone differ by ~5e-3 on its faces), which would test that
    # amplification rather than the compiled path.
    randomize(generator.encoder, seed=3)
    samples = np.clip(np.rint(speech_like(seed=4, seconds=seconds)), -32768, 32767)
    waveform = tf.constant(samples.astype(np.int16))
    # Reference: features of the whole waveform, windows, the uncompiled generator, in one
    # graph (eager execution rounds differently from graphs with oneDNN's fusions, and the
    # randomised tiny model amplifies rounding: ~5e-3 between eager and graph).
    @tf.function(autograph=False)
    def reference(waveform):
        mel = features.normalize_log_mel(features.log_mel_filterbank(waveform, 16000))
        count = tf.minimum(tf.shape(mel)[0] // 125, max_windows)
        images, embedding = generator(tf.reshape(mel[:count * 125], [1, count, 125, 40]),
                                      training=False)
        return images[-1], embedding

    expected = [t.numpy() for t in reference(waveform)]
    plain = waveform_to_face_function(generator, max_windows=max_windows, jit_compile=False)
    compiled = waveform_to_face_function(generator, max_windows=max_windows)
    # Groups on the 4-window clip only (each function compiles anew: seconds per case).
    grouped = [(waveform_to_face_function(generator, max_windows=max_windows, jit_compile=xla,
                                          window_groups=groups, min_group_windows=1), atol)
               for xla, groups, atol in ((False, 2, 1e-6), (True, 2, 1e-5), (True, 3, 1e-5))
               if seconds > 5]
    for fn, atol in [(plain, 1e-6), (compiled, 1e-5)] + grouped:
        image, emb = fn(waveform)
        assert image.shape == expected[0].shape and emb.shape == expected[1].shape
        np.testing.assert_allclose(image.numpy(), expected[0], rtol=0, atol=atol)
        np.testing.assert_allclose(emb.numpy(), expected[1], rtol=0, atol=atol)
    graph = compiled.get_concrete_function(tf.TensorSpec([None], tf.int16)).graph
    assert savedmodel.xla_marked(graph.as_graph_def())        # runs under XLA
    graph = plain.get_concrete_function(tf.TensorSpec([None], tf.int16)).graph
    assert savedmodel.xla_marked(graph.as_graph_def()) == []


# ---------------------------------------------------------------------------------------------
# Export command: configuration, checkpoints, versions
# ---------------------------------------------------------------------------------------------

def test_model_config_from_flagfile(tmp_path):
    (tmp_path / "base.cfg").write_text("--encoder_channels=4,4,4,4\n--encoder_add_noise\n"
                                       "--decoder=deconv_64\n# comment\n--learning_rate=3\n")
    (tmp_path / "flags.cfg").write_text("--flagfile=base.cfg\n--embedding_dim=64\n"
                                        "--noencoder_add_noise\n--image_discriminator_arch_64=\n")
    config = savedmodel.model_config_from_flagfile(str(tmp_path / "flags.cfg"))
    assert config.encoder_channels == (4, 4, 4, 4) and config.embedding_dim == 64
    assert config.decoder == "deconv_64" and config.encoder_add_noise is False
    assert config.image_discriminator_arch_64 == ""
    (tmp_path / "bad.cfg").write_text("--decoder=upconv_multires\n--image_size=64\n")
    with pytest.raises(runs.RunError, match="image_size=64 does not match"):
        savedmodel.model_config_from_flagfile(str(tmp_path / "bad.cfg"))


def test_flags_file_lookup(tmp_path):
    (tmp_path / "best_l1").mkdir()
    assert runs.find_flags_file(str(tmp_path)) is None
    (tmp_path / "flags.cfg").write_text("")
    assert runs.find_flags_file(str(tmp_path / "best_l1")) == str(tmp_path / "flags.cfg")
    assert runs.find_flags_file(str(tmp_path)) == str(tmp_path / "flags.cfg")
    (tmp_path / "best_l1" / "flags.cfg").write_text("")
    assert runs.find_flags_file(str(tmp_path / "best_l1")) == str(
        tmp_path / "best_l1" / "flags.cfg")


def test_missing_checkpoint_and_mismatched_config_are_clear_errors(tiny, tmp_path):
    with pytest.raises(runs.RunError, match="no checkpoint in"):
        savedmodel.export_checkpoint(str(tmp_path), str(tmp_path / "m"))
    with pytest.raises(runs.RunError, match="neither a directory nor a checkpoint"):
        runs.find_checkpoint(str(tmp_path / "nothing"))
    prefix = runs.find_checkpoint(tiny.checkpoint_dir)
    other = builder.ModelConfig(**dict(TINY_CONFIG, encoder_channels=(4, 4, 4, 4)))
    with pytest.raises(runs.RunError, match="does not match the model configuration"):
        runs.restore_generator(other, prefix)
    # The checkpoint's fuser is not silently dropped: a model without one does not match it.
    no_fuser = builder.ModelConfig(**dict(TINY_CONFIG, fuser="none"))
    with pytest.raises(runs.RunError, match="generator/encoder/fuser/"):
        runs.restore_generator(no_fuser, prefix)
    with_noise_less_dir = tmp_path / "run"
    with_noise_less_dir.mkdir()
    for name in os.listdir(tiny.checkpoint_dir):
        if name != "flags.cfg":
            os.symlink(os.path.join(tiny.checkpoint_dir, name), with_noise_less_dir / name)
    with pytest.raises(runs.RunError, match="has no flags.cfg"):
        savedmodel.export_checkpoint(str(with_noise_less_dir), str(tmp_path / "m"))


def test_versions_are_never_overwritten(tmp_path):
    base = tmp_path / "models" / "name"
    base.mkdir(parents=True)
    assert savedmodel.next_version(str(base)) == 1
    for version in ("1", "7", "not_a_version", ".tmp-export-x"):
        (base / version).mkdir()
    assert savedmodel.existing_versions(str(base)) == [1, 7]
    assert savedmodel.next_version(str(base)) == 8
    (base / "7" / "saved_model.pb").write_text("old")

    def staged(text):
        tmp = tmp_path / f"staged_{text}"
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text(text)
        return str(tmp)

    assert savedmodel._publish(staged("a"), str(base), None) == str(base / "8")
    with pytest.raises(savedmodel.ExportError, match="never overwritten"):
        savedmodel._publish(staged("b"), str(base), 7)
    assert (base / "7" / "saved_model.pb").read_text() == "old"
    assert savedmodel._publish(staged("c"), str(base), 3) == str(base / "3")


def test_export_command_reports_errors_cleanly(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "export", "export_savedmodel.py"),
         f"--checkpoint_dir={tmp_path}", f"--export_dir={tmp_path / 'models' / 'm'}"],
        capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 1
    assert "error: no checkpoint in" in result.stderr
    assert "Traceback" not in result.stderr
