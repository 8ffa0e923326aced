"""Training-step throughput, Keras against PyTorch: G + D updates per second.

    python benchmarks/bench_training.py [--bench_quick]     # the suite measure() runs
    python benchmarks/bench_training.py --bench_configs=sf2f_64,sf2f_128 \
        --bench_precisions=float32,mixed_bfloat16 --bench_batch_size=64 \
        [--nobench_torch] [--bench_face_network=full|small] [any model/training flag override]
    python benchmarks/bench_training.py --bench_configs=sf2f_64 --bench_precisions=float32 \
        --nobench_torch --bench_profile_dir=/tmp/prof          # + where the Keras step's time goes

Every case runs in subprocesses, one per framework, so TensorFlow and PyTorch never share a
process or fight over threads; both get the same thread count (``--bench_threads``, default all
usable cores: TF's intra-op pool and ``torch.set_num_threads``). Each side builds the
configuration's models from ``configs/<name>.cfg`` (plus overrides), the perceptual loss's face
network when the configuration has one (``--bench_face_network``: the reference's full
InceptionResnetV1 by default, or the project's ``FaceNet.small`` topology; the same network on
both sides, untrained -- trained weights cost the same), runs the first step (Keras: includes
tracing), ``--bench_warmup`` more, then times ``--bench_steps`` steps on one synthetic batch
(1.25 s crops, or for stage-2 configurations stacks of ``fuser_windows`` 1.25 s windows, and
images of the model's size). Stage-2 configurations (``--train_fuser_only``) time the stage-2
step: frozen encoder and decoder, fuser and discriminators trained.

The Keras step is ``keras_sf2f.training.trainer.GanTrainer.train_step``; the PyTorch step is
``benchmarks/torch_sf2f_step.py`` (the same losses and updates on the project's independent
PyTorch definitions of the reference modules).

FLOPs per step are counted, not estimated: on the PyTorch side with
``torch.utils.flop_counter.FlopCounterMode`` during one extra step (the step's mathematical
matrix-product and convolution FLOPs, forward and backward), on the Keras side from the traced
``tf.function`` graph (``graph_flops``: every Conv2D / Conv2DBackpropInput /
Conv2DBackpropFilter / MatMul / BatchMatMul the function actually executes, i.e. reachable from
its outputs and stateful ops, shapes from the graph). 2 FLOPs per multiply-add; elementwise work
(BatchNorm, activations, Adam) is not counted on either side. The two counts agreeing (the
Keras graph's is 1-3% higher, see the notes) is a check that both frameworks run the same
step; achieved GFLOP/s of both use the PyTorch count.

``measure(quick)`` (used by benchmarks/run.py) returns ``{"rows": [...], "notes": [...]}``;
each row is a dict with

  name                  "<config> <precision> b<batch>" (+ windows for stage-2 configurations)
  config, precision, batch, windows (stage 2, else None), face_network, threads
  keras_steps_per_s     Keras G+D steps per second (None if that side failed)
  torch_steps_per_s     PyTorch G+D steps per second (None if not run or failed)
  ratio                 keras_steps_per_s / torch_steps_per_s (>= 1: Keras at least as fast)
  gflop_per_step        GFLOP (10^9 FLOPs) of one step: the PyTorch count when PyTorch ran,
                        else the Keras graph's
  keras_graph_gflop_per_step  GFLOP the traced Keras graph executes (graph_flops)
  torch_gflop_per_step  GFLOP counted by PyTorch's FlopCounterMode during one step
  keras_gflops          gflop_per_step * keras_steps_per_s (achieved GFLOP/s)
  torch_gflops          gflop_per_step * torch_steps_per_s
  keras_s_per_step, torch_s_per_step          wall seconds per timed step
  keras_cpu_s_per_step, torch_cpu_s_per_step  process CPU seconds per timed step
  keras_first_step_s, torch_first_step_s      first step (Keras: tracing included)
  keras_traces          how often the Keras step was traced (1 expected)
  load_before           1-minute load average before the row's runs (a busy machine shows)
  errors                {"keras"|"torch": last lines of stderr} for a failed side, and
                        "keras_flops" when some op could not be counted
  keras_profile         (only with --bench_profile_dir) printable profile summary lines

and ``notes`` says how the figures were taken. ``--bench_quick`` keeps the suite to a few
minutes (small batches, two timed steps, sf2f_64 and a small stage-2 batch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app, flags

from keras_sf2f import flags as sf2f_flags

flags.DEFINE_list("bench_configs", ["sf2f_64", "sf2f_128"], "configs/<name>.cfg to time "
                  "(giving this or --bench_precisions runs that grid instead of the suite).")
flags.DEFINE_list("bench_precisions", ["float32", "mixed_bfloat16"], "Dtype policies to time.")
flags.DEFINE_integer("bench_batch_size", 64, "Global batch size.")
flags.DEFINE_integer("bench_steps", 5, "Timed steps (after the first, traced, step and "
                     "--bench_warmup more).")
flags.DEFINE_integer("bench_warmup", 1, "Untimed steps after the first one.")
flags.DEFINE_bool("bench_quick", False, "Run the quick suite (a few minutes).")
flags.DEFINE_bool("bench_torch", True, "Also time the PyTorch step.")
flags.DEFINE_enum("bench_face_network", "full", ["full", "small"],
                  "Perceptual-loss face network on both sides: 'full' InceptionResnetV1 (the "
                  "reference's) or 'small' (FaceNet.small).")
flags.DEFINE_integer("bench_threads", 0, "Intra-op threads of both frameworks (0: all usable "
                     "cores).")
flags.DEFINE_integer("bench_inter_op_threads", 0, "TensorFlow inter-op threads (0: TF's "
                     "default).")
flags.DEFINE_integer("bench_fuser_windows", 0, "Windows per identity for stage-2 "
                     "configurations (0: the configuration's --fuser_windows).")
flags.DEFINE_bool("bench_jit_compile", False, "Keras side: train with --jit_compile (each "
                  "replica's forward and backward pass compiled with XLA).")
flags.DEFINE_string("bench_profile_dir", None, "Keras side: after timing, profile "
                    "--bench_profile_steps steps with tf.profiler into this directory and "
                    "print where the time goes.")
flags.DEFINE_integer("bench_profile_steps", 2, "Steps under the profiler.")
flags.DEFINE_bool("bench_resolve_config", False, "Internal: print the resolved training "
                  "configuration as one JSON line.")
flags.DEFINE_string("bench_case", None, "Internal: run one Keras case 'config:precision' and "
                    "print one JSON line.")
FLAGS = flags.FLAGS
# The training tool's options as trainers/train.py has them: a case is a configuration's
# flagfile plus overrides.
sf2f_flags.define_groups(sf2f_flags.tool_groups("train"), FLAGS)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_DIR = os.path.join(_REPO_ROOT, "configs")
_TORCH_SCRIPT = os.path.join(_REPO_ROOT, "benchmarks", "torch_sf2f_step.py")
_FRAMES = 125


@dataclasses.dataclass
class Case:
    config: str
    precision: str = "float32"
    batch: int = 64
    steps: int = 5
    warmup: int = 1
    windows: int = 0  # 0: the configuration's fuser_windows (stage-2 configurations only)
    face_network: str = "full"
    torch: bool = True
    torch_count_flops: bool = True  # the count costs one more step


# -- FLOPs of a traced step ------------------------------------------------------------------

def _product(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _op_flops(op):
    """FLOPs of one matrix-product / convolution op from its static shapes; None for other
    ops; raises ValueError when a shape needed is unknown."""
    kind = op.type

    def dims(shape):
        values = shape.as_list() if shape.rank is not None else None
        if values is None or any(v is None for v in values):
            raise ValueError(f"{op.name} ({kind}) has an unknown shape {shape}")
        return values

    if kind == "Conv2D":
        kh, kw, cin, _ = dims(op.inputs[1].shape)
        return 2 * _product(dims(op.outputs[0].shape)) * kh * kw * cin
    if kind == "Conv2DBackpropInput":
        kh, kw, cin, _ = dims(op.inputs[1].shape)
        return 2 * _product(dims(op.inputs[2].shape)) * kh * kw * cin
    if kind == "Conv2DBackpropFilter":
        kh, kw, cin, _ = dims(op.outputs[0].shape)
        return 2 * _product(dims(op.inputs[2].shape)) * kh * kw * cin
    if kind == "MatMul":
        a = dims(op.inputs[0].shape)
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return 2 * _product(dims(op.outputs[0].shape)) * k
    if kind in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = dims(op.inputs[0].shape)
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return 2 * _product(dims(op.outputs[0].shape)) * k
    if any(word in kind for word in ("Conv", "MatMul", "Einsum")):
        raise ValueError(f"{op.name}: uncounted op type {kind}")
    return None


def graph_flops(graph) -> dict:
    """FLOPs of the matrix products and convolutions a traced function executes.

    Gradient functions build ops whose results nobody uses (e.g. the filter gradient of a
    frozen network's convolution); the function runtime prunes them, so only ops reachable
    from the graph's outputs and control outputs (its stateful updates) are counted.
    Returns {"flops": total, "by_type": {op type: flops}, "by_op": {op name: flops},
    "problems": [...]}."""
    stack = [t.op for t in graph.outputs] + list(graph.control_outputs)
    seen, total, by_type, by_op, problems = set(), 0, {}, {}, []
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            problems.append(f"nested function call {op.name} not counted")
            continue
        try:
            flops = _op_flops(op)
        except ValueError as e:
            problems.append(str(e))
            continue
        if flops:
            total += flops
            by_type[op.type] = by_type.get(op.type, 0) + flops
            by_op[op.name] = flops
    return {"flops": float(total), "by_type": by_type, "by_op": by_op, "problems": problems}


# -- profile summary -------------------------------------------------------------------------

def summarize_profile(log_dir: str, steps: int, flops_by_op=None, top: int = 30) -> list[str]:
    """Self time per TF op type, per top-level scope and per op from the host trace that
    tf.profiler wrote under ``log_dir``, per step, with the achieved GFLOP/s of the counted
    ops (``flops_by_op``: op name -> FLOPs, from ``graph_flops``); returns printable lines."""
    flops_by_op = flops_by_op or {}
    import glob  # noqa: PLC0415

    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    paths = sorted(glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        return [f"no trace under {log_dir}"]
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    by_type, by_scope, by_op = {}, {}, {}
    busy = 0
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            # Self time: an event's duration minus that of the events nested directly in it.
            children = [0] * len(events)
            open_events = []  # (index, end) of the enclosing events
            for index, event in enumerate(events):
                while open_events and open_events[-1][1] <= event.offset_ps:
                    open_events.pop()
                if open_events:
                    children[open_events[-1][0]] += event.duration_ps
                open_events.append((index, event.offset_ps + event.duration_ps))
            for index, event in enumerate(events):
                name = names.get(event.metadata_id, "?").split("#")[0]
                # Op events are "<op name>:<op type>"; runtime events ("Executor::Run") are not
                # ops, and the function-call event only waits for them.
                if ":" not in name or "::" in name or name.startswith(("Eager", "Thread", "$")):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                t = max(event.duration_ps - children[index], 0)
                busy += t
                by_type[op_type] = by_type.get(op_type, 0) + t
                scope = op_name.split("/")[0] if "/" in op_name else op_name
                if op_name.startswith("gradient_tape/"):
                    scope = "gradient_tape/" + op_name.split("/")[1]
                by_scope[scope] = by_scope.get(scope, 0) + t
                by_op[name] = by_op.get(name, 0) + t
    ms = 1e9 * steps  # picoseconds -> milliseconds per step
    lines = [f"profile {paths[-1]}: op self time {busy / ms:.0f} ms/step (summed over threads)"]
    for title, table in (("op type", by_type), ("scope", by_scope), ("op", by_op)):
        lines.append(f"  by {title}:")
        for key, value in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            rate = ""
            if title == "op" and flops_by_op.get(key.rsplit(":", 1)[0]):
                seconds = value / 1e12 / steps
                rate = f"  {flops_by_op[key.rsplit(':', 1)[0]] / 1e9 / seconds:7.1f} GFLOP/s"
            lines.append(f"    {value / ms:9.1f} ms/step  {100 * value / max(busy, 1):5.1f}%  "
                         f"{key}{rate}")
    counted = sum(v for k, v in by_op.items() if flops_by_op.get(k.rsplit(":", 1)[0]))
    if counted:
        gflop = sum(flops_by_op.values()) / 1e9
        lines.append(f"  counted ops: {counted / ms:.0f} ms/step of op time for {gflop:.1f} "
                     f"GFLOP = {gflop / (counted / 1e12 / steps):.1f} GFLOP/s per busy thread")
    return lines


# -- one Keras case (subprocess body) --------------------------------------------------------

def run_case(config_name: str, precision: str) -> dict:
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    threads = FLAGS.bench_threads or len(os.sched_getaffinity(0))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    if FLAGS.bench_inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.bench_inter_op_threads)

    from keras_sf2f.models.facenet import FACENET_INPUT_SIZE, FaceNet  # noqa: PLC0415
    from keras_sf2f.training.config import TrainConfig  # noqa: PLC0415
    from keras_sf2f.training.trainer import GanTrainer, dtype_policy  # noqa: PLC0415

    config = sf2f_flags.build(TrainConfig, FLAGS)
    config.batch_size = FLAGS.bench_batch_size
    config.mixed_precision = precision
    # The training flag itself, so the benchmark times exactly what training runs with it.
    config.jit_compile = FLAGS.bench_jit_compile
    b = config.batch_size
    size = config.model.image_size
    windows = FLAGS.bench_fuser_windows or config.fuser_windows

    def face_network():
        with dtype_policy(precision):
            model = FaceNet() if FLAGS.bench_face_network == "full" else FaceNet.small()
            model.build((None, FACENET_INPUT_SIZE, FACENET_INPUT_SIZE, 3))
        return model

    t0 = time.perf_counter()
    trainer = GanTrainer(config, tf.distribute.get_strategy(),
                         face_network=face_network if config.perceptual_weight > 0 else None)
    built = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(b, size, size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, config.model.num_train_identities, b), tf.int64)
    mel_bins = config.model.num_mel_bins
    if trainer.uses_fuser_batches:
        segments = rng.normal(size=(b, windows, _FRAMES, mel_bins)).astype(np.float32)
        batch = (images, tf.constant(segments), tf.ones([b, windows], tf.bool), labels)
    else:
        mels = rng.normal(size=(b, _FRAMES, mel_bins)).astype(np.float32)
        batch = (images, tf.constant(mels), labels)
    iterator = iter(trainer.distribute(lambda: tf.data.Dataset.from_tensors(batch).repeat()))
    t0 = time.perf_counter()
    trainer.train_step(iterator)
    first = time.perf_counter() - t0
    for _ in range(FLAGS.bench_warmup):
        trainer.train_step(iterator)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(FLAGS.bench_steps):
        values = trainer.train_step(iterator)
    float(values["loss/total_loss"])
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0

    counted = graph_flops(trainer.train_step.get_concrete_function(iterator).graph)
    result = {"framework": "keras", "config": config_name, "precision": precision, "batch": b,
              "windows": windows if trainer.uses_fuser_batches else None,
              "face_network": FLAGS.bench_face_network, "threads": threads,
              "inter_op_threads": FLAGS.bench_inter_op_threads or None,
              "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
              "jit_compile": FLAGS.bench_jit_compile,
              "fast_conv": trainer.fast_conv_reason,
              "steps_per_s": FLAGS.bench_steps / elapsed,
              "s_per_step": elapsed / FLAGS.bench_steps,
              "examples_per_s": FLAGS.bench_steps * b / elapsed,
              "cpu_s_per_step": cpu / FLAGS.bench_steps, "build_s": built, "first_step_s": first,
              "flops_per_step": counted["flops"], "flops_by_type": counted["by_type"],
              "flop_count_problems": counted["problems"][:5],
              "traces": trainer.train_step.experimental_get_tracing_count(),
              "train_config": config.to_dict()}
    if FLAGS.bench_profile_dir:
        tf.profiler.experimental.start(FLAGS.bench_profile_dir)
        for _ in range(FLAGS.bench_profile_steps):
            values = trainer.train_step(iterator)
        float(values["loss/total_loss"])
        tf.profiler.experimental.stop()
        result["profile"] = summarize_profile(FLAGS.bench_profile_dir, FLAGS.bench_profile_steps,
                                              counted["by_op"])
    return result


# -- running cases in subprocesses -----------------------------------------------------------

def _run_json(cmd: list[str]) -> tuple[dict | None, str | None]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=_REPO_ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return None, (out.stderr or out.stdout)[-3000:]
    return json.loads(lines[-1][len("RESULT "):]), None


def _config_flags(case: Case, overrides: list[str]) -> list[str]:
    return [f"--flagfile={os.path.join(_CONFIG_DIR, case.config + '.cfg')}", *overrides]


def _bench_flags(case: Case, threads: int) -> list[str]:
    return [f"--bench_batch_size={case.batch}", f"--bench_steps={case.steps}",
            f"--bench_warmup={case.warmup}", f"--bench_face_network={case.face_network}",
            f"--bench_threads={threads}", f"--bench_fuser_windows={case.windows}"]


def run_cases(cases, overrides=(), threads: int = 0, inter_op_threads: int = 0,
              profile_dir: str | None = None, jit_compile: bool = False, log=print) -> dict:
    """Runs each case on both frameworks (PyTorch only where ``case.torch``); returns
    ``{"rows": [...], "notes": [...]}`` as documented in the module docstring."""
    threads = threads or len(os.sched_getaffinity(0))
    overrides = list(overrides)
    rows = []
    for case in cases:
        load = os.getloadavg()[0]
        config_flags = _config_flags(case, overrides)
        bench_flags = _bench_flags(case, threads)
        keras_cmd = [sys.executable, os.path.abspath(__file__), *config_flags, *bench_flags,
                     f"--bench_case={case.config}:{case.precision}",
                     f"--bench_inter_op_threads={inter_op_threads}"]
        if profile_dir:
            keras_cmd.append(f"--bench_profile_dir={profile_dir}")
        if jit_compile:
            keras_cmd.append("--bench_jit_compile")
        keras, keras_error = _run_json(keras_cmd)
        torch, torch_error = None, None
        if case.torch:
            # The resolved configuration travels as JSON so that the PyTorch process never
            # imports TensorFlow (the configuration flags' validator would).
            resolved = (keras or {}).get("train_config")
            if resolved is None:
                resolved, torch_error = _run_json([sys.executable, os.path.abspath(__file__),
                                                   *config_flags, "--bench_resolve_config"])
            if resolved is not None:
                torch, torch_error = _run_json([
                    sys.executable, _TORCH_SCRIPT, *bench_flags,
                    f"--bench_config_json={json.dumps(resolved)}",
                    f"--bench_precision={case.precision}", f"--bench_frames={_FRAMES}",
                    "--bench_count_flops" if case.torch_count_flops
                    else "--nobench_count_flops"])
        source = keras or torch or {}
        windows = source.get("windows")
        name = f"{case.config} {case.precision} b{case.batch}"
        if windows:
            name += f" x{windows} windows"
        row = {"name": name, "config": case.config, "precision": case.precision,
               "batch": case.batch, "windows": windows, "face_network": case.face_network,
               "threads": threads, "load_before": round(load, 2), "errors": {}}
        for prefix, result, error in (("keras", keras, keras_error),
                                      ("torch", torch, torch_error)):
            if error:
                row["errors"][prefix] = error
            result = result or {}
            row[f"{prefix}_steps_per_s"] = result.get("steps_per_s")
            row[f"{prefix}_s_per_step"] = result.get("s_per_step")
            row[f"{prefix}_cpu_s_per_step"] = result.get("cpu_s_per_step")
            row[f"{prefix}_first_step_s"] = result.get("first_step_s")
        keras_flops = (keras or {}).get("flops_per_step")
        torch_flops = (torch or {}).get("flops_per_step")
        model_flops = torch_flops or keras_flops
        row["gflop_per_step"] = model_flops / 1e9 if model_flops else None
        row["keras_graph_gflop_per_step"] = keras_flops / 1e9 if keras_flops else None
        row["torch_gflop_per_step"] = torch_flops / 1e9 if torch_flops else None
        for prefix, result in (("keras", keras), ("torch", torch)):
            row[f"{prefix}_gflops"] = (row["gflop_per_step"] * result["steps_per_s"]
                                       if model_flops and result else None)
        row["ratio"] = (row["keras_steps_per_s"] / row["torch_steps_per_s"]
                        if keras and torch else None)
        row["keras_traces"] = (keras or {}).get("traces")
        if keras and keras.get("flop_count_problems"):
            row["errors"]["keras_flops"] = "; ".join(keras["flop_count_problems"])
        if keras and keras.get("profile"):
            row["keras_profile"] = keras["profile"]
        rows.append(row)
        log(_row_line(row))
    notes = [
        f"G+D training steps on one synthetic batch, {threads} threads per framework "
        f"(TF intra-op pool / torch.set_num_threads), each framework in its own process.",
        "PyTorch step: benchmarks/torch_sf2f_step.py." if any(c.torch for c in cases)
        else "PyTorch not run.",
        "Mel inputs are 125-frame crops (stage 2: stacks of 125-frame windows); the perceptual "
        "loss uses the same untrained face network on both sides.",
        "GFLOP/step: matrix-product and convolution FLOPs of the step (2 per multiply-add, "
        "forward and backward; elementwise work not counted) as PyTorch's FlopCounterMode "
        "counts them; both frameworks' GFLOP/s use that figure. The Keras graph's own count "
        "(ops it executes) is 1-3% higher: some of its input gradients are computed as "
        "convolutions over zero-padded maps (keras_sf2f/models/fast_conv.py).",
        "ratio = Keras steps/s / PyTorch steps/s (>= 1: Keras at least as fast). The first "
        "Keras step includes tracing.",
    ]
    busy = [r["name"] for r in rows if r["load_before"] > threads + 0.5]
    if busy:
        notes.append(f"The machine was busy (1-minute load above {threads}) before: "
                     + ", ".join(busy) + ". Both frameworks slow down then; PyTorch's OpenMP "
                     "threads spin-wait for descheduled peers, so it loses more than "
                     "TensorFlow's thread pool and the ratio flatters Keras.")
    mismatched = [r["name"] for r in rows
                  if r["keras_graph_gflop_per_step"] and r["torch_gflop_per_step"]
                  and abs(r["keras_graph_gflop_per_step"] / r["torch_gflop_per_step"] - 1) > 0.05]
    if mismatched:
        notes.append("FLOP counts of the two frameworks differ by more than 5% for: "
                     + ", ".join(mismatched))
    return {"rows": rows, "notes": notes}


def native_bfloat16() -> bool:
    """True when the CPU computes bfloat16 natively (AMX-BF16 or AVX512_BF16: oneDNN's
    bfloat16 kernels); elsewhere both frameworks emulate it at about a tenth of float32."""
    from keras_sf2f import machine  # noqa: PLC0415
    return bool(machine.cpu_flags() & {"amx_bf16", "avx512_bf16"})


def suite(quick: bool, native_bf16: bool | None = None) -> list[Case]:
    """The cases measure() runs; ``native_bf16`` (default: this CPU's) picks the bfloat16
    cases' size."""
    if quick:
        return [Case("sf2f_64", "float32", batch=16, steps=2, warmup=1),
                Case("sf2f_64_fuser", "float32", batch=4, steps=2, warmup=1)]
    if native_bf16 is None:
        native_bf16 = native_bfloat16()
    if native_bf16:
        # Native bfloat16: the same batch as float32, so the step is compared with both
        # PyTorch's bfloat16 step and its float32 step of the float32 row.
        bf16 = dict(batch=64, steps=3, warmup=1)
    else:
        # Emulated bfloat16 (~40 and ~80 s per batch-8 step in the two frameworks): batch 8
        # and one timed step, or the suite would take most of an hour more. Its FLOPs are
        # float32's, counted once.
        bf16 = dict(batch=8, steps=1, warmup=0, torch_count_flops=False)
    return [Case("sf2f_64", "float32", batch=64, steps=5, warmup=1),
            Case("sf2f_64", "mixed_bfloat16", **bf16),
            Case("sf2f_128", "float32", batch=64, steps=3, warmup=1),
            Case("sf2f_128", "mixed_bfloat16", **bf16),
            Case("sf2f_64_fuser", "float32", batch=64, steps=3, warmup=1)]


def measure(quick: bool) -> dict:
    """Keras vs PyTorch training-step throughput for the suite (``suite(quick)``).

    Returns ``{"rows": [...], "notes": [...]}``; the row keys are listed in the module
    docstring. ``quick`` takes a few minutes; the full suite about half an hour on 2 idle
    cores (float32 at batch 64, bfloat16 at batch 64 where the CPU has it natively and at
    batch 8 where it is emulated, stage 2 at batch 64 x 20 windows)."""
    return run_cases(suite(quick), log=lambda line: print(line, file=sys.stderr, flush=True))


# -- printing --------------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row_line(row) -> str:
    text = (f"  {row['name']}: keras {_fmt(row['keras_steps_per_s'], '.3f')} steps/s, "
            f"(CPU {_fmt(row['keras_cpu_s_per_step'], '.1f')} s/step), "
            f"torch {_fmt(row['torch_steps_per_s'], '.3f')} steps/s "
            f"(CPU {_fmt(row['torch_cpu_s_per_step'], '.1f')} s/step), ratio "
            f"{_fmt(row['ratio'], '.2f')}, {_fmt(row['gflop_per_step'], '.0f')} GFLOP/step "
            f"(Keras graph {_fmt(row['keras_graph_gflop_per_step'], '.0f')}), load "
            f"{row['load_before']}")
    for side, error in row["errors"].items():
        text += f"\n    {side} failed: {error.strip().splitlines()[-1] if error.strip() else ''}"
    return text


def print_table(result: dict) -> None:
    print("\n| case | Keras steps/s | PyTorch steps/s | Keras/PyTorch | GFLOP/step (Keras graph) "
          "| Keras GFLOP/s | PyTorch GFLOP/s | Keras first step s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['name']} | {_fmt(r['keras_steps_per_s'], '.3f')} | "
              f"{_fmt(r['torch_steps_per_s'], '.3f')} | {_fmt(r['ratio'], '.2f')} | "
              f"{_fmt(r['gflop_per_step'], '.1f')} "
              f"({_fmt(r['keras_graph_gflop_per_step'], '.1f')}) | "
              f"{_fmt(r['keras_gflops'], '.1f')} | {_fmt(r['torch_gflops'], '.1f')} | "
              f"{_fmt(r['keras_first_step_s'], '.0f')} |")
    for note in result["notes"]:
        print(f"- {note}")
    for r in result["rows"]:
        for line in r.get("keras_profile", []):
            print(line)


def main(argv):
    del argv
    if FLAGS.bench_resolve_config:
        from keras_sf2f.training.config import TrainConfig  # noqa: PLC0415
        print("RESULT " + json.dumps(sf2f_flags.build(TrainConfig, FLAGS).to_dict()), flush=True)
        return
    if FLAGS.bench_case:
        name, precision = FLAGS.bench_case.split(":")
        print("RESULT " + json.dumps(run_case(name, precision)), flush=True)
        return
    grid = any(FLAGS[name].present for name in (
        "bench_configs", "bench_precisions", "bench_batch_size", "bench_steps", "bench_warmup"))
    if grid:
        cases = [Case(name, precision, FLAGS.bench_batch_size, FLAGS.bench_steps,
                      FLAGS.bench_warmup)
                 for name in FLAGS.bench_configs for precision in FLAGS.bench_precisions]
    else:
        cases = suite(FLAGS.bench_quick)
    for case in cases:
        case.face_network = FLAGS.bench_face_network
        case.torch = FLAGS.bench_torch
        case.windows = FLAGS.bench_fuser_windows or case.windows
    overrides = [a for a in sys.argv[1:]
                 if not a.startswith(("--bench_", "--nobench_", "--flagfile"))]
    result = run_cases(cases, overrides, threads=FLAGS.bench_threads,
                       inter_op_threads=FLAGS.bench_inter_op_threads,
                       profile_dir=FLAGS.bench_profile_dir,
                       jit_compile=FLAGS.bench_jit_compile)
    print_table(result)


if __name__ == "__main__":
    app.run(main)
