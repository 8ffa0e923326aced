"""The demo's training levers beyond the reference, on the tiny dataset of test_training.py:
the delayed, ramped adversarial terms (--adversarial_start_step / --adversarial_ramp_steps)
and the moving average of the generator (--generator_ema_decay), its checkpointing and who
draws pictures from it (validation, evaluation, a later stage's --init_checkpoint).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sf2f.data import pipelines  # noqa: E402
from keras_sf2f.data.table import load_split  # noqa: E402
from keras_sf2f.evaluation import evaluate  # noqa: E402
from keras_sf2f.models import builder  # noqa: E402
from keras_sf2f.training import loop  # noqa: E402
from keras_sf2f.training.trainer import GanTrainer  # noqa: E402
from test_training import data_dir, make_config, run  # noqa: E402,F401

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def test_adversarial_factor_is_off_then_ramps_linearly(data_dir, tmp_path):  # noqa: F811
    config = make_config(tmp_path, data_dir, adversarial_start_step=3, adversarial_ramp_steps=2)
    trainer = GanTrainer(config)
    factors = [float(trainer.adversarial_factor(s)) for s in range(7)]
    assert factors == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    config = make_config(tmp_path, data_dir, adversarial_start_step=2)
    trainer = GanTrainer(config)
    assert [float(trainer.adversarial_factor(s)) for s in range(4)] == [0.0, 0.0, 1.0, 1.0]
    # The reference's default: on from the first step.
    trainer = GanTrainer(make_config(tmp_path, data_dir))
    assert float(trainer.adversarial_factor(0)) == 1.0


def test_adversarial_terms_are_zero_before_the_start_and_discriminators_still_train(
        data_dir, tmp_path):  # noqa: F811
    config = make_config(tmp_path / "run", data_dir, adversarial_start_step=2,
                         adversarial_ramp_steps=2, train_steps=4)
    result, seen = run(config)
    for step in (1, 2):  # steps 1 and 2 are optimizer iterations 0 and 1
        assert seen[step]["loss/g_gan_img_loss_64"] == 0.0
        assert seen[step]["loss/g_gan_ac_loss_64"] == 0.0
        assert seen[step]["d_loss/d_img_gan_loss_64"] > 0.0
        assert seen[step]["control/adversarial_factor"] == 0.0
    assert seen[3]["control/adversarial_factor"] == 0.5
    assert seen[4]["control/adversarial_factor"] == 1.0
    assert seen[4]["loss/g_gan_img_loss_64"] > 0.0
    # The term is the reference's term times the factor: the AC identity cross-entropy (not an
    # adversarial term) is on from the start.
    assert seen[1]["loss/ac_loss_64"] > 0.0


def test_moving_average_follows_every_step(data_dir, tmp_path):  # noqa: F811
    decay = 0.5
    config = make_config(tmp_path, data_dir, generator_ema_decay=decay)
    trainer = GanTrainer(config)
    generator, average = trainer.models.generator, trainer.generator_ema
    for a, w in zip(average.weights, generator.weights):  # starts at the generator
        np.testing.assert_array_equal(a.numpy(), w.numpy())
    table = load_split(data_dir, "train")
    iterator = iter(trainer.distribute(lambda: pipelines.stage1_dataset(
        table, batch_size=config.batch_size, image_size=64, seed=0, start_step=0,
        num_steps=3)))
    trainable = {id(v) for v in generator.trainable_variables}
    expected = [a.numpy() for a in average.weights]
    for _ in range(3):
        trainer.train_step(iterator)
        for i, w in enumerate(generator.weights):
            expected[i] = (decay * expected[i] + (1 - decay) * w.numpy()
                           if id(w) in trainable else w.numpy())
        for e, a in zip(expected, average.weights):
            np.testing.assert_allclose(a.numpy(), e, rtol=1e-6, atol=1e-7)
    # It really is a different model from the trained one after a step.
    assert any(not np.array_equal(a.numpy(), w.numpy())
               for a, w in zip(average.weights, generator.weights))
    # Validation pictures are the average's.
    mels = tf.random.stateless_normal([2, 1, pipelines.WINDOW_FRAMES, 40], seed=[1, 2])
    mask = tf.ones([2, 1], tf.bool)
    drawn = trainer.generate(mels, mask)[-1].numpy()
    by_average = average(mels, segment_mask=mask, training=False)[0][-1].numpy()
    np.testing.assert_allclose(drawn, by_average, atol=1e-6)


def test_checkpoint_consumers_use_the_average(data_dir, tmp_path):  # noqa: F811
    config = make_config(tmp_path / "stage1", data_dir, generator_ema_decay=0.9, train_steps=3)
    result, _ = run(config)
    trainer = result.trainer
    average = [w.numpy() for w in trainer.generator_ema.weights]
    trained = [w.numpy() for w in trainer.models.generator.weights]
    assert any(not np.array_equal(a, t) for a, t in zip(average, trained))

    # restore_models (stage 2's --init_checkpoint, evaluation) restores the average ...
    fresh = builder.build_generator(config.model)
    loop.restore_models(config.model_dir, {"generator": fresh})
    for a, w in zip(average, fresh.weights):
        np.testing.assert_array_equal(a, w.numpy())
    model_config, _ = evaluate.model_config_for_checkpoint(config.model_dir)
    generator, _, step = evaluate.load_generator(config.model_dir, model_config)
    assert step == 3
    for a, w in zip(average, generator.weights):
        np.testing.assert_array_equal(a, w.numpy())
    # ... and so does export's restore.
    from keras_sf2f import runs
    exported = runs.restore_generator(config.model, tf.train.latest_checkpoint(
        config.model_dir))
    for a, w in zip(average, exported.weights):
        np.testing.assert_array_equal(a, w.numpy())
    # ... and resuming restores both, exactly.
    resumed = make_config(tmp_path / "stage1", data_dir, generator_ema_decay=0.9,
                          train_steps=3)
    again, _ = run(resumed)
    for a, w in zip(average, again.trainer.generator_ema.weights):
        np.testing.assert_array_equal(a, w.numpy())
    for t, w in zip(trained, again.trainer.models.generator.weights):
        np.testing.assert_array_equal(t, w.numpy())

    # A later stage without its own average starts from the stage-1 average.
    stage2 = make_config(tmp_path / "stage2", data_dir, model={"fuser": "attention"},
                         train_fuser_only=True, init_checkpoint=config.model_dir,
                         train_steps=1, fuser_windows=3, fuser_init="average")
    result2, _ = run(stage2)
    g2 = result2.trainer.models.generator
    fuser_ids = {id(v) for v in g2.fuser.weights}
    stage1_weights = dict(zip([w.path for w in fresh.weights], average))
    compared = 0
    for w in g2.weights:
        if id(w) not in fuser_ids and w.path in stage1_weights:
            np.testing.assert_array_equal(stage1_weights[w.path], w.numpy())
            compared += 1
    assert compared > 10
