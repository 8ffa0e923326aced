"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 (TF_CONFIG) train a tiny
model for a few steps; both hold identical weights afterwards, report identical global losses,
and only the chief's checkpoint remains."""

import json
import os
import socket
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import write_tiny_dataset  # noqa: E402

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

STEPS = 3

WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from keras_sf2f.models.builder import ModelConfig
    from keras_sf2f.training import loop
    from keras_sf2f.training.config import TrainConfig

    data_dir, model_dir, out = sys.argv[1:4]
    model = ModelConfig(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
                        image_discriminator_arch_64="C4-4-2,C4-8-2",
                        identity_classifier_arch_64="C4-4-2,C4-8-2", num_train_identities=4)
    config = TrainConfig(model_dir=model_dir, data_dir=data_dir, model=model, batch_size=4,
                         train_steps={steps}, checkpoint_every_steps=2, eval_every_steps=0,
                         perceptual_weight=0.0, strategy="multi_worker",
                         log_every_seconds=60.0)
    losses = {{}}
    result = loop.train(config, handle_signals=False,
                        step_callback=lambda s, v: losses.__setitem__(s, v))
    trainer = result.trainer
    weights = {{}}
    for name, model in trainer.model_objects().items():
        for w in model.weights:
            weights[name + "/" + w.path] = np.asarray(w.numpy())
    np.savez(out + ".npz", **weights)
    with open(out + ".json", "w") as f:
        json.dump(dict(losses={{str(k): v for k, v in losses.items()}},
                       replicas=trainer.num_replicas, step=result.step), f)
""")


def _ephemeral_range():
    """The kernel's range for bind(0) and outgoing connections (Linux default 32768-60999)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _free_ports(n, rng=None):
    """n ports free now and outside the ephemeral range.

    The workers bind their ports seconds after this returns. A port the kernel handed out by
    bind(0) sits in the ephemeral range, where any process's outgoing connection can take it
    in between (the suite runs servers and clients alongside); a port below that range is
    only ever taken by a process that names it, so the gap cannot be lost to chance."""
    rng = rng or np.random.default_rng()
    low, _ = _ephemeral_range()
    candidates = range(max(1024, low - 20000), low)
    ports = []
    for port in rng.permutation(candidates):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
        ports.append(int(port))
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free ports below the ephemeral range {low}")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(str(tmp_path_factory.mktemp("prepared")),
                              {"train": [f"tr{i}" for i in range(4)]},
                              utterances=1, frames=200, faces=1)


def test_two_workers_hold_identical_weights(data_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(steps=STEPS))
    model_dir = tmp_path / "model"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            processes.append(subprocess.Popen(
                [sys.executable, str(script), data_dir, str(model_dir),
                 str(tmp_path / f"worker{index}")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-4000:]

    infos = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert [info["replicas"] for info in infos] == [2, 2]
    assert [info["step"] for info in infos] == [STEPS, STEPS]
    assert infos[0]["losses"] == infos[1]["losses"]  # global values, reduced over workers
    assert sorted(infos[0]["losses"], key=int) == [str(s) for s in range(1, STEPS + 1)]

    weights = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    assert sorted(weights[0].files) == sorted(weights[1].files) and weights[0].files
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)

    # The chief wrote the checkpoints; the other worker's scratch copies are gone.
    entries = sorted(os.listdir(model_dir))
    assert "checkpoint" in entries and f"ckpt-{STEPS}.index" in entries
    assert not [e for e in entries if e.startswith(".worker_")]
