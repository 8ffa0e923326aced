"""Per-module forward time and peak memory vs audio length t and image width w (seed Table 7).

    python benchmarks/bench_modules.py [--quick] [--json=OUT.json]

The SF2F supplementary's Table 7 gives the time and space complexity of each component as a
function of t (length of the input audio) and w (width of the output face): the 1D-CNN voice
encoder is linear in t, the attention fuser's scores are quadratic in the number of 1.25 s
segments (t / 1.25 s), the decoder and the discriminators depend on w only. This benchmark
measures those functions on this machine instead of stating them:

* voice encoder (SF2F inception encoder, configs/sf2f_64.cfg) on one crop of t seconds
  (100 frames per second; the reference's infer.py feeds whole utterances this way);
* attention fuser on t / 1.25 s segment embeddings (the stage-2 protocol cuts 1.25 s windows);
* face decoder for w = 64 (upconv_64) and w = 128 (upconv_multires, which also emits 64);
* image (patch) discriminator and identity classifier (AC discriminator, 2,890 identities)
  for w = 64 and w = 128 (configs/sf2f_128.cfg).

At batch 1 (inference) and, in full mode, at the reference's training batch (256: stage-1
crops of 1.25 s, images; the fuser with 20 windows per identity). Each case runs in two fresh
subprocesses. One times the forward (a ``tf.function`` of the module in inference mode with the
case's static shapes): median of repeated forwards after a warm-up forward; FLOPs from
TensorFlow's graph profiler on the same function (convolutions and matrix products,
multiply-add = 2 FLOPs; element-wise ops are not counted). The other is started with
``TF_CPU_ALLOCATOR_USE_BFC=true``: with TensorFlow's default CPU allocator
``tf.config.experimental.get_memory_info('CPU:0')`` fails ("Allocator stats not available"),
with the BFC allocator it reports the peak; the forward's peak memory is that peak minus what
the allocator held before (weights, input). tracemalloc does not see TensorFlow's
allocations; the growth of the process's peak RSS is kept in the JSON as a cross-check.

The fitted exponent column is the log-log slope of time (and memory) between consecutive
lengths of the same module: 1 means linear in t, 2 quadratic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import keras_sf2f  # noqa: E402,F401  (before TensorFlow: sets its CPU kernel default)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FRAMES_PER_SECOND = 100
WINDOW_SECONDS = 1.25
TRAIN_BATCH = 256          # the reference's batch size (GETTING_STARTED.md command lines)
FUSER_TRAIN_WINDOWS = 20   # windows per identity in stage-2 training


def cases(quick: bool) -> list[dict]:
    """The (module, size, batch) grid. Quick mode keeps batch 1 and fewer lengths."""
    out = []
    encoder_seconds = (1.25, 5, 30) if quick else (1.25, 5, 30, 120, 480)
    fuser_seconds = (1.25, 5, 25, 100) if quick else (1.25, 5, 25, 100, 400, 1600, 6400)
    for t in encoder_seconds:
        out.append(dict(module="voice_encoder", t=t, w=None, batch=1))
    for t in fuser_seconds:
        out.append(dict(module="fuser", t=t, w=None, batch=1))
    for w in (64, 128):
        out.append(dict(module="face_decoder", t=None, w=w, batch=1))
        out.append(dict(module="image_discriminator", t=None, w=w, batch=1))
        out.append(dict(module="identity_classifier", t=None, w=w, batch=1))
    if not quick:
        out.append(dict(module="voice_encoder", t=1.25, w=None, batch=TRAIN_BATCH))
        out.append(dict(module="fuser", t=FUSER_TRAIN_WINDOWS * WINDOW_SECONDS, w=None,
                        batch=TRAIN_BATCH))
        for w in (64, 128):
            for module in ("face_decoder", "image_discriminator", "identity_classifier"):
                out.append(dict(module=module, t=None, w=w, batch=TRAIN_BATCH))
    return out


# ------------------------------------------------------------------------------------------
# One case (runs in its own process)
# ------------------------------------------------------------------------------------------

def _peak_rss_mb() -> float:
    import resource  # noqa: PLC0415
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _graph_flops(concrete) -> int | None:
    """FLOPs of a concrete function with static shapes (TF's profiler), None if unavailable."""
    try:
        from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415
            convert_variables_to_constants_v2)
        from tensorflow.python.profiler import model_analyzer, option_builder  # noqa
        frozen = convert_variables_to_constants_v2(concrete)
        options = option_builder.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        result = model_analyzer.profile(frozen.graph, options=options)
        return int(result.total_float_ops)
    except Exception:  # noqa: BLE001 - FLOPs are a bonus column
        return None


def _module_and_input(case: dict):
    """(callable taking one tensor, input shape, minimal shape of the same rank, note)."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415
    from keras_sf2f.models import builder  # noqa: PLC0415
    from keras_sf2f.serving.savedmodel import model_config_from_flagfile  # noqa: PLC0415

    module, batch = case["module"], case["batch"]
    config_name = "sf2f_128" if case.get("w") == 128 else "sf2f_64"
    if module == "fuser":
        config_name = "sf2f_64_fuser"
    config = model_config_from_flagfile(os.path.join(REPO, "configs", config_name + ".cfg"))
    if module in ("voice_encoder", "fuser", "face_decoder"):
        generator = builder.build_generator(config)
        if module == "voice_encoder":
            frames = int(round(case["t"] * FRAMES_PER_SECOND))
            return (lambda x: generator.encoder.embed(x, training=False),
                    (batch, frames, config.num_mel_bins), (1, 32, config.num_mel_bins),
                    f"{frames} frames")
        if module == "fuser":
            segments = max(1, int(case["t"] // WINDOW_SECONDS))
            return (lambda x: generator.encoder.fuser(x),
                    (batch, segments, config.embedding_dim), (1, 1, config.embedding_dim),
                    f"{segments} segments")
        return (lambda x: generator.decoder(x, training=False), (batch, config.embedding_dim),
                (1, config.embedding_dim), f"outputs {list(generator.output_resolutions)} px")
    image_discriminators, identity_classifiers = builder.build_discriminators(config)
    models = image_discriminators if module == "image_discriminator" else identity_classifiers
    model = next(m for m in models if m.image_size == case["w"])
    note = (f"{config.num_train_identities} identities" if module == "identity_classifier"
            else "patch logits")
    del np
    return (lambda x: model(x, training=False), (batch, case["w"], case["w"], 3),
            (1, case["w"], case["w"], 3), note)


def run_case(case: dict, min_seconds: float, max_repeats: int, memory: bool) -> dict:
    """Times the forward (``memory=False``) or measures its peak memory (``memory=True``, in a
    process started with TensorFlow's BFC allocator on the CPU, whose statistics
    ``tf.config.experimental.get_memory_info`` reads)."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    fn, shape, _, note = _module_and_input(case)
    traced = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)],
                         autograph=False)
    concrete = traced.get_concrete_function()
    x = tf.constant(np.random.default_rng(0).standard_normal(shape).astype(np.float32))

    def forward():
        tf.nest.map_structure(lambda t: t.numpy(), concrete(x))

    result = {**case, "input_shape": list(shape), "note": note}
    if memory:
        forward()  # kernels initialised; the measured forward finds a steady state
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        rss_before = _peak_rss_mb()
        forward()
        info = tf.config.experimental.get_memory_info("CPU:0")
        result.update(peak_mb=(info["peak"] - before) / 2 ** 20,
                      rss_growth_mb=max(0.0, _peak_rss_mb() - rss_before),
                      input_mb=x.numpy().nbytes / 2 ** 20)
        return result
    started = time.perf_counter()
    forward()
    first = time.perf_counter() - started
    times = []
    total = 0.0
    while len(times) < max_repeats and (total < min_seconds or len(times) < 3):
        started = time.perf_counter()
        forward()
        elapsed = time.perf_counter() - started
        times.append(elapsed)
        total += elapsed
    flops = _graph_flops(concrete)
    median = float(np.median(times))
    result.update(time_ms=median * 1000.0, first_ms=first * 1000.0, repeats=len(times),
                  gflops=None if flops is None else flops / 1e9,
                  gflop_per_s=None if not flops else flops / 1e9 / median)
    return result


def _child_main(spec: str) -> None:
    payload = json.loads(spec)
    import tensorflow as tf  # noqa: PLC0415
    threads = payload.get("threads")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    result = run_case(payload["case"], payload["min_seconds"], payload["max_repeats"],
                      payload["memory"])
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------

def _slopes(rows: list[dict]) -> None:
    """Adds log-log slopes (time, memory) vs t between consecutive rows of a module."""
    previous = {}
    for row in rows:
        if row.get("error") or row["t"] is None:
            continue
        key = (row["module"], row["batch"])
        if key in previous:
            prev = previous[key]
            ratio = math.log(row["t"] / prev["t"])
            if ratio > 0:
                row["time_exponent"] = math.log(row["time_ms"] / prev["time_ms"]) / ratio
                if row.get("peak_mb", 0) > 0.5 and prev.get("peak_mb", 0) > 0.5:
                    row["memory_exponent"] = math.log(row["peak_mb"] / prev["peak_mb"]) / ratio
        previous[key] = row


def _run_child(case: dict, memory: bool, threads: int, min_seconds: float,
               max_repeats: int) -> dict:
    spec = json.dumps({"case": case, "min_seconds": min_seconds, "max_repeats": max_repeats,
                       "threads": threads, "memory": memory})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if memory:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", spec],
                         capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1][len("RESULT "):])


def measure(quick: bool = False, threads: int = 2, log=None) -> dict:
    """Every case of :func:`cases`, timed in one fresh process and measured for memory in
    another; {"rows": [...], "notes": [...]}."""
    rows = []
    min_seconds, max_repeats = (0.3, 20) if quick else (1.0, 50)
    for case in cases(quick):
        started = time.perf_counter()
        row = dict(case)
        timing = _run_child(case, False, threads, min_seconds, max_repeats)
        memory = _run_child(case, True, threads, min_seconds, max_repeats)
        row.update(timing)
        for key in ("peak_mb", "rss_growth_mb", "input_mb"):
            if key in memory:
                row[key] = memory[key]
        if "error" in memory and "error" not in row:
            row["error"] = "memory: " + memory["error"]
        row["case_seconds"] = time.perf_counter() - started
        rows.append(row)
        if log:
            log(_describe(row))
    _slopes(rows)
    notes = [
        "Forward passes in inference mode (BatchNorm moving statistics), random weights, "
        f"float32, {threads} intra-op threads, a traced function with the case's static "
        "shapes; each case in fresh processes.",
        "time ms: median of repeated forwards after one warm-up forward.",
        "peak MB: the TensorFlow allocator's peak during a forward (the second one) minus "
        "what it held before (weights, input): activations, scratch and output. Measured in a separate "
        "process started with TF_CPU_ALLOCATOR_USE_BFC=true, so that "
        "tf.config.experimental.get_memory_info works on the CPU (without it: 'Allocator "
        "stats not available'); tracemalloc does not see TensorFlow's allocations. RSS "
        "growth (getrusage peak) is in results.json as a cross-check; it also counts "
        "first-run kernel caches.",
        "t: seconds of audio at 100 frames/s; the fuser gets floor(t / 1.25 s) segment "
        "embeddings. w: output image width. GFLOP: TensorFlow's graph profiler on the traced "
        "function (convolutions and matrix products, 2 FLOPs per multiply-add).",
        "time exp. / mem. exp.: log-log slope against t between consecutive rows of the "
        "same module and batch (1 = linear, 2 = quadratic).",
        "The supplementary's Table 7 states complexities, not measurements: encoder time and "
        "memory O(t); attention memory O(t^2) (the N x N scores), negligible until N nears "
        "the embedding width (512 segments, 640 s of audio); decoder and discriminators "
        "depend on w only. Its 'Omega(1) time regardless of t' is parallel depth on a GPU; "
        "on 2 CPU cores work is time, so time grows like the FLOPs.",
    ]
    return {"rows": rows, "notes": notes}


def _describe(row: dict) -> str:
    size = f"t={row['t']} s" if row["t"] is not None else f"w={row['w']}"
    if row.get("error"):
        return f"{row['module']} {size} batch {row['batch']}: failed ({row['error']})"
    return (f"{row['module']} {size} batch {row['batch']}: {row['time_ms']:.2f} ms, "
            f"peak +{row.get('peak_mb', float('nan')):.2f} MB")


def markdown(result: dict) -> str:
    lines = ["| module | t (s) | w | batch | input | time ms | peak MB | GFLOP | GFLOP/s | "
             "time exp. | mem. exp. |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("error"):
            lines.append(f"| {r['module']} | {r['t'] or ''} | {r['w'] or ''} | {r['batch']} | "
                         f"failed: {r['error']} | | | | | | |")
            continue

        def fmt(value, spec):
            return "" if value is None else format(value, spec)

        lines.append(
            f"| {r['module']} | {fmt(r['t'], 'g')} | {fmt(r['w'], 'd')} | {r['batch']} | "
            f"{'x'.join(str(d) for d in r['input_shape'])} ({r['note']}) | "
            f"{r['time_ms']:.2f} | {fmt(r.get('peak_mb'), '.2f')} | {fmt(r['gflops'], '.3f')} | "
            f"{fmt(r['gflop_per_s'], '.1f')} | {fmt(r.get('time_exponent'), '.2f')} | "
            f"{fmt(r.get('memory_exponent'), '.2f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and fewer lengths only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _child_main(args.case)
        return
    result = measure(args.quick, args.threads, log=lambda s: print(s, flush=True))
    from bench_common import print_result  # noqa: PLC0415 (beside this script)
    print_result(result, markdown, args.json)


if __name__ == "__main__":
    main()
