"""SF2F losses against hand-computed values, and the trainer's composition of
the generator objective (weights, per-resolution targets, global-batch averaging)."""

import dataclasses
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sf2f.models.builder import ModelConfig  # noqa: E402
from keras_sf2f.models.face_preprocessing import facenet_inputs_from_generator_images  # noqa: E402
from keras_sf2f.models.facenet import FaceNet  # noqa: E402
from keras_sf2f.training import losses  # noqa: E402

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def softplus(x):
    return math.log1p(math.exp(x))


def tiny_facenet():
    model = FaceNet(embedding_dim=16, width_multiplier=0.0625, repeats=(1, 1, 1),
                    dropout_rate=0.0)
    model.build((None, 140, 140, 3))
    return model


# -- GAN and classification terms -------------------------------------------------------------

def test_bce_with_logits_per_example_hand_values():
    logits = tf.constant([[0.0, 2.0], [-1.0, 3.0]])
    # target 1: log(1 + exp(-x)); target 0: log(1 + exp(x)); mean over the example's logits.
    ones = losses.bce_with_logits(logits, 1.0).numpy()
    zeros = losses.bce_with_logits(logits, 0.0).numpy()
    np.testing.assert_allclose(ones, [(softplus(-0.0) + softplus(-2.0)) / 2,
                                      (softplus(1.0) + softplus(-3.0)) / 2], rtol=1e-6)
    np.testing.assert_allclose(ones, [0.4100375, 0.6809245], rtol=1e-5)
    np.testing.assert_allclose(zeros, [(softplus(0.0) + softplus(2.0)) / 2,
                                       (softplus(-1.0) + softplus(3.0)) / 2], rtol=1e-6)


def test_bce_over_patch_maps_and_extreme_logits():
    # [B, h, w, 1] patch logits: the mean runs over all h*w logits of each example.
    logits = tf.reshape(tf.constant([1.0, -2.0, 0.5, 4.0, 100.0, -100.0, 0.0, 0.0]),
                        [2, 2, 2, 1])
    got = losses.generator_gan_loss(logits).numpy()
    expected = [np.mean([softplus(-1.0), softplus(2.0), softplus(-0.5), softplus(-4.0)]),
                np.mean([0.0, 100.0, softplus(0.0), softplus(0.0)])]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.all(np.isfinite(losses.bce_with_logits(logits, 0.0).numpy()))


def test_discriminator_gan_loss_is_sum_of_two_means():
    real = tf.constant([[[[2.0]], [[0.0]]]])  # [1, 2, 1, 1]
    fake = tf.constant([[[[-1.0]], [[1.0]]]])
    got = float(losses.discriminator_gan_loss(real, fake).numpy()[0])
    expected = (softplus(-2.0) + softplus(0.0)) / 2 + (softplus(-1.0) + softplus(1.0)) / 2
    assert got == pytest.approx(expected, rel=1e-6)


def test_identity_cross_entropy_hand_value():
    logits = tf.constant([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    got = losses.identity_cross_entropy(logits, tf.constant([2, 0])).numpy()
    np.testing.assert_allclose(got, [math.log(1 + math.exp(-1) + math.exp(-2)), math.log(3.0)],
                               rtol=1e-6)


def test_accuracies():
    np.testing.assert_allclose(
        losses.binary_accuracy(tf.constant([[1.0, -1.0, 2.0, 0.5]]), 1.0).numpy(), [0.75])
    np.testing.assert_allclose(
        losses.binary_accuracy(tf.constant([[1.0, -1.0, 2.0, 0.5]]), 0.0).numpy(), [0.25])
    np.testing.assert_allclose(losses.identity_accuracy(
        tf.constant([[0.1, 0.9], [0.8, 0.2]]), tf.constant([1, 1])).numpy(), [1.0, 0.0])


# -- pixels ------------------------------------------------------------------------------------

def test_l1_pixel_loss_per_example():
    pred = np.zeros([2, 2, 2, 3], np.float32)
    target = np.zeros([2, 2, 2, 3], np.float32)
    target[0, 0, 0, 0] = 1.2   # example 0: one pixel off by 1.2 -> 1.2 / 12
    target[1] = -0.5           # example 1: every value off by 0.5
    np.testing.assert_allclose(losses.l1_pixel_loss(pred, target).numpy(), [0.1, 0.5],
                               rtol=1e-6)


def test_image_gradient_l1_loss_hand_values():
    # A constant offset has the same gradients as the target: no loss, although L1 is 0.7.
    target = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(losses.image_gradient_l1_loss(target + 0.7, target).numpy(),
                               [0.0, 0.0], atol=1e-6)
    # One pixel raised by 1 in a 3x3 single-channel image: it changes 2 of the 6 vertical
    # and 2 of the 6 horizontal differences by 1 each (corner pixel: 1 and 1).
    pred = np.zeros([2, 3, 3, 1], np.float32)
    pred[0, 1, 1, 0] = 1.0
    pred[1, 0, 0, 0] = 1.0
    got = losses.image_gradient_l1_loss(pred, np.zeros_like(pred)).numpy()
    np.testing.assert_allclose(got, [2 / 6 + 2 / 6, 1 / 6 + 1 / 6], rtol=1e-6)


def test_downsample_nearest_takes_even_rows_and_columns():
    x = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
    got = losses.downsample_nearest(x, 2).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(got, [[0, 2], [8, 10]])
    assert losses.downsample_nearest(x, 4) is x
    with pytest.raises(ValueError):
        losses.downsample_nearest(x, 3)


def test_average_over_global_batch():
    # A replica holding 4 of a global batch of 8: its share of the global mean.
    got = float(losses.average_over_global_batch(tf.constant([1.0, 2.0, 3.0, 4.0]), 8))
    assert got == pytest.approx(10.0 / 8)


# -- perceptual -------------------------------------------------------------------------------

def test_perceptual_loss_hand_value_weights_and_stop_gradient():
    fake = [tf.fill([2, 3, 3, 4], 1.0), tf.fill([2, 2, 2, 8], 2.0), tf.fill([2, 1, 1, 16], 0.0),
            tf.constant([[0.6, 0.8], [1.0, 0.0]])]
    real = [tf.fill([2, 3, 3, 4], 0.0), tf.fill([2, 2, 2, 8], 1.5), tf.fill([2, 1, 1, 16], 1.0),
            tf.constant([[0.8, 0.6], [1.0, 0.0]])]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(fake + real)
        loss = losses.perceptual_loss(fake, real)
    # sum_k w_k mean|f_k - r_k| with w = (1/16, 1/8, 1/4, 1)
    expected0 = 1.0 / 16 * 1.0 + 1.0 / 8 * 0.5 + 1.0 / 4 * 1.0 + 1.0 * 0.2
    expected1 = 1.0 / 16 * 1.0 + 1.0 / 8 * 0.5 + 1.0 / 4 * 1.0 + 0.0
    np.testing.assert_allclose(loss.numpy(), [expected0, expected1], rtol=1e-6)
    # Real features are constants; fake features get w_k * sign / size.
    assert all(g is None for g in tape.gradient(loss, real))
    grad = tape.gradient(loss, fake[0]).numpy()
    np.testing.assert_allclose(grad, np.full([2, 3, 3, 4], 1.0 / 16 / 36), rtol=1e-6)
    # Weights <= 0 switch layers off.
    only_embedding = losses.perceptual_loss(fake, real, (0.0, 0.0, -1.0, 1.0)).numpy()
    np.testing.assert_allclose(only_embedding, [0.2, 0.0], atol=1e-7)


def test_facenet_perceptual_loss_matches_manual_chain():
    net = tiny_facenet()
    rng = np.random.default_rng(0)
    fake = tf.constant(rng.normal(size=(2, 64, 64, 3)).astype(np.float32))
    real = tf.constant(rng.normal(size=(2, 64, 64, 3)).astype(np.float32))
    got = losses.facenet_perceptual_loss(net, fake, real).numpy()
    # The chain by hand: denormalise + clamp, standardise, VGG crop, 140x140 align-corners
    # resize, hidden states [repeat_1, repeat_2, repeat_3, embedding].
    f = net.hidden_states(facenet_inputs_from_generator_images(fake), training=False)
    r = net.hidden_states(facenet_inputs_from_generator_images(real), training=False)
    weights = (1 / 16, 1 / 8, 1 / 4, 1.0)
    expected = sum(w * np.mean(np.abs(a.numpy() - b.numpy()).reshape(2, -1), axis=1)
                   for w, a, b in zip(weights, f, r))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(losses.facenet_perceptual_loss(net, real, real).numpy() == 0.0)


def test_facenet_perceptual_gradient_flows_to_fake_only_and_clamp_zeroes_it():
    net = tiny_facenet()
    rng = np.random.default_rng(1)
    fake = tf.Variable(rng.normal(size=(1, 64, 64, 3)).astype(np.float32))
    # A pixel far above the ImageNet range is clamped to 255: no gradient through it.
    fake[0, 30, 30, 0].assign(50.0)
    real = tf.Variable(rng.normal(size=(1, 64, 64, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.facenet_perceptual_loss(net, fake, real))
    g_fake, g_real = tape.gradient(loss, [fake, real])
    assert g_real is None
    g = g_fake.numpy()
    assert np.abs(g).sum() > 0
    assert g[0, 30, 30, 0] == 0.0
    # Pixels outside the VGG box (rows 12..58, cols 15..48 at 64 px) do not reach FaceNet.
    assert np.all(g[0, :, :15] == 0.0) and np.all(g[0, :12] == 0.0)


# -- the trainer's generator objective -----------------------------------------------------------

def test_trainer_generator_terms_match_spec_composition():
    """A 128-px (two-resolution) tiny model: every reported generator term equals the reference
    formula computed eagerly with the same models before the step (L1 to the nearest-downsampled
    real image at 64, weights applied, global-batch mean); the D terms likewise."""
    from keras_sf2f.training.config import TrainConfig
    from keras_sf2f.training.trainer import GanTrainer

    model = ModelConfig(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
                        decoder="upconv_multires", image_size=128,
                        image_discriminator_arch_64="C4-4-2,C4-8-2",
                        identity_classifier_arch_64="C4-4-2,C4-8-2",
                        image_discriminator_arch_128="C4-4-2,C4-8-2",
                        identity_classifier_arch_128="C4-4-2,C4-8-2",
                        num_train_identities=5)
    config = TrainConfig(model=model, batch_size=3, l1_weight=100.0, gan_weight=2.0,
                         ac_weight=0.05, perceptual_weight=10.0, gradient_l1_weight=3.0,
                         face_network="unused")
    keras.utils.set_random_seed(0)
    trainer = GanTrainer(config, face_network=tiny_facenet)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(3, 128, 128, 3)).astype(np.float32))
    mels = tf.constant(rng.normal(size=(3, 110, 40)).astype(np.float32))
    labels = tf.constant([4, 0, 2], tf.int64)

    g = trainer.models.generator
    fakes, _ = g(mels, training=True)
    d = {m.image_size: m for m in trainer.models.image_discriminators}
    c = {m.image_size: m for m in trainer.models.identity_classifiers}
    expected = {}
    for res, fake in zip((64, 128), fakes):
        real = images[:, ::2, ::2] if res == 64 else images
        expected[f"loss/l1_pixel_loss_{res}"] = 100.0 * np.mean(np.abs(fake - real))
        fake_np, real_np = np.asarray(fake), np.asarray(real)
        expected[f"loss/gradient_l1_loss_{res}"] = 3.0 * sum(
            np.mean(np.abs(np.diff(fake_np, axis=axis) - np.diff(real_np, axis=axis)))
            for axis in (1, 2))
        expected[f"loss/g_gan_img_loss_{res}"] = 2.0 * np.mean(
            losses.generator_gan_loss(d[res](fake, training=True)))
        rf, ids = c[res](fake, training=True)
        expected[f"loss/ac_loss_{res}"] = 0.05 * np.mean(
            losses.identity_cross_entropy(ids, labels))
        expected[f"loss/g_gan_ac_loss_{res}"] = 0.05 * np.mean(losses.generator_gan_loss(rf))
        expected[f"loss/img_perceptual_loss_{res}"] = 10.0 * np.mean(
            losses.facenet_perceptual_loss(trainer.face_network, fake, real))
        # The discriminators' step: the same (detached) fakes, real and fake as separate
        # passes, weight 1; the identity term on real images only.
        expected[f"d_loss/d_img_gan_loss_{res}"] = np.mean(losses.discriminator_gan_loss(
            d[res](real, training=True), d[res](fake, training=True)))
        real_rf, real_ids = c[res](real, training=True)
        fake_rf, _ = c[res](fake, training=True)
        expected[f"d_loss/d_ac_gan_loss_{res}"] = np.mean(
            losses.discriminator_gan_loss(real_rf, fake_rf))
        expected[f"d_loss/d_ac_loss_real_{res}"] = np.mean(
            losses.identity_cross_entropy(real_ids, labels))

    dataset = tf.data.Dataset.from_tensors((images, mels, labels)).repeat()
    values = {k: float(v) for k, v in
              trainer.train_step(iter(trainer.distribute(lambda: dataset))).items()}
    for name, value in expected.items():
        assert values[name] == pytest.approx(float(value), rel=2e-4, abs=1e-6), name
    g_terms = [n for n in expected if n.startswith("loss/")]
    d_terms = [n for n in expected if n.startswith("d_loss/")]
    assert sorted(n for n in values if n.startswith("loss/")) == sorted(
        g_terms + ["loss/total_loss"])
    assert sorted(n for n in values if n.startswith("d_loss/")) == sorted(
        d_terms + ["d_loss/total_loss"])
    assert values["loss/total_loss"] == pytest.approx(sum(values[n] for n in g_terms), rel=1e-5)
    assert values["d_loss/total_loss"] == pytest.approx(sum(values[n] for n in d_terms),
                                                        rel=1e-5)
    for r in (64, 128):
        assert 0.0 <= values[f"d_acc/ac_identity_{r}"] <= 1.0


def test_learning_rate_decay_schedule():
    """The reference's late linear decay, per step: constant before the start, then
    lr0 - (t - start + 1) / (end - start) * (lr0 - f * lr0), floored at f * lr0."""
    from keras_sf2f.training.trainer import LinearDecayAfter

    schedule = LinearDecayAfter(1.0, start_step=10, end_step=20, final_factor=1e-3)
    got = [float(schedule(tf.constant(t, tf.int64))) for t in (0, 9, 10, 14, 19, 30)]
    np.testing.assert_allclose(got, [1.0, 1.0, 1 - 0.1 * 0.999, 1 - 0.5 * 0.999, 1e-3, 1e-3],
                               rtol=1e-6)


def test_learning_rate_decay_counts_the_runs_steps_with_voice_pretraining():
    """--lr_decay_start_step and --train_steps count the run's steps; the GAN step's
    optimizers start counting after --voice_pretrain_steps, so their schedule is shifted: with
    100 pre-training steps, a decay from run step 200 to 300 is one from their step 100 to 200
    (unshifted, it would never have reached its end)."""
    from keras_sf2f.training.config import TrainConfig
    from keras_sf2f.training.trainer import learning_rate_schedule

    config = TrainConfig(learning_rate=1.0, train_steps=300, voice_pretrain_steps=100,
                         lr_decay_start_step=200, lr_decay_final_factor=1e-3)
    schedule = learning_rate_schedule(config, decays=True)
    got = [float(schedule(tf.constant(t, tf.int64))) for t in (0, 99, 100, 149, 199, 250)]
    np.testing.assert_allclose(got, [1.0, 1.0, 1 - 0.01 * 0.999, 1 - 0.5 * 0.999, 1e-3, 1e-3],
                               rtol=1e-6)
    assert learning_rate_schedule(config, decays=False) == 1.0
    no_pretraining = learning_rate_schedule(dataclasses.replace(config, voice_pretrain_steps=0),
                                            decays=True)
    assert float(no_pretraining(tf.constant(199, tf.int64))) == 1.0
    # Decoder pre-training steps count like voice pre-training steps.
    both = learning_rate_schedule(dataclasses.replace(config, voice_pretrain_steps=60,
                                                      decoder_pretrain_steps=40), decays=True)
    np.testing.assert_allclose([float(both(tf.constant(t, tf.int64))) for t in (99, 149)],
                               [1.0, 1 - 0.5 * 0.999], rtol=1e-6)
