"""--lr_decay_start_step and resuming: the decaying optimizers keep a learning-rate variable
that the step sets from the schedule, so a run's checkpoint is the same with and without a
decay. On the tiny dataset of test_training.py: the decay trains exactly as an Adam built with
the schedule (Keras' own way, and this project's before 2026-12-07; a decay that did not act
would fail this, since the fourth and fifth updates decay), a run stopped without a decay
resumes with one, and a checkpoint written the older way still resumes.
"""

import logging
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sf2f.training import loop  # noqa: E402
from test_training import data_dir, make_config, run  # noqa: E402,F401

# Slow (training): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

STEPS = 5
DECAY = dict(lr_decay_start_step=3, lr_decay_final_factor=1e-3)  # updates 4 and 5 decay
DECAYING = ("generator_optimizer", "image_discriminator_optimizer")


def _config(root, data, name, **overrides):
    return make_config(root / name, data, train_steps=STEPS, checkpoint_every_steps=100,
                       **overrides)


def _older_form(trainer):
    """The optimizers as runs with a decay built them before 2026-12-07: Adam built with the
    schedule, so without a learning-rate variable."""
    for name in list(trainer.learning_rate_schedules):
        trainer.build_optimizer_with_schedule(name)


def _run_in_older_form(config, **kwargs):
    original_init = loop.GanTrainer.__init__

    def init(self, *args, **kw):
        original_init(self, *args, **kw)
        _older_form(self)

    patch = pytest.MonkeyPatch()
    patch.setattr(loop.GanTrainer, "__init__", init)
    try:
        return run(config, **kwargs)
    finally:
        patch.undo()


def _stopped_after(config, step, runner=run):
    def interrupt(s, values):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)

    result, _ = runner(config, step_callback=interrupt)
    assert result.stopped_by_signal and result.step == step
    return result


def _generator_weights(result):
    return [w.numpy() for w in result.trainer.models.generator.weights]


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):  # noqa: F811
    """Five uninterrupted steps with the decay."""
    return run(_config(tmp_path_factory.mktemp("lr"), data_dir, "decayed", **DECAY))


def test_the_decay_trains_as_an_adam_built_with_the_schedule(straight, data_dir,
                                                              tmp_path):  # noqa: F811
    decayed, seen = straight
    older, seen_older = _run_in_older_form(_config(tmp_path, data_dir, "older", **DECAY))
    for step in range(1, STEPS + 1):
        assert seen[step]["loss/total_loss"] == seen_older[step]["loss/total_loss"], step
    for a, b in zip(_generator_weights(decayed), _generator_weights(older)):
        np.testing.assert_array_equal(a, b)
    # The summaries give each optimizer's next rate: after 5 updates, the schedule's end.
    rates = decayed.trainer.learning_rates()
    assert rates["lr/generator"] == pytest.approx(5e-4 * 1e-3)
    assert rates["lr/image_discriminator"] == pytest.approx(5e-4 * 1e-3)
    assert rates["lr/identity_classifier"] == pytest.approx(5e-4)


def test_a_run_stopped_without_a_decay_resumes_with_one(straight, data_dir,
                                                         tmp_path):  # noqa: F811
    decayed, seen = straight
    _stopped_after(_config(tmp_path, data_dir, "run"), 2)
    result, resumed = run(_config(tmp_path, data_dir, "run", **DECAY))
    assert sorted(resumed) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed[step]["loss/total_loss"] == seen[step]["loss/total_loss"], step
    for a, b in zip(_generator_weights(result), _generator_weights(decayed)):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_written_the_older_way_resumes(straight, data_dir, tmp_path,
                                                     caplog):  # noqa: F811
    decayed, seen = straight
    first = _stopped_after(_config(tmp_path, data_dir, "run", **DECAY), 2,
                           runner=_run_in_older_form)
    saved = [name for name, _ in tf.train.list_variables(first.checkpoint)]
    for name in DECAYING:
        assert any(n.startswith(name + "/") for n in saved)
        assert not any(n.startswith(name + "/") and "/_learning_rate/" in n for n in saved)
    # absl's logger: other tests in the process may have set its level above INFO.
    with caplog.at_level(logging.INFO, logger="absl"):
        result, resumed = run(_config(tmp_path, data_dir, "run", **DECAY))
    assert "an older run's form" in caplog.text
    assert sorted(resumed) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed[step]["loss/total_loss"] == seen[step]["loss/total_loss"], step
    for a, b in zip(_generator_weights(result), _generator_weights(decayed)):
        np.testing.assert_array_equal(a, b)
