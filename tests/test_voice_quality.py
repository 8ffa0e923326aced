"""Voice-quality channels against a NumPy float64 oracle written another way (autocorrelation
by direct sums, frame by frame), and what the channels mean on simple signals."""

import numpy as np
import pytest
import tensorflow as tf

from keras_sf2f.audio import features
from keras_sf2f.audio import voice_quality as vq

RATE = 16000


def oracle(samples: np.ndarray) -> np.ndarray:
    """Unstandardised channels, one frame at a time."""
    x = np.asarray(samples, np.float64) / 32768.0
    count = features.num_frames(len(x), RATE)
    w = np.hanning(vq.WINDOW)
    w_ac = np.array([np.dot(w[:vq.WINDOW - k], w[k:]) for k in range(vq.MAX_LAG)])
    out = np.zeros([count, 4])
    for f in range(count):
        start = f * 160 + 200 - vq.WINDOW // 2      # centred on the log-mel frame's centre
        y = np.zeros(vq.WINDOW)
        lo, hi = max(start, 0), min(start + vq.WINDOW, len(x))
        if hi > lo:
            y[lo - start:hi - start] = x[lo:hi]
        y = y * w
        ac = np.array([np.dot(y[:vq.WINDOW - k], y[k:]) for k in range(vq.MAX_LAG)])
        norm = ac[vq.MIN_LAG:] / (ac[0] + 1e-12) / (w_ac[vq.MIN_LAG:] / w_ac[0])
        best = int(np.argmax(norm)) if norm.max() > vq.UNVOICED else 0
        cep = np.fft.irfft(np.log(np.abs(np.fft.rfft(y, vq.FFT_SIZE)) ** 2 + 1e-10),
                           vq.FFT_SIZE)[vq.MIN_LAG:vq.MAX_LAG]
        out[f] = [np.clip(norm[best], -1, 1.5), cep.max() - cep.mean(),
                  np.log(RATE / (best + vq.MIN_LAG)), np.log(ac[0] + 1e-10)]
    return out


def raw(samples) -> np.ndarray:
    return (vq.voice_quality_channels(samples).numpy().astype(np.float64)
            * np.asarray(vq.CHANNEL_STD) + np.asarray(vq.CHANNEL_MEAN))


def voice(f0: float, seconds: float, jitter: float = 0.0, noise: float = 0.0, seed: int = 0):
    """A glottal-pulse-like train (decaying harmonics) with per-cycle period jitter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    periods = RATE / f0 * (1 + jitter * rng.standard_normal(int(seconds * f0) + 2))
    onsets = np.cumsum(periods)
    x = np.zeros(n)
    t = np.arange(n)
    for onset in onsets[onsets < n]:
        k = int(onset)
        decay = np.exp(-(t[k:] - onset) / 20.0)[:400]
        x[k:k + len(decay)] += decay * np.cos(2 * np.pi * 700 * (t[k:k + len(decay)]
                                                                 - onset) / RATE)
    x += noise * rng.standard_normal(n)
    return np.round(8000 * x / np.abs(x).max()).astype(np.int16)


@pytest.mark.parametrize("length", [0, 1, 399, 400, 401, 1234, 16000])
def test_matches_oracle_and_log_mel_frames(length):
    rng = np.random.default_rng(length)
    x = (rng.standard_normal(length) * 3000).astype(np.int16)
    got = raw(x)
    assert got.shape == (features.num_frames(length, RATE), 4)
    assert got.shape[0] == features.log_mel_filterbank(x, RATE).shape[0]
    want = oracle(x)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(initial=1))


def test_speech_like_signal_matches_oracle():
    x = voice(140.0, 0.6, jitter=0.01, noise=0.05)
    got, want = raw(x), oracle(x)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_channels_read_pitch_and_regularity():
    steady = raw(voice(125.0, 1.0))[10:-10]
    rough = raw(voice(125.0, 1.0, jitter=0.04, noise=0.3, seed=1))[10:-10]
    # Pitch: log(125 Hz) on the steady voice's frames.
    assert np.median(np.abs(steady[:, 2] - np.log(125.0))) < 0.03
    # A jittery, noisy voice is less periodic and has a lower cepstral peak.
    assert steady[:, 0].mean() > 0.9
    assert rough[:, 0].mean() < steady[:, 0].mean() - 0.1
    assert rough[:, 1].mean() < steady[:, 1].mean()
    # Silence: no periodicity, the energy floor.
    silent = raw(np.zeros(1600, np.int16))
    np.testing.assert_allclose(silent[:, 0], 0.0, atol=1e-6)  # float32 output
    np.testing.assert_allclose(silent[:, 3], np.log(1e-10), atol=1e-5)


def test_runs_in_a_graph_with_unknown_length():
    fn = tf.function(vq.voice_quality_channels,
                     input_signature=[tf.TensorSpec([None], tf.float32)])
    x = voice(200.0, 0.5).astype(np.float32)
    np.testing.assert_allclose(fn(x).numpy(), vq.voice_quality_channels(x).numpy(), atol=1e-6)
    assert fn(np.zeros(0, np.float32)).shape == (0, 4)


# -- through the pipeline: records, tables, evaluation, the served graph ---------------------

@pytest.fixture(scope="module")
def corpus_with_quality(tmp_path_factory):
    from keras_sf2f.data import prepare
    from keras_sf2f.data.corpus import CorpusSpec

    root = tmp_path_factory.mktemp("vq")
    spec = CorpusSpec(seed=3, num_identities=10, utterances_per_identity=2,
                      images_per_identity=1)
    plain = prepare.prepare_procedural(str(root / "plain"), spec, num_workers=1, preview=False)
    quality = prepare.prepare_procedural(str(root / "quality"), spec, num_workers=1,
                                         preview=False, voice_quality_channels=True)
    return str(root), plain, quality


def test_records_and_tables_carry_the_channels(corpus_with_quality):
    from keras_sf2f.data import table
    from keras_sf2f.data.procedural import identity_name, utterance_speech

    root, plain, quality = corpus_with_quality
    assert plain["voice_quality_channels"] == []
    assert quality["voice_quality_channels"] == list(vq.CHANNELS)
    mels = table.load_split(f"{root}/quality", "train")
    both = table.load_split(f"{root}/quality", "train", voice_quality=True)
    reference = table.load_split(f"{root}/plain", "train")
    assert (mels.channels, both.channels, reference.channels) == (40, 44, 40)
    np.testing.assert_array_equal(both.frames.numpy()[:, :40], reference.frames.numpy())
    np.testing.assert_array_equal(mels.frames.numpy(), reference.frames.numpy())
    # The stored channels are those of the utterance's samples (float16 in the records).
    first = both.utterance_ids[0]
    assert first.startswith(identity_name(0))
    samples = utterance_speech(3, 0, int(first.rsplit("u", 1)[1]), 16000)
    want = vq.voice_quality_channels(samples).numpy()
    got = both.frames.numpy()[:int(both.utt_length[0]), 40:].astype(np.float32)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())
    with pytest.raises(table.DataError, match="--voice_quality_channels"):
        table.load_split(f"{root}/plain", "train", voice_quality=True)


def _tiny_config(**overrides):
    from keras_sf2f.models import builder
    return builder.ModelConfig(**dict(
        encoder_channels=(8, 8, 8, 8), embedding_dim=16, fuser="none", decoder="upconv_64",
        image_size=64, image_discriminator_arch_64="", identity_classifier_arch_64="",
        num_train_identities=8, **overrides)).validate()


def test_model_config_and_encoder_say_what_they_take():
    from keras_sf2f.models import builder

    config = _tiny_config(voice_quality_channels=True)
    assert config.input_channels == 44 and _tiny_config().input_channels == 40
    generator = builder.build_generator(config)
    encoder = generator.encoder
    assert (encoder.input_channels, encoder.voice_quality_channels) == (44, 4)
    assert type(encoder).from_config(encoder.get_config()).voice_quality_channels == 4
    with pytest.raises(ValueError, match="value 44"):
        generator(tf.zeros([1, 125, 40]))


def test_evaluation_gives_each_model_its_channels(corpus_with_quality):
    from keras_sf2f.evaluation import evaluate as ev
    from keras_sf2f.models import builder

    root, _, _ = corpus_with_quality
    config = ev.EvaluationConfig(data_dir=f"{root}/quality", split="train", durations=(1.25,),
                                 runs=1, typicality=False, voice_quality=True)
    evaluator = ev.Evaluator(config, [], 64)
    crops = evaluator.crops[1.25][:, 0]
    assert crops.shape[-1] == 44
    with_quality = builder.build_generator(_tiny_config(voice_quality_channels=True))
    log_mel_only = builder.build_generator(_tiny_config())
    faces = ev.FaceGenerator(with_quality, 8).from_crops(crops)
    want, _ = with_quality(tf.constant(crops), training=False)
    np.testing.assert_allclose(faces, want[-1].numpy(), atol=1e-5)
    # A log-mel model beside it reads the first 40 channels.
    faces = ev.FaceGenerator(log_mel_only, 8).from_crops(crops)
    want, _ = log_mel_only(tf.constant(crops[..., :40]), training=False)
    np.testing.assert_allclose(faces, want[-1].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="--voice_quality_channels"):
        ev.FaceGenerator(with_quality, 8).from_crops(crops[..., :40])


def test_served_graph_computes_the_channels(speech_like):
    from keras_sf2f.audio.vad import energy_gate
    from keras_sf2f.models import builder
    from keras_sf2f.serving.inference import FaceFromVoice, ServingConfig

    generator = builder.build_generator(_tiny_config(voice_quality_channels=True))
    model = FaceFromVoice(generator, ServingConfig(max_windows=2))
    assert model.metadata()["audio_pipeline"]["features"].count("voice-quality") == 1
    x = speech_like(5, 4.0)
    out = model.predict_waveform(tf.constant(x[None], tf.float32), tf.constant(16000))
    speech = energy_gate(x.astype(np.float32), 16000)
    mel = features.normalize_log_mel(features.log_mel_filterbank(speech, 16000)).numpy()
    # The records' channels come from whole utterances: so do these.
    feats = np.concatenate([mel, vq.voice_quality_channels(speech).numpy()], axis=1)
    windows = feats[:250].reshape(1, 2, 125, 44)
    want = model.predict_mel(tf.constant(windows))
    np.testing.assert_allclose(out["embedding"], want["embedding"], atol=1e-5)
    # The Python waveform path (benchmarks) computes the same features.
    from keras_sf2f.serving.inference import waveform_to_face_function
    _, embedding = waveform_to_face_function(generator, 16000, max_windows=2)(
        tf.constant(speech, tf.float32))
    np.testing.assert_allclose(embedding[0] / np.linalg.norm(embedding[0]),
                               want["embedding"][0], atol=1e-5)
    # Also with the two windows encoded as two groups: the second group's channels see the
    # samples before its first frame, as in the whole utterance.
    _, grouped = waveform_to_face_function(generator, 16000, max_windows=2, window_groups=2,
                                           min_group_windows=1)(tf.constant(speech, tf.float32))
    np.testing.assert_allclose(grouped[0] / np.linalg.norm(grouped[0]),
                               want["embedding"][0], atol=1e-5)
    # Without the channels (zeros in their place) the embedding is another one.
    blind = windows.copy()
    blind[..., 40:] = 0.0
    other = model.predict_mel(tf.constant(blind))["embedding"]
    assert np.abs(other - want["embedding"]).max() > 1e-3
