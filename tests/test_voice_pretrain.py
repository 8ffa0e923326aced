"""--voice_pretrain_steps: the first steps train the voice encoder alone to regress the face
network's embedding of the speaker's face; then the generator's losses take over. On the tiny
dataset of test_training.py: what each phase moves, the checkpoint and resume, and the
configuration errors.
"""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sf2f.training import loop  # noqa: E402
from test_training import data_dir, make_config, run, tiny_facenet  # noqa: E402,F401

# Slow (training): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def _changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def run_with_snapshots(config, parts):
    """train() on the tiny face network, recording ``parts(trainer)`` (a tuple of weight
    lists) before the first step (key 0) and after every step: (result, seen, snapshots)."""
    holder, snapshots = {}, {}
    original_init = loop.GanTrainer.__init__

    def remember(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        holder["trainer"] = self
        snapshots[0] = parts(self)

    def snapshot(step, values):
        snapshots[step] = parts(holder["trainer"])

    patch = pytest.MonkeyPatch()
    patch.setattr(loop.GanTrainer, "__init__", remember)
    try:
        result, seen = run(config, face_network=tiny_facenet, step_callback=snapshot)
    finally:
        patch.undo()
    return result, seen, snapshots


def straight_and_resumed(make, stop_after):
    """Runs ``make("straight")`` through, and ``make("resumed")`` stopped by SIGTERM after
    step ``stop_after`` then run again: (straight's {step: values}, the resumed run's result,
    the steps the second process ran {step: values})."""
    _, straight = run(make("straight"), face_network=tiny_facenet)

    def interrupt(step, values):
        if step == stop_after:
            os.kill(os.getpid(), signal.SIGTERM)

    first, _ = run(make("resumed"), face_network=tiny_facenet, step_callback=interrupt)
    assert first.stopped_by_signal and first.step == stop_after
    result, seen = run(make("resumed"), face_network=tiny_facenet)
    return straight, result, seen


def test_pretraining_moves_only_the_encoder_then_the_generator_trains(
        data_dir, tmp_path):  # noqa: F811
    config = make_config(tmp_path / "run", data_dir, voice_pretrain_steps=2, train_steps=4,
                         face_network="tiny (passed to train)")
    result, seen, snapshots = run_with_snapshots(config, lambda trainer: (
        _weights(trainer.models.generator.encoder), _weights(trainer.models.generator.decoder)))
    assert result.step == 4
    # Steps 1-2: only the cosine distance to the face embedding, encoder moves, decoder not.
    for step in (1, 2):
        assert set(seen[step]) == {"voice_pretrain/cosine_distance"}
        assert 0.0 <= seen[step]["voice_pretrain/cosine_distance"] <= 2.0
        assert _changed(snapshots[step - 1][0], snapshots[step][0])
        assert not _changed(snapshots[step - 1][1], snapshots[step][1])
    # Steps 3-4: the generator's losses; the decoder trains now.
    for step in (3, 4):
        assert "loss/l1_pixel_loss_64" in seen[step]
        assert "voice_pretrain/cosine_distance" not in seen[step]
    assert _changed(snapshots[2][1], snapshots[4][1])
    # The read-out and its optimizer are in the training checkpoint (a resume needs them),
    # not in the models that evaluation and export restore.
    names = {name for name, _ in tf.train.list_variables(result.checkpoint)}
    assert any(n.startswith("voice_pretrain_head/") for n in names)
    assert any(n.startswith("voice_pretrain_optimizer/") for n in names)
    assert "voice_pretrain_head" not in result.trainer.model_objects()


def test_pretraining_resumes_where_it_stopped(data_dir, tmp_path):  # noqa: F811
    # One run of 3 steps (2 pre-training) against a run stopped (SIGTERM) after step 1 in
    # the middle of pre-training, then resumed.
    def make(name):
        return make_config(tmp_path / name, data_dir, voice_pretrain_steps=2, train_steps=3,
                           checkpoint_every_steps=100, face_network="tiny")

    seen_straight, result, seen = straight_and_resumed(make, stop_after=1)
    assert result.step == 3 and sorted(seen) == [2, 3]
    np.testing.assert_allclose(seen[2]["voice_pretrain/cosine_distance"],
                               seen_straight[2]["voice_pretrain/cosine_distance"], rtol=1e-5)
    np.testing.assert_allclose(seen[3]["loss/total_loss"], seen_straight[3]["loss/total_loss"],
                               rtol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (dict(voice_pretrain_steps=2), "needs --face_network"),
    (dict(voice_pretrain_steps=5, face_network="f"), "leave no generator step"),
    (dict(voice_pretrain_steps=2, face_network="f", model=dict(fuser="attention")),
     "is for stage 1"),
])
def test_bad_pretraining_settings_are_refused(data_dir, tmp_path, overrides,
                                              message):  # noqa: F811
    config = make_config(tmp_path, data_dir, **overrides)
    with pytest.raises(ValueError, match=message):
        config.validate()
