"""--decoder_pretrain_steps: the first steps train the face decoder alone to draw each real face
from the face network's embedding of it; the voice pre-training then regresses the voice
embedding onto the decoder's input for the speaker's face; then the generator's losses take
over. On the tiny dataset of test_training.py: what each phase moves, the checkpoint and
resume, and the configuration errors.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from test_training import data_dir, make_config, tiny_facenet  # noqa: E402,F401
from test_voice_pretrain import (  # noqa: E402
    _changed, _weights, run_with_snapshots, straight_and_resumed)

# Slow (training): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def _phases_config(model_dir, data_dir, **overrides):  # noqa: F811
    values = dict(decoder_pretrain_steps=2, voice_pretrain_steps=1, train_steps=4,
                  perceptual_weight=1.0, face_network="tiny (passed to train)")
    values.update(overrides)
    return make_config(model_dir, data_dir, **values)


def _fixed_batch():
    """One batch as the pipeline gives it: 3 faces, 40 frames of 40 log-mels, labels."""
    rng = np.random.default_rng(0)
    return (tf.constant(rng.uniform(-1, 1, (3, 64, 64, 3)), tf.float32),
            tf.constant(rng.normal(size=(3, 40, 40)), tf.float32),
            tf.constant([0, 1, 2], tf.int64))


def _decoder_step(trainer, batch):
    """One decoder-phase step of ``trainer`` on ``batch``: {loss name: value}."""
    iterator = iter(trainer.distribute(lambda: tf.data.Dataset.from_tensors(batch).repeat()))
    return {k: float(v) for k, v in trainer.decoder_pretrain_step(iterator).items()}


def test_decoder_then_voice_then_generator(data_dir, tmp_path):  # noqa: F811
    config = _phases_config(tmp_path / "run", data_dir)
    result, seen, snapshots = run_with_snapshots(config, lambda trainer: (
        _weights(trainer.models.generator.encoder), _weights(trainer.models.generator.decoder),
        _weights(trainer.face_to_decoder)))
    assert result.step == 4
    # Steps 1-2: the decoder draws real faces from their embeddings; the encoder is untouched.
    for step in (1, 2):
        assert set(seen[step]) == {"decoder_pretrain/l1_pixel_loss_64",
                                   "decoder_pretrain/img_perceptual_loss_64",
                                   "decoder_pretrain/total_loss"}
        assert all(np.isfinite(v) and v > 0 for v in seen[step].values())
        assert not _changed(snapshots[step - 1][0], snapshots[step][0])
        assert _changed(snapshots[step - 1][1], snapshots[step][1])
        assert _changed(snapshots[step - 1][2], snapshots[step][2])
    # Step 3: the voice encoder alone regresses the decoder's input: no read-out of its own,
    # the map stays as the decoder phase left it.
    assert set(seen[3]) == {"voice_pretrain/cosine_distance"}
    assert 0.0 <= seen[3]["voice_pretrain/cosine_distance"] <= 2.0
    assert _changed(snapshots[2][0], snapshots[3][0])
    assert not _changed(snapshots[2][1], snapshots[3][1])
    assert not _changed(snapshots[2][2], snapshots[3][2])
    trainer = result.trainer
    assert trainer.voice_head is None
    assert trainer.voice_pretrain_variables == list(
        trainer.models.generator.encoder.trainable_variables)
    # Step 4: the generator's losses, both parts train.
    assert "loss/l1_pixel_loss_64" in seen[4]
    assert _changed(snapshots[3][0], snapshots[4][0]) and _changed(snapshots[3][1],
                                                                   snapshots[4][1])
    # The map and its optimizer are in the training checkpoint (a resume needs them), not in
    # the models evaluation and export restore; with the map there is no voice read-out.
    names = {name for name, _ in tf.train.list_variables(result.checkpoint)}
    assert any(n.startswith("decoder_pretrain_projection/") for n in names)
    assert any(n.startswith("decoder_pretrain_optimizer/") for n in names)
    assert not any(n.startswith("voice_pretrain_head/") for n in names)
    assert "decoder_pretrain_projection" not in result.trainer.model_objects()


def test_decoder_pretraining_resumes_where_it_stopped(data_dir, tmp_path):  # noqa: F811
    # One run of 4 steps against a run stopped (SIGTERM) after step 1, in the middle of the
    # decoder phase, then resumed.
    def make(name):
        return _phases_config(tmp_path / name, data_dir, checkpoint_every_steps=100)

    straight, result, seen = straight_and_resumed(make, stop_after=1)
    assert result.step == 4 and sorted(seen) == [2, 3, 4]
    np.testing.assert_allclose(seen[2]["decoder_pretrain/total_loss"],
                               straight[2]["decoder_pretrain/total_loss"], rtol=1e-5)
    np.testing.assert_allclose(seen[3]["voice_pretrain/cosine_distance"],
                               straight[3]["voice_pretrain/cosine_distance"], rtol=1e-5)
    np.testing.assert_allclose(seen[4]["loss/total_loss"], straight[4]["loss/total_loss"],
                               rtol=1e-5)


def test_the_decoders_input_noise_is_drawn_and_reproducible(data_dir, tmp_path):  # noqa: F811
    # Same seed, same step: the same noise; no noise: another loss. One decoder-phase step on
    # a fixed batch from the same initial weights (the resume test above checks the same
    # thing across processes, through the loop, at the default noise).
    from keras_sf2f.training.trainer import GanTrainer  # noqa: PLC0415

    face_network = tiny_facenet()
    batch = _fixed_batch()

    def first_loss(noise):
        keras.utils.set_random_seed(0)
        config = _phases_config(tmp_path, data_dir, decoder_pretrain_noise=noise)
        trainer = GanTrainer(config, face_network=face_network)
        return _decoder_step(trainer, batch)["decoder_pretrain/total_loss"]

    noisy = first_loss(0.5)
    assert first_loss(0.5) == pytest.approx(noisy, rel=1e-6)
    assert abs(first_loss(0.0) - noisy) > 1e-4 * noisy


@pytest.mark.parametrize("overrides, message", [
    (dict(decoder_pretrain_steps=2), "needs --face_network"),
    (dict(decoder_pretrain_steps=3, voice_pretrain_steps=2, face_network="f"),
     "leave no generator step"),
    (dict(decoder_pretrain_steps=2, face_network="f", model=dict(fuser="attention")),
     "decoder_pretrain_steps is for stage 1"),
    (dict(decoder_pretrain_steps=2, face_network="f", l1_weight=0.0, perceptual_weight=0.0),
     "needs an image loss"),
])
def test_bad_decoder_pretraining_settings_are_refused(data_dir, tmp_path, overrides,
                                                      message):  # noqa: F811
    config = make_config(tmp_path, data_dir, **overrides)
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_real_faces_pass_through_the_face_network_once(data_dir, tmp_path):  # noqa: F811
    # The decoder phase takes the embedding it draws from and the perceptual loss's real
    # features from one pass of the face network over the real faces; its losses are those of
    # two separate passes (the same computation done twice).
    from keras_sf2f.training import losses as losses_lib  # noqa: PLC0415
    from keras_sf2f.training.trainer import GanTrainer  # noqa: PLC0415

    config = _phases_config(tmp_path / "run", data_dir)
    face_network = tiny_facenet()
    batch = _fixed_batch()

    def one_step(separate_passes):
        keras.utils.set_random_seed(0)
        trainer = GanTrainer(config, face_network=face_network)
        calls = []
        original_call = face_network.call

        def counting_call(*args, **kwargs):
            calls.append(1)
            return original_call(*args, **kwargs)

        original_loss = losses_lib.facenet_perceptual_loss

        def loss_without_shared_features(*args, real_features=None, **kwargs):
            return original_loss(*args, **kwargs)

        face_network.call = counting_call
        if separate_passes:
            losses_lib.facenet_perceptual_loss = loss_without_shared_features
        try:
            values = _decoder_step(trainer, batch)
        finally:
            face_network.call = original_call
            losses_lib.facenet_perceptual_loss = original_loss
        return values, len(calls)

    shared, shared_calls = one_step(separate_passes=False)
    separate, separate_calls = one_step(separate_passes=True)
    assert (shared_calls, separate_calls) == (2, 3)  # real + drawn faces, against 2 + 1
    assert set(shared) == set(separate)
    for name, value in shared.items():
        assert value > 0 and value == pytest.approx(separate[name], rel=1e-6), name
