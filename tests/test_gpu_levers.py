"""The GPU training levers, checked on the CPU: XLA (``--jit_compile``), float16 with dynamic loss
scaling (``--mixed_precision=mixed_float16``), several local replicas under MirroredStrategy
(two logical CPU devices, in subprocesses so the device configuration stays there), the
``--fast_conv`` decision, and that every op of the step has a GPU kernel.

Models are the tiny ones of test_training.py. Weight comparisons use Adam with epsilon 1 and
learning rate 0.1: Adam's update is otherwise nearly invariant to the gradient's scale (its first
steps move every weight by about +-lr whatever the gradient), which would hide a wrong loss
scale, and it turns gradients that are pure rounding noise (a bias in front of BatchNorm) into
full +-lr steps of random sign; with epsilon 1 the update is about lr * gradient.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import kernels  # noqa: E402

from keras_sf2f.models import builder, fast_conv  # noqa: E402
from keras_sf2f.training import loop  # noqa: E402
from keras_sf2f.training.config import TrainConfig  # noqa: E402
from keras_sf2f.training.trainer import GanTrainer  # noqa: E402
from conftest import write_tiny_dataset  # noqa: E402
from test_training import NUM_TRAIN, TINY_MODEL_FLAGS, make_config, run  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

BATCH, FRAMES, STEPS = 4, 120, 3
# Measured on the tiny model over 3 steps (AMD EPYC, oneDNN): XLA vs graph, loss 3e-7 relative,
# weight updates 1e-5 relative; mixed_float16 vs float32, loss 2e-4, updates 2e-2. Since the
# training-mode BatchNorm is TensorFlow's fused op (models/fused_batch_norm.py), the graph runs
# oneDNN's kernel and XLA its own expansion of it: the adversarial terms, which pass the
# discriminators' BatchNorm over batches of 4, then differ by up to 1.9e-5 relative (Intel Xeon
# AMX). The fused layer's agreement with Keras's own is tested in tests/test_fused_batch_norm.py.
XLA_LOSS_RTOL, XLA_UPDATE_RTOL = 1e-4, 1e-3
FLOAT16_LOSS_RTOL, FLOAT16_UPDATE_RTOL = 2e-3, 0.1


def _config(**overrides):
    values = dict(model=builder.ModelConfig(**TINY_MODEL_FLAGS), batch_size=BATCH,
                  perceptual_weight=0.0, adam_epsilon=1.0, learning_rate=0.1)
    values.update(overrides)
    return TrainConfig(**values)


def _batches():
    rng = np.random.default_rng(0)
    return [(rng.uniform(-1, 1, (BATCH, 64, 64, 3)).astype(np.float32),
             rng.normal(size=(BATCH, FRAMES, 40)).astype(np.float32),
             rng.integers(0, TINY_MODEL_FLAGS["num_train_identities"], BATCH))
            for _ in range(STEPS)]


def _iterator(trainer, batches):
    signature = (tf.TensorSpec((BATCH, 64, 64, 3)), tf.TensorSpec((BATCH, FRAMES, 40)),
                 tf.TensorSpec((BATCH,), tf.int64))
    return iter(trainer.distribute(lambda: tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=signature)))


def _trainable(trainer) -> dict:
    return {f"{name}/{w.path}": np.array(w.numpy()) for name, model in
            trainer.model_objects().items() for w in model.trainable_weights}


def _train(config, copy_from=None):
    """(trainer, every model weight at the start by model name, trainable weights before,
    values of each step, trainable weights after) of STEPS steps on _batches(); the models
    start from ``copy_from`` (a run's second item) when given."""
    keras.utils.set_random_seed(0)
    trainer = GanTrainer(config)
    if copy_from is not None:
        for name, model in trainer.model_objects().items():
            for target, value in zip(model.weights, copy_from[name]):
                target.assign(value)
    initial = {name: [np.array(w.numpy()) for w in model.weights]
               for name, model in trainer.model_objects().items()}
    before = _trainable(trainer)
    iterator = _iterator(trainer, _batches())
    values = [{k: float(v) for k, v in trainer.train_step(iterator).items()}
              for _ in range(STEPS)]
    return trainer, initial, before, values, _trainable(trainer)


@pytest.fixture(scope="module")
def float32_run():
    return _train(_config())


def _compare(reference, other, loss_rtol, update_rtol):
    _, _, before, values, after = reference
    _, _, other_before, other_values, other_after = other
    for name in before:
        np.testing.assert_array_equal(before[name], other_before[name], err_msg=name)
    for step, (expected, got) in enumerate(zip(values, other_values), start=1):
        for name in expected:
            if name.startswith(("loss/", "d_loss/")):
                assert got[name] == pytest.approx(expected[name], rel=loss_rtol, abs=1e-7), \
                    (step, name)
    update = np.concatenate([(after[k] - before[k]).ravel() for k in sorted(before)])
    other_update = np.concatenate([(other_after[k] - other_before[k]).ravel()
                                   for k in sorted(before)])
    assert np.all(np.isfinite(other_update))
    error = np.linalg.norm(other_update - update) / np.linalg.norm(update)
    assert np.linalg.norm(update) > 1e-3  # the steps did move the weights
    assert error < update_rtol, f"weight updates differ by {error:.3g} (relative)"
    return error


# -- XLA --------------------------------------------------------------------------------------

def test_xla_step_matches_the_graph_step(float32_run):
    xla_run = _train(_config(jit_compile=True), copy_from=float32_run[1])
    _compare(float32_run, xla_run, XLA_LOSS_RTOL, XLA_UPDATE_RTOL)
    trainer = xla_run[0]
    # One trace of the step; the per-replica computation is an XLA cluster.
    assert trainer.train_step.experimental_get_tracing_count() == 1
    graph = trainer.train_step.get_concrete_function(
        _iterator(trainer, _batches())).graph.as_graph_def()
    compiled = [f for f in graph.library.function
                if f.attr["_XlaMustCompile"].b and "local_gradients" in f.signature.name]
    assert compiled, "the per-replica gradients are not compiled with XLA"


# -- float16 with dynamic loss scaling --------------------------------------------------------

def test_mixed_float16_matches_float32_within_tolerance(float32_run):
    float16_run = _train(_config(mixed_precision="mixed_float16"), copy_from=float32_run[1])
    _compare(float32_run, float16_run, FLOAT16_LOSS_RTOL, FLOAT16_UPDATE_RTOL)
    trainer, values = float16_run[0], float16_run[3]
    assert trainer.models.generator.compute_dtype == "float16"
    assert all(v.dtype == "float32" for v in trainer.models.generator.weights)
    for name in ("generator", "image_discriminator", "identity_classifier"):
        assert values[-1][f"control/loss_scale/{name}"] == 2.0 ** 15  # no overflow


def test_planted_overflow_skips_the_step_and_halves_the_loss_scale():
    trainer = GanTrainer(_config(mixed_precision="mixed_float16", adam_epsilon=1e-8,
                                 learning_rate=5e-4))
    optimizers = trainer.optimizers()
    # float16 gradients overflow at this scale (the L1 term's pixel gradient alone is ~3e-4 of
    # it, float16's largest finite value 65504).
    for optimizer in optimizers.values():
        optimizer.dynamic_scale.assign(2.0 ** 40)
    iterator = _iterator(trainer, _batches())
    before = _trainable(trainer)
    values = {k: float(v) for k, v in trainer.train_step(iterator).items()}
    assert all(math.isfinite(v) for v in values.values()), values
    for name, weight in _trainable(trainer).items():
        np.testing.assert_array_equal(weight, before[name], err_msg=name)
    for name, optimizer in optimizers.items():
        assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 39, name
        assert int(optimizer.iterations.numpy()) == 0, name  # the inner Adam did not step
        assert values[f"control/loss_scale/{name.replace('_optimizer', '')}"] == 2.0 ** 39

    # At a workable scale the next step trains, and the scale stays until 2000 good steps.
    for optimizer in optimizers.values():
        optimizer.dynamic_scale.assign(2.0 ** 10)
    trainer.train_step(iterator)
    after = _trainable(trainer)
    assert all(not np.array_equal(after[name], before[name]) for name in before
               if "/conv/kernel" in name), "a convolution kernel did not train"
    for name, optimizer in optimizers.items():
        assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 10, name
        assert int(optimizer.iterations.numpy()) == 1, name
        assert int(optimizer.step_counter.numpy()) == 1, name


class _StartsOverflowing(GanTrainer):
    """A trainer whose loss scales start at 2^40, where every step overflows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for optimizer in self.optimizers().values():
            optimizer.dynamic_scale.assign(2.0 ** 40)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The training identities of test_training.py's dataset (no validation split needed)."""
    return write_tiny_dataset(str(tmp_path_factory.mktemp("prepared")),
                              {"train": [f"tr{i}" for i in range(NUM_TRAIN)]})


def test_loss_scale_state_is_checkpointed_and_resumed(data_dir, tmp_path, monkeypatch):
    model_dir = tmp_path / "run"
    config = make_config(model_dir, data_dir, mixed_precision="mixed_float16", train_steps=2,
                         checkpoint_every_steps=1)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "GanTrainer", _StartsOverflowing)
        result, seen = run(config)
    assert [seen[s]["control/loss_scale/generator"] for s in (1, 2)] == [2.0 ** 39, 2.0 ** 38]
    names = {name for name, _ in tf.train.list_variables(result.checkpoint)}
    for optimizer in ("generator_optimizer", "image_discriminator_optimizer",
                      "identity_classifier_optimizer"):
        assert f"{optimizer}/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE" in names
        assert f"{optimizer}/step_counter/.ATTRIBUTES/VARIABLE_VALUE" in names
        assert f"{optimizer}/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in names
    # Resumed by the plain trainer: a fresh one would start at 2^15 and train; the restored
    # 2^38 overflows once more and halves.
    config = make_config(model_dir, data_dir, mixed_precision="mixed_float16", train_steps=3,
                         checkpoint_every_steps=1)
    result, seen = run(config)
    assert sorted(seen) == [3]
    assert seen[3]["control/loss_scale/generator"] == 2.0 ** 37
    assert float(result.trainer.generator_optimizer.dynamic_scale.numpy()) == 2.0 ** 37


def test_precision_and_lever_flags_are_validated():
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        _config(mixed_precision="float16").validate(require_dirs=False)
    with pytest.raises(ValueError, match="fast_conv must be one of"):
        _config(fast_conv="yes").validate(require_dirs=False)
    config = TrainConfig.from_mapping({"jit_compile": "1", "fast_conv": "off",
                                       "mixed_precision": "mixed_float16",
                                       "perceptual_weight": 0.0})
    assert config.jit_compile is True and config.fast_conv == "off"
    config.validate(require_dirs=False)


# -- fast_conv --------------------------------------------------------------------------------

def test_fast_conv_decision(monkeypatch):
    decide = fast_conv.decide
    assert decide("on", ["GPU"])[0] and not decide("off", ["CPU"])[0]
    assert not decide("auto", ["GPU", "GPU"])[0]
    assert not decide("auto", ["CPU", "GPU"])[0]
    monkeypatch.setattr(fast_conv, "cpu_convolution_library", lambda: "eigen")
    on, reason = decide("auto", ["CPU"])
    assert on and "Eigen" in reason
    assert not decide("auto", ["CPU"], jit_compile=True)[0]
    monkeypatch.setattr(fast_conv, "cpu_convolution_library", lambda: "onednn")
    on, reason = decide("auto", ["CPU"])
    assert not on and "onednn" in reason
    with pytest.raises(ValueError, match="fast_conv mode must be one of"):
        decide("sometimes")


def _env_without_kernel_choice(setting=None):
    """This process's environment with TF_ENABLE_ONEDNN_OPTS as ``setting`` (None: unset, as
    a user who never chose), for a fresh Python that imports the package."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    return dict(env, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")


@pytest.mark.parametrize("setting,library", [(None, "onednn"), ("0", "eigen"),
                                             ("1", "onednn")])
def test_package_import_picks_onednn_unless_told(setting, library):
    """Importing the package before TensorFlow gives oneDNN's CPU kernels on every CPU kind
    (TensorFlow's own default is Eigen on AVX2-only CPUs); an explicit setting wins."""
    code = ("import keras_sf2f, tensorflow\n"
            "from keras_sf2f.models import fast_conv\n"
            "print(fast_conv.cpu_convolution_library())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_env_without_kernel_choice(setting), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == library


def _avx2_only_cpu():
    from keras_sf2f import machine  # noqa: PLC0415
    flags = machine.cpu_flags()
    return "avx2" in flags and "avx512f" not in flags


@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_single_request_processes_get_eigen_on_avx2_only_cpus(setting):
    """machine.prefer_eigen_for_single_requests (the development server calls it): Eigen's
    kernels on CPUs with AVX2 and no AVX-512 unless the user chose; never once TensorFlow has
    loaded (too late: it read the switch then). machine.user_environment() hands a subprocess
    the user's setting, not the package's default."""
    code = ("from keras_sf2f import machine\n"
            "child = machine.user_environment().get('TF_ENABLE_ONEDNN_OPTS')\n"
            "switched = machine.prefer_eigen_for_single_requests()\n"
            "import tensorflow\n"
            "from keras_sf2f.models import fast_conv\n"
            "late = machine.prefer_eigen_for_single_requests()\n"
            "print(switched, late, fast_conv.cpu_convolution_library(), child)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_env_without_kernel_choice(setting), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    switched, late, library, child = result.stdout.split()[-4:]
    assert child == str(setting)  # what a subprocess started with user_environment() gets
    expect_switch = setting is None and _avx2_only_cpu()
    assert switched == str(expect_switch) and late == "False"
    assert library == ("eigen" if expect_switch or setting == "0" else "onednn")


def test_development_server_chooses_its_kernels_before_tensorflow_loads(tmp_path):
    """export/serve.py makes the choice above before its first TensorFlow import, and says so."""
    (tmp_path / "m").mkdir()
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "export", "serve.py"),
         f"--model_base_path={tmp_path / 'm'}", "--rest_api_port=0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env_without_kernel_choice())
    try:
        line = process.stdout.readline()
    finally:
        # Stopped before its stderr is read: reading a live server's stderr would wait forever.
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert line.startswith("listening on"), err[-2000:]
    assert ("TensorFlow's Eigen kernels" in err) == _avx2_only_cpu(), err[-2000:]


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 7, 7, 16), (3, 3, 16, 8), (1, 1), "SAME"),     # stride 1, full correlation
    ((2, 3, 3, 24), (1, 1, 24, 8), (1, 1), "VALID"),    # 1x1: one matrix product
    ((2, 9, 9, 16), (3, 3, 16, 8), (2, 2), "VALID"),    # stride 2 by phases
    ((2, 1, 30, 16), (1, 4, 16, 8), (1, 3), "VALID"),   # strided 1-D
])
def test_fast_conv_gradients_equal_tensorflows_and_the_switch_works(shape, kernel, strides,
                                                                    padding):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    w = tf.constant(rng.normal(size=kernel).astype(np.float32))

    def gradients(on):
        with fast_conv.enabled(on):
            @tf.function
            def step(x, w):
                with tf.GradientTape() as tape:
                    tape.watch([x, w])
                    y = fast_conv.conv2d(x, w, strides, padding)
                    loss = tf.reduce_sum(y * tf.sin(y))
                return y, tape.gradient(loss, [x, w])
            ops = {op.type for op in step.get_concrete_function(x, w).graph.get_operations()}
        return step(x, w), ops

    (y_fast, (dx_fast, dw_fast)), ops_fast = gradients(True)
    (y_tf, (dx_tf, dw_tf)), ops_tf = gradients(False)
    np.testing.assert_array_equal(y_fast.numpy(), y_tf.numpy())
    np.testing.assert_allclose(dx_fast.numpy(), dx_tf.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_fast.numpy(), dw_tf.numpy(), rtol=1e-4, atol=1e-4)
    assert "Conv2DBackpropInput" in ops_tf
    assert "Conv2DBackpropInput" not in ops_fast


# -- GPU kernels ------------------------------------------------------------------------------

_GPU_KERNELS = {}


def _has_gpu_kernel(node) -> bool:
    """Whether TensorFlow registers a kernel for ``node`` (its op and dtype attributes) that
    runs on a GPU: a GPU kernel, or a DEFAULT one (any device, e.g. NoOp, shape arithmetic in
    host memory)."""
    if node.op not in _GPU_KERNELS:
        _GPU_KERNELS[node.op] = [k for k in kernels.get_registered_kernels_for_op(node.op).kernel
                                 if k.device_type in ("GPU", "DEFAULT")]
    for kernel in _GPU_KERNELS[node.op]:
        if all(not c.allowed_values.list.type or c.name not in node.attr
               or node.attr[c.name].type in c.allowed_values.list.type
               for c in kernel.constraint):
            return True
    return False


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_every_op_of_the_step_has_a_gpu_kernel(precision):
    """The CUDA build of TensorFlow registers its GPU kernels even on a machine without a GPU,
    so the traced step (as MirroredStrategy traces it, fast_conv as on a GPU) can be checked
    op by op for anything that would be placed on the CPU and copied every step."""
    if not tf.test.is_built_with_cuda():
        pytest.skip("this TensorFlow build has no GPU kernels to check against")
    trainer = GanTrainer(_config(mixed_precision=precision, fast_conv="off"),
                         tf.distribute.MirroredStrategy())
    zeros = (np.zeros((BATCH, 64, 64, 3), np.float32), np.zeros((BATCH, FRAMES, 40), np.float32),
             np.zeros((BATCH,), np.int64))
    iterator = iter(trainer.distribute(lambda: tf.data.Dataset.from_tensors(zeros).repeat()))
    graph = trainer.train_step.get_concrete_function(iterator).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    types = {n.op for n in nodes}
    assert {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"} <= types  # a real step
    # The input pipeline's ops run on the CPU in every TensorFlow program.
    host_input = {"IteratorGetNext", "MultiDeviceIteratorGetNextFromShard",
                  "OptionalGetValue", "OptionalHasValue", "IteratorGetNextAsOptional"}
    missing = sorted({n.op for n in nodes if n.op not in host_input and not _has_gpu_kernel(n)})
    assert not missing, f"ops without a GPU kernel in the step: {missing}"
    assert not types & {"PyFunc", "EagerPyFunc", "PrintV2", "Assert"}, types & {
        "PyFunc", "EagerPyFunc", "PrintV2", "Assert"}


# -- several local replicas (subprocesses with two logical CPU devices) -----------------------

REPLICAS_SCRIPT = textwrap.dedent("""
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
    TINY_MODEL_FLAGS = {tiny_model_flags!r}  # tests/test_training.py's

    B, T, W, STEPS = 4, 120, 2, 2
    TWO = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def config(**overrides):
        values = dict(model=builder.ModelConfig(**TINY_MODEL_FLAGS), batch_size=B,
                      perceptual_weight=0.0, adam_epsilon=1.0, learning_rate=0.1)
        values.update(overrides)
        return TrainConfig(**values)

    def per_replica_disagreement(trainer):
        # Largest difference between the replicas' copies of any variable: models (weights,
        # BatchNorm statistics) and optimizers (slots, iterations, loss scales).
        worst = 0.0
        variables = [w for m in trainer.model_objects().values() for w in m.weights]
        variables += [v for o in trainer.optimizers().values() for v in o.variables]
        for v in variables:
            copies = [c.numpy() for c in TWO.experimental_local_results(v.value)]
            assert len(copies) == 2, v.path
            worst = max(worst, float(np.max(np.abs(copies[0].astype(np.float64) -
                                                   copies[1].astype(np.float64)))))
        return worst

    def train(trainer, batches, initial=None):
        if initial is not None:
            for name, model in trainer.model_objects().items():
                for w, value in zip(model.weights, initial[name]):
                    w.assign(value)
        def weights():
            return {{f"{{n}}/{{w.path}}": w.numpy().tolist() for n, m in
                     trainer.model_objects().items() for w in m.weights}}

        before = weights()
        specs = tuple(tf.TensorSpec(b.shape, tf.as_dtype(b.dtype)) for b in batches[0])
        it = iter(trainer.distribute(lambda: tf.data.Dataset.from_generator(
            lambda: iter(batches), output_signature=specs)))
        values = [{{k: float(v) for k, v in trainer.train_step(it).items()}}
                  for _ in range(len(batches))]
        return values, weights(), before

    def initial_weights(trainer):
        return {{name: [w.numpy() for w in model.weights]
                 for name, model in trainer.model_objects().items()}}

    rng = np.random.default_rng(0)
    labels = lambda: rng.integers(0, TINY_MODEL_FLAGS["num_train_identities"], B)
    out = {{}}
    case = sys.argv[1]
    if case == "compare":
        # Stage 1 (BatchNorm in training mode everywhere): each global batch is two copies of
        # one half, so each replica's batch statistics are the global batch's.
        halves = [(rng.uniform(-1, 1, (B // 2, 64, 64, 3)).astype(np.float32),
                   rng.normal(size=(B // 2, T, 40)).astype(np.float32), labels()[:B // 2])
                  for _ in range(STEPS)]
        batches = [tuple(np.concatenate([x, x]) for x in half) for half in halves]
        # With a learning-rate decay (the second update at half the rate): the step sets the
        # decaying optimizers' learning-rate variables inside the replicas' function.
        decayed = dict(train_steps=STEPS, lr_decay_start_step=1, lr_decay_final_factor=0.5)
        one = GanTrainer(config(**decayed), tf.distribute.get_strategy())
        two = GanTrainer(config(**decayed), TWO)
        initial = initial_weights(one)
        out["stage1"] = dict(one=train(one, batches), two=train(two, batches, initial),
                             disagreement=per_replica_disagreement(two),
                             replicas=two.num_replicas)
        # Stage 2 without batch statistics (frozen encoder and decoder run in inference mode,
        # discriminators without normalization): distinct halves, exactly one replica's
        # step on the whole global batch.
        model = dict(TINY_MODEL_FLAGS, fuser="attention", discriminator_normalization_64="none")
        stage2 = dict(model=builder.ModelConfig(**model), train_fuser_only=True)
        batches = [(rng.uniform(-1, 1, (B, 64, 64, 3)).astype(np.float32),
                    rng.normal(size=(B, W, T, 40)).astype(np.float32),
                    np.array([[True, True], [True, False], [True, True], [True, False]]),
                    labels()) for _ in range(STEPS)]
        one = GanTrainer(config(**stage2), tf.distribute.get_strategy())
        two = GanTrainer(config(**stage2), TWO)
        initial = initial_weights(one)
        fuser_before = {{f"generator/{{w.path}}": w.numpy().tolist()
                         for w in one.models.generator.encoder.fuser.weights}}
        out["stage2"] = dict(one=train(one, batches), two=train(two, batches, initial),
                             disagreement=per_replica_disagreement(two),
                             fuser_before=fuser_before)
    else:
        # float16 with an overflow on the second replica only.
        class SecondReplicaOverflows(GanTrainer):
            def _local_gradients(self, batch):
                g, d, values = super()._local_gradients(batch)
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                g = list(g)
                g[-1] = g[-1] * tf.where(tf.equal(replica, 1), float("inf"), 1.0)
                return g, d, values

        trainer = SecondReplicaOverflows(config(mixed_precision="mixed_float16"), TWO)
        batches = [(rng.uniform(-1, 1, (B, 64, 64, 3)).astype(np.float32),
                    rng.normal(size=(B, T, 40)).astype(np.float32), labels())]
        generator_weights = lambda: {{f"g/{{w.path}}": w.numpy().tolist()
                                      for w in trainer.models.generator.trainable_weights}}
        before = generator_weights()
        values, weights, _ = train(trainer, batches)
        scales = {{name: [float(c.numpy()) for c in
                          TWO.experimental_local_results(o.dynamic_scale.value)]
                   for name, o in trainer.optimizers().items()}}
        out["overflow"] = dict(
            values=values, before=before, after=generator_weights(), scales=scales,
            disagreement=per_replica_disagreement(trainer),
            iterations={{n: int(o.iterations.numpy()) for n, o in trainer.optimizers().items()}})
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
""")


def _run_replicas(tmp_path, case):
    script = tmp_path / "replicas.py"
    script.write_text(REPLICAS_SCRIPT.format(tiny_model_flags=TINY_MODEL_FLAGS))
    output = tmp_path / f"{case}.json"
    started = time.monotonic()
    process = subprocess.run([sys.executable, str(script), case, str(output)],
                             capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert process.returncode == 0, process.stderr[-4000:]
    print(f"{case}: {time.monotonic() - started:.0f} s")
    return json.loads(output.read_text())


def _assert_same_run(one, two, loss_rtol, weight_atol, moved_fraction=0.02):
    """Same losses (to ``loss_rtol``) and weights: every tensor of the two-replica run within
    ``weight_atol`` or ``moved_fraction`` of how far training moved that tensor, whichever is
    larger. Sums in another order round differently, and BatchNorm over two examples per
    replica and Adam amplify that by the thread scheduling of the run (differences up to
    2.4e-5 seen on a tensor that moved ~1e-3): float noise is a small fraction of the update,
    while a wrong reduction (a replica's gradient lost or counted twice) is about half of it."""
    (values_one, weights_one, before), (values_two, weights_two, before_two) = one, two
    for expected, got in zip(values_one, values_two):
        assert set(expected) == set(got)
        for name in expected:
            assert got[name] == pytest.approx(expected[name], rel=loss_rtol, abs=1e-7), name
    assert set(weights_one) == set(weights_two) == set(before)
    for name in weights_one:
        np.testing.assert_array_equal(before_two[name], before[name], err_msg=name)
        moved = float(np.max(np.abs(np.subtract(weights_one[name], before[name])), initial=0))
        np.testing.assert_allclose(weights_two[name], weights_one[name], rtol=0,
                                   atol=max(weight_atol, moved_fraction * moved),
                                   err_msg=name)


def test_two_local_replicas_match_one_replica_on_the_global_batch(tmp_path):
    out = _run_replicas(tmp_path, "compare")
    stage1, stage2 = out["stage1"], out["stage2"]
    assert stage1["replicas"] == 2
    # Every replica's copy of every variable is the same after the steps.
    assert stage1["disagreement"] == 0.0 and stage2["disagreement"] == 0.0
    # Losses are global-batch means and the summed gradients the global batch's: the runs
    # agree to float rounding (sums in another order). Weights include BatchNorm statistics.
    _assert_same_run(stage1["one"], stage1["two"], loss_rtol=1e-5, weight_atol=1e-5)
    _assert_same_run(stage2["one"], stage2["two"], loss_rtol=1e-5, weight_atol=1e-5)
    # Stage 2 trained the fuser (whose weights were compared above).
    assert stage2["fuser_before"]
    for name, before in stage2["fuser_before"].items():
        assert not np.array_equal(stage2["one"][1][name], before), name


def test_overflow_on_one_replica_skips_the_step_on_every_replica(tmp_path):
    out = _run_replicas(tmp_path, "overflow")["overflow"]
    # Keras' LossScaleOptimizer alone looks at the first replica's gradients; the trainer
    # makes the second replica's overflow count.
    for name in out["before"]:
        np.testing.assert_array_equal(out["after"][name], out["before"][name], err_msg=name)
    assert out["scales"]["generator_optimizer"] == [2.0 ** 14, 2.0 ** 14]
    assert out["iterations"]["generator_optimizer"] == 0
    # The discriminators' gradients were finite everywhere: they trained at the same scale.
    assert out["scales"]["image_discriminator_optimizer"] == [2.0 ** 15, 2.0 ** 15]
    assert out["iterations"]["image_discriminator_optimizer"] == 1
    assert out["disagreement"] == 0.0
    assert all(math.isfinite(v) for v in out["values"][0].values())
