"""Models: build, run, shapes, parameter counts, segment masks, flags/config (the layer-by-layer
round trips are tests/test_layers_harness.py's)."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from keras_sf2f.flags import ToolFlags
from keras_sf2f.models import builder
from keras_sf2f.models.discriminators import parse_activation, parse_discriminator_arch
from keras_sf2f.models.face_decoder import FaceDecoder
from keras_sf2f.models.fuser import AttentionFuser
from keras_sf2f.models.generator import VoiceToFaceGenerator
from keras_sf2f.models.layers import Inception1DBlock
from keras_sf2f.models.voice_encoder import VoiceEncoder

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ToolFlags("describe_model")
ARCH_64 = "C4-64-2,C4-128-2,C4-256-2"
N_ID = 2890

# Parameter counts of the reference modules, counted by hand from the PyTorch code (trainable
# parameters incl. BN gamma/beta), N_id = 2890.
EXPECTED_COUNTS = {
    "sf2f_64": {
        "generator": 16_414_275, "voice_encoder": 4_848_192, "fuser": 0,
        "face_decoder": 11_566_083, "image_discriminator_64": 659_521,
        "identity_classifier_64": 923_457 + 1025 * N_ID},
    "sf2f_64_fuser": {
        "generator": 17_200_707, "voice_encoder": 4_848_192, "fuser": 786_432,
        "face_decoder": 11_566_083, "image_discriminator_64": 659_521,
        "identity_classifier_64": 923_457 + 1025 * N_ID},
    "sf2f_128": {
        "generator": 16_425_926, "voice_encoder": 4_848_192, "fuser": 0,
        "face_decoder": 11_577_734, "image_discriminator_64": 659_521,
        "image_discriminator_128": 2_757_953, "identity_classifier_64": 923_457 + 1025 * N_ID,
        "identity_classifier_128": 3_283_777 + 1025 * N_ID},
    "sf2f_128_fuser": {
        "generator": 17_212_358, "voice_encoder": 4_848_192, "fuser": 786_432,
        "face_decoder": 11_577_734, "image_discriminator_64": 659_521,
        "image_discriminator_128": 2_757_953, "identity_classifier_64": 923_457 + 1025 * N_ID,
        "identity_classifier_128": 3_283_777 + 1025 * N_ID},
    "voice2face_64": {
        "generator": 23_345_859, "voice_encoder": 3_813_952, "fuser": 0,
        "face_decoder": 19_531_907, "identity_classifier_64": 3_312_705 + 1025 * N_ID},
}


def _config_from_flagfile(name):
    FLAGS.unparse_flags()
    try:
        FLAGS(["test", f"--flagfile={os.path.join(REPO_ROOT, 'configs', name + '.cfg')}"])
        return FLAGS.config(builder.ModelConfig)
    finally:
        FLAGS.unparse_flags()


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mels(*shape, seed=0):
    return _rng(seed).standard_normal(shape).astype(np.float32)


# --- every released configuration --------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_configuration_builds_runs_and_counts(name):
    config = _config_from_flagfile(name)
    models = builder.build_models(config)
    assert builder.count_parameters(models) == EXPECTED_COUNTS[name]

    generator = models.generator
    mels = _mels(2, 3, 125, 40) if config.fuser == "attention" else _mels(2, 117, 40)
    images, embedding = generator(mels, training=False)
    assert embedding.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    assert [tuple(i.shape) for i in images] == [(2, s, s, 3) for s in config.output_resolutions]
    by_size = {image.shape[1]: image for image in images}
    for model in models.image_discriminators:
        assert tuple(model(by_size[model.image_size], training=False).shape) == (2, 6, 6, 1)
    for model in models.identity_classifiers:
        real, identity = model(by_size[model.image_size], training=False)
        assert tuple(real.shape) == (2, 1) and tuple(identity.shape) == (2, N_ID)
    assert builder.describe(models, config).count("\n") >= 5


def _small_encoder(mode="inception", fuser=True, **kwargs):
    return VoiceEncoder(mode, channels=(8, 8, 16, 16), embedding_dim=32,
                        fuser=AttentionFuser(32) if fuser else None, **kwargs)


# --- segments and masks --------------------------------------------------------------------------

def test_fuser_mask_ignores_padded_segments():
    fuser = AttentionFuser(16)
    embeddings = _mels(2, 5, 16)
    mask = np.array([[True, True, True, False, False], [True] * 5])
    masked = np.asarray(fuser(embeddings, mask))
    np.testing.assert_allclose(masked[0], np.asarray(fuser(embeddings[:1, :3]))[0], atol=1e-6)
    np.testing.assert_allclose(masked[1], np.asarray(fuser(embeddings[1:]))[0], atol=1e-6)
    # All-true mask == no mask, exactly.
    np.testing.assert_array_equal(np.asarray(fuser(embeddings, np.ones((2, 5), bool))),
                                  np.asarray(fuser(embeddings)))
    # A row with no valid segment stays finite.
    assert np.all(np.isfinite(np.asarray(fuser(embeddings, np.zeros((2, 5), bool)))))


def test_fuser_average_start_is_a_weighted_average_of_segments():
    fuser = AttentionFuser(16)
    embeddings = _mels(2, 5, 16)
    fuser(embeddings)
    fuser.initialize_as_average()
    _, weights = fuser.attend(embeddings)
    expected = np.mean(np.asarray(weights) @ np.asarray(embeddings), axis=1)
    np.testing.assert_allclose(np.asarray(fuser(embeddings)), expected, atol=1e-6)
    # With a zero query projection the attention is uniform: the plain mean of the segments.
    fuser.linear_in.kernel.assign(np.zeros((16, 16), np.float32))
    np.testing.assert_allclose(np.asarray(fuser(embeddings)),
                               np.mean(np.asarray(embeddings), axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="output_dim == embedding_dim"):
        narrow = AttentionFuser(16, output_dim=8)
        narrow(embeddings)
        narrow.initialize_as_average()


@pytest.mark.parametrize("with_fuser", [True, False])
def test_encoder_mask_ignores_padding_content(with_fuser):
    encoder = _small_encoder(fuser=with_fuser)
    segments = _mels(1, 4, 60, 40)
    padded = np.concatenate([segments, 100 * _mels(1, 2, 60, 40, seed=5)], axis=1)
    mask = np.array([[True] * 4 + [False] * 2])
    expected = np.asarray(encoder(segments, training=False))
    got = np.asarray(encoder(padded, segment_mask=mask, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    norm = np.linalg.norm(got)
    if with_fuser:
        assert abs(norm - 1) < 1e-5
    else:
        # Stage-1 models average the unit segment embeddings without re-normalising
        # (the reference's average_voice_embedding).
        per_segment = np.asarray(encoder.embed_segments(segments, training=False))
        np.testing.assert_allclose(got[0], per_segment[0].mean(axis=0), atol=1e-6)
        assert norm < 1


def test_traced_generator_with_dynamic_segments_and_frames():
    generator = VoiceToFaceGenerator(_small_encoder(), FaceDecoder(32, 16))
    generator.build((None, None, None, 40))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 40], tf.float32),
                                  tf.TensorSpec([None, None], tf.bool)])
    def serve(mels, mask):
        images, embedding = generator(mels, segment_mask=mask, training=False)
        return images[0], embedding

    for shape in ((1, 2, 125, 40), (3, 4, 100, 40)):
        mels = _mels(*shape)
        mask = np.ones(shape[:2], bool)
        image, embedding = serve(mels, mask)
        assert image.shape == (shape[0], 16, 16, 3)
        eager_images, eager_embedding = generator(mels, segment_mask=mask, training=False)
        np.testing.assert_allclose(embedding, eager_embedding, atol=1e-5)
        np.testing.assert_allclose(image, eager_images[0], atol=1e-5)


# --- behaviour details ------------------------------------------------------------------------

def test_baseline_noise_semantics():
    mels = _mels(2, 64, 40)
    noisy = _small_encoder("cnn", fuser=False, add_noise=True, seed=1)
    first, second = (np.asarray(noisy(mels, training=False)) for _ in range(2))
    assert not np.allclose(first, second)  # reference behaviour: noise at inference too
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    quiet = _small_encoder("cnn", fuser=False, add_noise=True, noise_at_inference=False)
    np.testing.assert_array_equal(quiet(mels, training=False), quiet(mels, training=False))
    assert not np.allclose(quiet(mels, training=True), quiet(mels, training=True))


def test_inception_output_lengths():
    block = Inception1DBlock(4)
    for length in (100, 125, 128, 150, 1, 2):
        out = block(_mels(1, length, 3))
        assert out.shape == (1, (length + 1) // 2, 16)


def test_train_fuser_only():
    generator = VoiceToFaceGenerator(_small_encoder(), FaceDecoder(32))
    generator.build((None, None, None, 40))
    generator.train_fuser_only()
    names = sorted(v.path for v in generator.trainable_weights)
    assert len(names) == 2 and all("fuser" in n for n in names), names
    with pytest.raises(ValueError, match="fuser"):
        VoiceToFaceGenerator(_small_encoder(fuser=False), FaceDecoder(32)).train_fuser_only()


def test_tf_checkpoint_holds_every_variable(tmp_path):
    # Keras 3 hides list-held layers from tf.train.Checkpoint; the models must not use lists.
    config = builder.ModelConfig(
        encoder_channels=(8, 8, 8, 8), embedding_dim=64, fuser="attention",
        decoder="upconv_multires", image_size=128, image_discriminator_arch_128="C4-8-2",
        identity_classifier_arch_128="C4-8-2", num_train_identities=3)
    models = builder.build_models(config)
    objects = builder.checkpoint_objects(models)
    path = tf.train.Checkpoint(**objects).write(str(tmp_path / "ckpt"))
    stored = [name for name, _ in tf.train.list_variables(path)]
    for name, model in objects.items():
        count = sum(1 for n in stored if n.startswith(name + "/"))
        assert count == len(model.weights), name


def test_a_seeded_build_has_that_seeds_weights_and_leaves_other_streams_alone():
    # The evaluation's untrained row is built this way: two reports must show the same row.
    config = builder.ModelConfig(encoder_channels=(8, 8, 8, 8), embedding_dim=16,
                                 num_train_identities=3)

    def weights(seed):
        return [w.numpy() for w in builder.build_generator(config, seed=seed).weights]

    np.random.seed(5)
    expected_next = np.random.random_sample()
    np.random.seed(5)
    first, again, other = weights(1), weights(1), weights(2)
    assert np.random.random_sample() == expected_next  # NumPy's global stream not moved
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


# --- architecture strings, config validation, flags -------------------------------------------

def test_parse_discriminator_arch():
    channels, specs = parse_discriminator_arch("I4,C4-64-2,C3-8-1-1,C1-4")
    assert channels == 4
    assert [dataclasses.astuple(s) for s in specs] == [(4, 64, 2, 0), (3, 8, 1, 1), (1, 4, 1, 0)]
    assert parse_discriminator_arch("C3-8-2", "same")[1][0].padding == 1
    for bad, match in [("", "empty"), ("R,C4-8", "unsupported layer 'R'"),
                       ("C4-x-2", "bad convolution token 'C4-x-2'"), ("C4", "bad convolution"),
                       ("Ix,C4-8", "input-channel")]:
        with pytest.raises(ValueError, match=match):
            parse_discriminator_arch(bad)
    with pytest.raises(ValueError, match="odd kernel"):
        parse_discriminator_arch("C4-8-2", "same")
    assert parse_activation("leakyrelu-0.2") == ("leakyrelu", 0.2)
    assert parse_activation("leakyrelu") == ("leakyrelu", 0.01)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        parse_activation("tanh")


def test_model_config_validation_messages():
    builder.ModelConfig().validate()
    with pytest.raises(ValueError) as error:
        builder.ModelConfig(decoder="upconv_multires", image_size=64,
                            identity_classifier_arch_128="C4-8-2",
                            discriminator_normalization_128="instance",
                            encoder_channels=(10, 20, 30, 40)).validate()
    message = str(error.value)
    assert "image_size=64 does not match decoder upconv_multires" in message
    assert "multiples of 4" in message
    assert "discriminator_normalization_128" in message
    with pytest.raises(ValueError, match="has no 128px output"):
        builder.ModelConfig(image_discriminator_arch_128=ARCH_64).validate()
    with pytest.raises(ValueError, match="unknown model config keys: bogus"):
        builder.ModelConfig.from_mapping({"bogus": 1})


def test_flag_defaults_mirror_model_config():
    FLAGS.unparse_flags()
    try:
        FLAGS(["test"])
        assert FLAGS.config(builder.ModelConfig) == builder.ModelConfig()
    finally:
        FLAGS.unparse_flags()


def test_flag_validator_explains_bad_values():
    FLAGS.unparse_flags()
    try:
        with pytest.raises(absl_flags.IllegalFlagValueError,
                           match="image_size=128 does not match decoder upconv_64"):
            FLAGS(["test", "--image_size=128"])
    finally:
        FLAGS.unparse_flags()
