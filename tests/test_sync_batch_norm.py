"""Synchronised BatchNorm (``--sync_batch_norm``) under MirroredStrategy with two logical CPU
devices (in a subprocess, so the device configuration stays there; as tests/test_gpu_levers.py).

With sync on, one step of two replicas on distinct halves of a global batch is one replica's
step on the whole batch: BatchNorm statistics (moving mean and variance), losses and weights
agree. With sync off (the reference's per-replica statistics) they do not, which shows that the
comparison can fail. One replica with sync on is the same run as sync off, bit for bit. The
option is a training flag and comes back from a run's flags.cfg.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_sf2f import runs  # noqa: E402
from keras_sf2f.flags import ToolFlags  # noqa: E402
from keras_sf2f.training.config import TrainConfig  # noqa: E402
from test_training import TINY_MODEL_FLAGS  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_sf2f.models import builder
    from keras_sf2f.training.config import TrainConfig
    from keras_sf2f.training.trainer import GanTrainer

    B, T = 4, 120
    TWO = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ONE = tf.distribute.MirroredStrategy(["/cpu:0"])

    def config(**overrides):
        # Adam with epsilon 1: the update is about lr * gradient (tests/test_gpu_levers.py).
        values = dict(model=builder.ModelConfig(**{tiny_model_flags!r}), batch_size=B,
                      perceptual_weight=0.0, adam_epsilon=1.0, learning_rate=0.1)
        values.update(overrides)
        return TrainConfig(**values)

    def step(trainer, batch, initial):
        for name, model in trainer.model_objects().items():
            for w, value in zip(model.weights, initial[name]):
                w.assign(value)
        it = iter(trainer.distribute(lambda: tf.data.Dataset.from_tensors(batch)))
        values = {{k: float(v) for k, v in trainer.train_step(it).items()}}
        weights = {{f"{{n}}/{{w.path}}": w.numpy().tolist()
                    for n, m in trainer.model_objects().items() for w in m.weights}}
        # Every replica's copy of every model variable is the same.
        disagreement = 0.0
        for m in trainer.model_objects().values():
            for w in m.weights:
                copies = trainer.strategy.experimental_local_results(w.value)
                disagreement = max(disagreement, max(
                    float(np.max(np.abs(c.numpy() - copies[0].numpy()))) for c in copies))
        return dict(values=values, weights=weights, disagreement=disagreement,
                    synchronized=len(trainer.synchronized_batch_norms),
                    statistics=len(trainer.moving_statistics))

    # Fixed initial weights: how far per-replica statistics move the losses depends on them, and
    # an unlucky draw once moved the total loss by only 1e-5.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Distinct halves: each replica's batch statistics differ from the global batch's.
    batch = (rng.uniform(-1, 1, (B, 64, 64, 3)).astype(np.float32),
             rng.normal(size=(B, T, 40)).astype(np.float32) + np.arange(B)[:, None, None],
             rng.integers(0, {num_train}, B))
    reference = GanTrainer(config(), tf.distribute.get_strategy())
    initial = {{name: [w.numpy() for w in model.weights]
                for name, model in reference.model_objects().items()}}
    out = dict(reference=step(reference, batch, initial))
    for name, strategy, sync in (("two_sync", TWO, True), ("two_local", TWO, False),
                                 ("one_sync", ONE, True), ("one_local", ONE, False)):
        trainer = GanTrainer(config(sync_batch_norm=sync), strategy)
        out[name] = step(trainer, batch, initial)
        if name == "two_sync":
            layers = trainer.synchronized_batch_norms
            out["all_synchronized"] = all(layer.synchronized for layer in layers)
            out["configs_unchanged"] = all(
                m.get_config() == r.get_config() for m, r in
                zip(trainer.model_objects().values(), reference.model_objects().values()))
    try:
        GanTrainer(config(sync_batch_norm=True, jit_compile=True), TWO)
        out["jit_refused"] = ""
    except ValueError as e:
        out["jit_refused"] = str(e)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
""")


def _max_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _max_relative_difference(a, b, keys):
    return max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6) for k in keys)


def _moving_statistics(weights):
    return {k: v for k, v in weights.items()
            if k.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance")}


@pytest.mark.slow
def test_two_synchronised_replicas_are_one_replica_on_the_global_batch(tmp_path):
    script = tmp_path / "sync_bn.py"
    script.write_text(SCRIPT.format(tiny_model_flags=TINY_MODEL_FLAGS,
                                    num_train=TINY_MODEL_FLAGS["num_train_identities"]))
    output = tmp_path / "out.json"
    started = time.monotonic()
    process = subprocess.run([sys.executable, str(script), str(output)], capture_output=True,
                             text=True, timeout=900, cwd=REPO_ROOT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert process.returncode == 0, process.stderr[-4000:]
    print(f"sync_bn: {time.monotonic() - started:.0f} s")
    out = json.loads(output.read_text())
    reference, two_sync, two_local = out["reference"], out["two_sync"], out["two_local"]

    # Every BatchNorm of the trained models (generator and discriminators) is synchronised;
    # the models' configurations are unchanged.
    assert two_sync["synchronized"] > 0 and out["all_synchronized"]
    assert 2 * two_sync["synchronized"] == two_sync["statistics"]
    assert out["configs_unchanged"]
    assert two_sync["disagreement"] == 0.0 and two_local["disagreement"] == 0.0

    statistics = _moving_statistics(reference["weights"])
    assert statistics and set(reference["weights"]) == set(two_sync["weights"])
    # Sync on: the global batch's statistics, losses and weights, to float rounding.
    assert _max_difference(statistics, two_sync["weights"]) < 1e-5
    assert _max_difference(reference["weights"], two_sync["weights"]) < 1e-5
    for name, value in reference["values"].items():
        assert two_sync["values"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # Sync off: per-replica statistics, visibly different (the test can fail).
    assert _max_difference(statistics, two_local["weights"]) > 1e-3
    # Every loss term moves a little: the largest move of any term (generator or discriminator;
    # 9e-3 relative with these weights, Intel kind) and of any trained weight (8e-4) lie far
    # beyond the synchronised run's rounding (5e-6 and 1e-7), which the asserts above bound.
    losses = [k for k in reference["values"] if "loss/" in k]
    assert _max_relative_difference(reference["values"], two_local["values"], losses) > 1e-3
    trained = {k: v for k, v in reference["weights"].items() if k not in statistics}
    assert _max_difference(trained, two_local["weights"]) > 1e-4

    # One replica: nothing to synchronise, the same run bit for bit.
    assert out["one_sync"]["synchronized"] == 0
    assert out["one_sync"]["values"] == out["one_local"]["values"]
    assert out["one_sync"]["weights"] == out["one_local"]["weights"]

    # XLA on CPU replicas cannot run the BatchNorm all-reduces: refused at construction.
    assert "sync_batch_norm with jit_compile" in out["jit_refused"]


def test_the_option_is_a_training_flag_and_round_trips(tmp_path):
    assert TrainConfig().sync_batch_norm is False  # the reference: per-replica statistics
    text = ToolFlags("train").help_text()
    assert "--[no]sync_batch_norm: Synchronised BatchNorm" in text
    config = TrainConfig(model_dir=str(tmp_path / "run"), data_dir="/data",
                         sync_batch_norm=True)
    path = tmp_path / "flags.cfg"
    path.write_text(config.to_flagfile())
    assert "--sync_batch_norm" in path.read_text().splitlines()
    flag_values = ToolFlags("train")
    flag_values(["train", f"--flagfile={path}"])
    assert flag_values.config(TrainConfig) == config
    assert runs.read_flagfile(str(path))["sync_batch_norm"] in (True, "true")
    flag_values = ToolFlags("train")
    flag_values(["train", "--nosync_batch_norm"])
    assert flag_values.config(TrainConfig).sync_batch_norm is False
