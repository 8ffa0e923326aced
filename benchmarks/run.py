"""keras-sf2f against a PyTorch implementation, side by side, in one run.

    python benchmarks/run.py [--quick] [--sections=peak,training,inference,features,modules]
        [--out_dir=benchmarks] [--index_only]

Results are kept per CPU kind (``keras_sf2f.machine.cpu_kind_slug``: vendor and family plus the
SIMD level that decides the kernels, e.g. ``amd_epyc_avx2``, ``intel_xeon_amx_bf16``): a run
writes ``results/<kind>.md`` and ``results/<kind>.json`` (in ``--out_dir``) with the machine
(CPU model, cores, SIMD flags, whether AVX512_BF16 / AMX exist), library versions and the date,
then regenerates ``results.md``, the index of every kind under ``results/`` with its headline
ratios (and, with the default ``--out_dir``, the marked benchmark block of the README). A run
with a subset of ``--sections`` merges into its kind's JSON: the sections it did not rerun stay,
each section carrying the date it was measured. ``--index_only`` only regenerates the index and
the README block from the JSON files. The sections:

1. machine peak: float32 4096 x 4096 matmul GFLOP/s in TensorFlow and PyTorch, and bfloat16
   matmul GFLOP/s (size reduced when bf16 is too slow to time at 4096);
2. training: ``benchmarks/bench_training.py``'s ``measure(quick)`` (rows rendered as given);
3. inference latency p50/p99 at batch 1 for 1.25 s, 5 s and 30 s of audio
   (``benchmarks/bench_inference.py``): Keras graph and exported SavedModel with features,
   PyTorch eager without;
4. feature throughput against python_speech_features (``benchmarks/bench_features.py``);
5. the seed's Table 7, per-module time and memory vs t and w (``benchmarks/bench_modules.py``;
   full mode only, it starts one process per case).

Every section runs in its own subprocess with the same thread count for TensorFlow and
PyTorch (``--threads``, default 2); a section that fails is recorded with its error and the
run goes on. ``--quick`` takes about 5 minutes, the full run well under an hour.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
import traceback

from keras_sf2f import machine

# The bench_*.py modules are imported by their plain names: this script's folder is on sys.path
# (and the children are this script again).
HERE = os.path.dirname(os.path.abspath(__file__))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

SECTIONS = ("peak", "training", "inference", "features", "modules")
TITLES = {
    "peak": "1. Machine peak: matrix multiplication",
    "training": "2. Training step",
    "inference": "3. Inference latency, batch 1",
    "features": "4. Feature throughput (log mel filterbank)",
    "modules": "5. Seed Table 7: per-module time and memory vs t and w",
}
FEATURE_TARGET = 20.0
# Training-step targets against PyTorch's step of the same configuration and batch, one run:
# float32 over float32; where bfloat16 is native (AMX-BF16 / AVX512_BF16), mixed_bfloat16 over
# PyTorch's bfloat16 step and over its float32 step.
TRAINING_FLOAT32_TARGET = 1.2
TRAINING_BF16_TARGET = 1.2
TRAINING_BF16_OVER_FLOAT32_TARGET = 2.0
PEAK_CAVEAT = ("A fraction above 100% means the machine was busier (other processes) while the "
               "matmul peak was measured than during that figure: load varied during the run, "
               "so compare fractions within a section, not against 100%.")


# ------------------------------------------------------------------------------------------
# Machine and versions
# ------------------------------------------------------------------------------------------

def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        first = text.split("\n\n")[0]
        fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info["cpu_model"] = fields.get("model name")
        info["physical_cores"] = len({line for line in text.splitlines()
                                      if line.startswith("core id")}) or None
        interesting = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                       "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                       "amx_tile", "amx_int8", "avx_vnni")
        info["flags"] = {name: name in flags for name in interesting}
        info["has_avx512_bf16"] = "avx512_bf16" in flags
        info["has_amx_bf16"] = "amx_bf16" in flags
        info["hypervisor"] = "hypervisor" in flags
    except OSError as e:
        info["cpu_error"] = str(e)
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                   / 2 ** 30, 1)
    except (ValueError, OSError):
        pass
    info["load_average_at_start"] = os.getloadavg()
    return info


def versions() -> dict:
    out = {"python": platform.python_version()}
    from importlib import metadata  # noqa: PLC0415
    for dist in ("tensorflow", "keras", "torch", "numpy", "python_speech_features"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ------------------------------------------------------------------------------------------
# Section 1: matmul peak
# ------------------------------------------------------------------------------------------

def _time_best(fn, repeats: int):
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    times.sort()
    return times[0], times[len(times) // 2]


def _matmul_rows(framework: str, make, sizes_f32, repeats: int, bf16_budget_s: float):
    """make(n, dtype_name) -> zero-argument function computing one n x n product."""
    rows = []
    for n in sizes_f32:
        best, median = _time_best(make(n, "float32"), repeats)
        rows.append({"framework": framework, "dtype": "float32", "n": n,
                     "gflop_per_s": 2 * n ** 3 / best / 1e9,
                     "median_gflop_per_s": 2 * n ** 3 / median / 1e9})
    # bf16: probe at 1024, then the largest size whose product fits the time budget.
    probe, _ = _time_best(make(1024, "bfloat16"), 1)
    rate = 2 * 1024 ** 3 / probe
    n = 1024
    for candidate in (4096, 2048):
        if 2 * candidate ** 3 / rate <= bf16_budget_s:
            n = candidate
            break
    best, median = _time_best(make(n, "bfloat16"), max(1, repeats if n < 4096 else 2))
    rows.append({"framework": framework, "dtype": "bfloat16", "n": n,
                 "gflop_per_s": 2 * n ** 3 / best / 1e9,
                 "median_gflop_per_s": 2 * n ** 3 / median / 1e9})
    return rows


def section_peak_tf(quick: bool, threads: int) -> list:
    import tensorflow as tf  # noqa: PLC0415
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    def make(n, dtype):
        a = tf.cast(tf.random.stateless_normal([n, n], [0, 1]), dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], [0, 2]), dtype)
        product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1],
                                                            tf.float32)))
        return lambda: product().numpy()

    return _matmul_rows("tensorflow", make, (4096,), 3 if quick else 5,
                        4.0 if quick else 15.0)


def section_peak_torch(quick: bool, threads: int) -> list:
    import torch  # noqa: PLC0415
    torch.set_num_threads(threads)

    def make(n, dtype):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(getattr(torch, dtype))
        b = torch.randn(n, n, generator=g).to(getattr(torch, dtype))

        def run():
            with torch.no_grad():
                return float(torch.matmul(a, b)[0, 0])
        return run

    return _matmul_rows("pytorch", make, (4096,), 3 if quick else 5, 4.0 if quick else 15.0)


# ------------------------------------------------------------------------------------------
# Sections (each in a child process)
# ------------------------------------------------------------------------------------------

def run_section(name: str, quick: bool, threads: int):
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if name == "peak_tf":
        return {"rows": section_peak_tf(quick, threads)}
    if name == "peak_torch":
        return {"rows": section_peak_torch(quick, threads)}
    if name == "training":
        import bench_training  # noqa: PLC0415
        if not hasattr(bench_training, "measure"):
            raise RuntimeError("benchmarks/bench_training.py has no measure(quick) function")
        return bench_training.measure(quick)
    if name == "inference":
        import bench_inference  # noqa: PLC0415
        return bench_inference.measure(quick, threads, log=log)
    if name == "features":
        import bench_features  # noqa: PLC0415
        return bench_features.measure(quick, threads, log=log)
    if name == "modules":
        import bench_modules  # noqa: PLC0415
        return bench_modules.measure(quick, threads, log=log)
    raise ValueError(f"unknown section {name}")


def child(name: str, quick: bool, threads: int, out: str) -> int:
    try:
        result = run_section(name, quick, threads)
        status = 0
    except BaseException as e:  # noqa: BLE001 - recorded in the results
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        status = 1
    with open(out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    return status


def spawn(name: str, quick: bool, threads: int, out_dir: str, timeout: float) -> dict:
    out = os.path.join(out_dir, f".section_{name}.json")
    if os.path.exists(out):
        os.remove(out)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads),
               OPENBLAS_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, f"--threads={threads}",
           f"--child_out={out}"] + (["--quick"] if quick else [])
    started = time.perf_counter()
    # The child's progress goes to this process's stderr; results come back in a file. It gets
    # its own process group, so that a timeout also ends the processes it started.
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stderr, text=True, start_new_session=True)
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        returncode = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    seconds = time.perf_counter() - started
    if os.path.exists(out):
        with open(out) as f:
            result = json.load(f)
        os.remove(out)
    elif returncode is None:
        result = {"error": f"timed out after {timeout:.0f} s"}
    else:
        result = {"error": f"section process exited with status {returncode} and no result"}
    result["seconds"] = seconds
    result["load_average_after"] = os.getloadavg()[0]
    return result


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def generic_table(rows: list) -> str:
    """Markdown table of dict rows: one column per scalar key (first-seen order); non-empty
    nested values (dicts, lists) are listed under the table, per row."""
    if not rows:
        return "(no rows)"
    columns, nested = [], []
    for row in rows:
        for key, value in row.items():
            target = columns if _is_scalar(value) else nested
            if key not in columns and key not in nested:
                target.append(key)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) if _is_scalar(row.get(c)) else "see below"
                                       for c in columns) + " |")
    details = []
    for index, row in enumerate(rows):
        for key in nested:
            value = row.get(key)
            if value:
                text = json.dumps(value, default=str)
                details.append(f"- row {index + 1} `{key}`: {text[:1500]}"
                               + (" ..." if len(text) > 1500 else ""))
    return "\n".join(lines + ([""] + details if details else []))


def _error_block(result: dict) -> list:
    lines = [f"**Not measured: {result['error']}**", ""]
    tb = result.get("traceback")
    if tb:
        lines += ["```", tb.strip()[-3000:], "```", ""]
    return lines


def peak_gflops(results: dict, framework: str, dtype: str = "float32"):
    for row in results.get("peak", {}).get("rows", []):
        if row["framework"] == framework and row["dtype"] == dtype:
            return row["gflop_per_s"]
    return None


def summarize_targets(results: dict) -> list:
    """Target verdicts (also stored in results.json)."""
    verdicts = []
    feats = results.get("features", {})
    if "rows" in feats:
        ours = [r for r in feats["rows"] if r.get("implementation") == "keras-sf2f"
                and r.get("default") and r.get("rate") == 16000]
        for mode_kind, label in (("batch", "throughput (batched calls)"),
                                 ("one call", "one call per utterance")):
            rows = [r for r in ours if r["mode"].startswith(mode_kind)]
            if not rows:
                continue
            met = all(r["speedup_vs_psf"] >= FEATURE_TARGET and r["max_abs_diff"] <= 1e-3
                      for r in rows)
            verdicts.append({
                "target": f"features, {label}: >= {FEATURE_TARGET:.0f}x python_speech_features "
                          "(median wall time, same run, same input), max abs diff <= 1e-3",
                "met": met,
                "detail": ", ".join(f"{r['audio']}: {r['speedup_vs_psf']:.1f}x, "
                                    f"diff {r['max_abs_diff']:.1e}" for r in rows)})
    verdicts += _training_verdicts(results)
    inference = results.get("inference", {})
    if "rows" in inference:
        graph_rows = [r for r in inference["rows"]
                      if r["path"].startswith("keras graph")]
        if graph_rows:
            met = all(r["torch_eager_over_this"] >= 1.0 for r in graph_rows)
            verdicts.append({
                "target": "Keras graph with features at least as fast as PyTorch eager "
                          "without (p50, batch 1)",
                "met": met,
                "detail": ", ".join(f"{r['config']} {r['audio']}: "
                                    f"{r['torch_eager_over_this']:.2f}x"
                                    for r in graph_rows)})
    return verdicts


def _ratio_verdict(target: str, bound: float, ratios) -> dict:
    """A target verdict: met when every ``(case name, ratio)`` of ``ratios`` reaches ``bound``."""
    return {"target": target, "met": all(ratio >= bound for _, ratio in ratios),
            "detail": ", ".join(f"{name}: {ratio:.2f}x" for name, ratio in ratios)}


def _training_verdicts(results: dict) -> list:
    rows = [r for r in results.get("training", {}).get("rows", [])
            if r.get("keras_steps_per_s") and r.get("torch_steps_per_s")]
    verdicts = []
    float32 = [r for r in rows if r["precision"] == "float32"]
    if float32:
        verdicts.append(_ratio_verdict(
            f"float32 training step >= {TRAINING_FLOAT32_TARGET}x PyTorch's "
            "(same configuration and batch, one run)", TRAINING_FLOAT32_TARGET,
            [(r["name"], r["ratio"]) for r in float32]))
    machine_ = results.get("meta", {}).get("machine", {})
    if not (machine_.get("has_amx_bf16") or machine_.get("has_avx512_bf16")):
        return verdicts  # emulated bfloat16: no speed target
    bf16 = [r for r in rows if r["precision"] == "mixed_bfloat16"]
    if bf16:
        verdicts.append(_ratio_verdict(
            f"mixed_bfloat16 training step >= {TRAINING_BF16_TARGET}x PyTorch's "
            "bfloat16 step (native bfloat16)", TRAINING_BF16_TARGET,
            [(r["name"], r["ratio"]) for r in bf16]))
    over_float32 = [(r["name"], r["keras_steps_per_s"] / f["torch_steps_per_s"])
                    for r in bf16 for f in float32
                    if (f["config"], f["batch"]) == (r["config"], r["batch"])]
    if over_float32:
        verdicts.append(_ratio_verdict(
            f"mixed_bfloat16 training step >= {TRAINING_BF16_OVER_FLOAT32_TARGET}x "
            "PyTorch's float32 step (same configuration and batch)",
            TRAINING_BF16_OVER_FLOAT32_TARGET, over_float32))
    return verdicts


def render(results: dict) -> str:
    meta = results["meta"]
    m = meta["machine"]
    v = meta["versions"]
    flags = ", ".join(f"{k} {'yes' if on else 'no'}" for k, on in m.get("flags", {}).items())
    lines = [
        "# Benchmarks: keras-sf2f and PyTorch, side by side",
        "",
        f"Produced by `{meta['command']}` on {meta['date']} "
        f"({'quick' if meta['quick'] else 'full'} mode, {meta['total_seconds'] / 60:.1f} min). "
        "Every figure below was measured in that run; nothing is copied from elsewhere."
        + (" Sections measured by an earlier run on this CPU kind say so under their heading."
           if any(isinstance(results.get(n), dict) and results[n].get("date")
                  not in (None, meta["date"]) for n in SECTIONS) else ""),
        "",
        "## Machine and versions",
        "",
        f"- CPU: {m.get('cpu_model')} ({m.get('logical_cpus')} logical CPUs"
        f"{', under a hypervisor' if m.get('hypervisor') else ''}), "
        f"{m.get('memory_gib')} GiB RAM; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_at_start', []))} (1, 5, 15 min; "
        "above 2 means other processes competed for the 2 cores during the run)",
        f"- SIMD: {flags}",
        f"- AVX512_BF16: {'yes' if m.get('has_avx512_bf16') else 'no'}; "
        f"AMX-BF16: {'yes' if m.get('has_amx_bf16') else 'no'}",
        f"- Python {v.get('python')}, TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, "
        f"PyTorch {v.get('torch')}, NumPy {v.get('numpy')}, python_speech_features "
        f"{v.get('python_speech_features')}",
        f"- Threads: {meta['threads']} for TensorFlow (intra- and inter-op) and PyTorch; "
        "numpy/OpenBLAS 1 (python_speech_features' fastest setting here)",
        "",
    ]
    verdicts = results.get("targets", [])
    if verdicts:
        lines += ["## Targets", ""]
        for verdict in verdicts:
            lines.append(f"- {'MET' if verdict['met'] else 'MISSED'}: {verdict['target']} "
                         f"({verdict['detail']})")
        lines.append("")
    for name in SECTIONS:
        if name not in results:
            continue
        result = results[name]
        lines += [f"## {TITLES[name]}", ""]
        if result.get("date") and result["date"] != meta["date"]:
            lines += [f"Measured on {result['date']} "
                      f"({'quick' if result.get('quick') else 'full'} mode) by "
                      f"`{result.get('command', 'an earlier run')}`.", ""]
        if result.get("tensorflow_cpu_kernels"):
            lines += [f"TensorFlow's CPU kernels: {result['tensorflow_cpu_kernels']}.", ""]
        if result.get("skipped"):
            lines += [result["skipped"], ""]
            continue
        if "error" in result:
            lines += _error_block(result)
            continue
        lines += render_section(name, result, results)
        for note in result.get("notes", []):
            lines.append(f"- {note}")
        lines += ["", f"(section time {result.get('seconds', 0):.0f} s; 1-minute load average "
                      f"at its end {result.get('load_average_after', float('nan')):.2f})", ""]
    return "\n".join(lines)


def render_section(name: str, result: dict, results: dict) -> list:
    rows = result.get("rows", [])
    tf_peak = peak_gflops(results, "tensorflow")
    if name == "peak":
        lines = ["| framework | dtype | n | GFLOP/s (best) | GFLOP/s (median) |",
                 "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['framework']} | {r['dtype']} | {r['n']} | "
                         f"{r['gflop_per_s']:.1f} | {r['median_gflop_per_s']:.1f} |")
        tf32, pt32 = tf_peak, peak_gflops(results, "pytorch")
        tf16, pt16 = (peak_gflops(results, "tensorflow", "bfloat16"),
                      peak_gflops(results, "pytorch", "bfloat16"))
        if tf32 and pt32:
            lines += ["", f"TensorFlow / PyTorch float32: {tf32 / pt32:.2f}."]
        if tf32 and tf16:
            lines.append(f"bfloat16 / float32 in TensorFlow: {tf16 / tf32:.2f}"
                         + (f"; in PyTorch: {pt16 / pt32:.2f}" if pt16 and pt32 else "")
                         + " (below 1: bfloat16 is emulated, no AVX512_BF16/AMX).")
        return lines + [""]
    if name == "inference":
        import bench_inference  # noqa: PLC0415
        lines = [bench_inference.markdown(result), ""]
        if tf_peak:
            lines.append(f"Model GFLOP/s is the generator's convolution and matmul FLOPs per "
                         f"request divided by the p50 time (features, checks and PNG "
                         f"encoding are extra work); the float32 matmul peak measured above "
                         f"is {tf_peak:.0f} GFLOP/s.")
            best = max((r for r in rows if r.get("model_gflop_per_s")),
                       key=lambda r: r["model_gflop_per_s"], default=None)
            if best:
                lines.append(f"Best: {best['model_gflop_per_s']:.1f} GFLOP/s = "
                             f"{best['model_gflop_per_s'] / tf_peak:.0%} of the peak "
                             f"({best['config']}, {best['audio']}, {best['path']}).")
                if best["model_gflop_per_s"] > tf_peak:
                    lines.append(PEAK_CAVEAT)
        return lines + [""]
    if name == "features":
        import bench_features  # noqa: PLC0415
        return [bench_features.markdown(result), ""]
    if name == "modules":
        import bench_modules  # noqa: PLC0415
        lines = [bench_modules.markdown(result), ""]
        if tf_peak:
            lines.append(f"Fraction of the float32 matmul peak ({tf_peak:.0f} GFLOP/s): "
                         "GFLOP/s column divided by it.")
            if any((r.get("gflop_per_s") or 0) > tf_peak for r in rows):
                lines.append(PEAK_CAVEAT)
        return lines + [""]
    lines = [generic_table(rows), ""]
    torch_peak = peak_gflops(results, "pytorch")
    for r in rows:
        parts = []
        if r.get("keras_gflops") and tf_peak:
            parts.append(f"Keras {r['keras_gflops']:.1f} GFLOP/s = "
                         f"{r['keras_gflops'] / tf_peak:.0%} of the TensorFlow float32 matmul "
                         "peak")
        if r.get("torch_gflops") and torch_peak:
            parts.append(f"PyTorch {r['torch_gflops']:.1f} GFLOP/s = "
                         f"{r['torch_gflops'] / torch_peak:.0%} of the PyTorch float32 matmul "
                         "peak")
        if parts:
            lines.append(f"- {r.get('name', '')}: " + "; ".join(parts))
    if any((r.get("keras_gflops") or 0) > (tf_peak or float("inf")) for r in rows):
        lines += ["", PEAK_CAVEAT]
    return lines + [""]



# ------------------------------------------------------------------------------------------
# One file per CPU kind, the index of all kinds, the README block
# ------------------------------------------------------------------------------------------

RESULTS_DIR = "results"
README_BEGIN = "<!-- benchmarks/run.py: per-CPU-kind results (generated) -->"
README_END = "<!-- end of benchmarks/run.py block -->"
INFERENCE_AUDIO = ("1.25 s", "5 s", "30 s")
KERAS_INFERENCE_PATH = "keras graph (features included)"


def cpu_kind(machine_info_: dict) -> str:
    """The CPU-kind slug of a run's ``meta.machine`` (see ``keras_sf2f.machine.cpu_kind_slug``)."""
    return machine.cpu_kind_slug(machine_info_.get("cpu_model"), machine_info_.get("flags", {}))


def stamp_sections(results: dict) -> dict:
    """Gives every section without its own date the run's date, mode and command (results
    written before sections carried them); returns ``results``."""
    meta = results.get("meta", {})
    for name in SECTIONS:
        section = results.get(name)
        if isinstance(section, dict) and not section.get("date"):
            section.update(date=meta.get("date"), quick=meta.get("quick", False),
                           command=meta.get("command"))
    return results


def merge_results(existing: dict | None, new: dict) -> dict:
    """``new`` (a run of some sections) merged into its kind's ``existing`` results: the new
    run's meta and sections, the other sections as they were (each with its own date; a section
    the run skipped does not replace a measured one); the target verdicts are recomputed over
    the merged sections."""
    merged = {"meta": dict(new["meta"])}
    old = stamp_sections(json.loads(json.dumps(existing))) if existing else {}
    for name in SECTIONS:
        # A section the run skipped (modules in --quick mode) keeps an earlier measurement.
        if name in new and not (new[name].get("skipped") and name in old
                                and not old[name].get("skipped")):
            merged[name] = new[name]
        elif name in old:
            merged[name] = old[name]
    merged["meta"]["sections_rerun"] = [name for name in SECTIONS if name in new
                                        and merged.get(name) is new[name]]
    merged["targets"] = summarize_targets(merged)
    return merged


def kind_paths(out_dir: str, kind: str) -> tuple[str, str]:
    base = os.path.join(out_dir, RESULTS_DIR, kind)
    return base + ".json", base + ".md"


def load_kind(out_dir: str, kind: str) -> dict | None:
    path = kind_paths(out_dir, kind)[0]
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_kinds(out_dir: str) -> dict:
    """{kind: results} for every ``results/<kind>.json`` in ``out_dir``, by kind name."""
    directory = os.path.join(out_dir, RESULTS_DIR)
    kinds = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".json"):
                with open(os.path.join(directory, name)) as f:
                    kinds[name[:-len(".json")]] = json.load(f)
    return kinds


def write_kind(out_dir: str, kind: str, results: dict) -> str:
    """Writes ``results/<kind>.json`` and ``.md``; returns the Markdown."""
    json_path, md_path = kind_paths(out_dir, kind)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    text = render(results)
    with open(md_path, "w") as f:
        f.write(text + "\n")
    return text


def _day(date) -> str:
    return str(date or "?")[:10]


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _short(value) -> str:
    """GFLOP/s and milliseconds for the index: 3 significant figures, no more decimals than 1
    above 10."""
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def tensorflow_cpu_kernels() -> str:
    """The CPU kernels TensorFlow runs in the sections' subprocesses: they inherit
    ``TF_ENABLE_ONEDNN_OPTS`` from this process, which the package set when it was imported
    (oneDNN unless the user said otherwise; keras_sf2f/__init__.py)."""
    return {True: "oneDNN", False: "Eigen"}.get(machine.onednn_requested(),
                                                "TensorFlow's default")


def measured_line(results: dict) -> str:
    """"2026-11-24, full mode", or per section when the sections come from different runs;
    with TensorFlow's CPU kernels where the sections recorded them."""
    meta = results.get("meta", {})
    stamps = [(name, _day(results[name].get("date", meta.get("date"))),
               "quick" if results[name].get("quick", meta.get("quick")) else "full",
               results[name].get("tensorflow_cpu_kernels"))
              for name in SECTIONS if isinstance(results.get(name), dict)]
    if len({(d, q, k) for _, d, q, k in stamps}) <= 1:
        day, mode, kernels = (stamps[0][1:] if stamps else (
            _day(meta.get("date")), "quick" if meta.get("quick") else "full", None))
        return f"{day}, {mode} mode" + (f", {kernels} kernels" if kernels else "")
    return ", ".join(f"{name} {day} {mode}" + (f" {kernels}" if kernels else "")
                     for name, day, mode, kernels in stamps)


def machine_line(results: dict) -> str:
    m = results.get("meta", {}).get("machine", {})
    v = results.get("meta", {}).get("versions", {})
    flags = m.get("flags", {})
    simd = ", ".join(f"{label} {'yes' if flags.get(key) else 'no'}" for key, label in
                     (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512_BF16"),
                      ("amx_bf16", "AMX-BF16")))
    return (f"{m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs"
            f"{' under a hypervisor' if m.get('hypervisor') else ''}; {simd}; "
            f"TensorFlow {v.get('tensorflow')}, PyTorch {v.get('torch')}, "
            f"{results.get('meta', {}).get('threads')} threads per framework")


def training_headline(results: dict) -> list:
    """Per training row: Keras and PyTorch steps/s and the ratios. ``vs_torch_same`` is the
    row's own ratio (PyTorch in the same precision); ``vs_torch_float32`` compares samples/s
    with the same configuration's PyTorch float32 row (batches may differ)."""
    rows = [r for r in results.get("training", {}).get("rows", []) if isinstance(r, dict)]
    out = []
    for r in rows:
        reference = next((f for f in rows if f.get("config") == r.get("config")
                          and f.get("windows") == r.get("windows")
                          and f.get("precision") == "float32" and f.get("torch_steps_per_s")),
                         None)
        vs_float32 = None
        if reference and r.get("keras_steps_per_s"):
            vs_float32 = (r["keras_steps_per_s"] * r["batch"]
                          / (reference["torch_steps_per_s"] * reference["batch"]))
        out.append({"config": r.get("config"), "precision": r.get("precision"),
                    "batch": r.get("batch"), "windows": r.get("windows"),
                    "keras_steps_per_s": r.get("keras_steps_per_s"),
                    "torch_steps_per_s": r.get("torch_steps_per_s"),
                    "vs_torch_same": r.get("ratio"), "vs_torch_float32": vs_float32})
    return out


def inference_headline(results: dict) -> dict:
    """{config: {audio: (keras graph p50 ms, best PyTorch eager p50 ms without features,
    PyTorch / Keras)}} at 1.25, 5 and 30 s."""
    rows = [r for r in results.get("inference", {}).get("rows", []) if isinstance(r, dict)]
    out = {}
    for r in rows:
        if r.get("path") != KERAS_INFERENCE_PATH or r.get("audio") not in INFERENCE_AUDIO:
            continue
        torch_p50 = min((t["p50_ms"] for t in rows
                         if t.get("config") == r["config"] and t.get("audio") == r["audio"]
                         and t.get("path", "").startswith("PyTorch eager")
                         and "features excluded" in t.get("path", "")), default=None)
        ratio = (torch_p50 / r["p50_ms"] if torch_p50 and r.get("p50_ms")
                 else r.get("torch_eager_over_this"))
        out.setdefault(r["config"], {})[r["audio"]] = (r.get("p50_ms"), torch_p50, ratio)
    return out


def _training_label(row: dict) -> str:
    return f"b{row['batch']}" + (f" x{row['windows']} windows" if row.get("windows") else "")


def render_kind_summary(kind: str, results: dict, link: str) -> list:
    """The index's section for one CPU kind."""
    lines = [f"## {kind}", "",
             f"- Machine: {machine_line(results)}",
             f"- Measured: {measured_line(results)}; all figures: [{link}]({link})"]
    peaks = [(framework, dtype, peak_gflops(results, framework, dtype))
             for dtype in ("float32", "bfloat16") for framework in ("tensorflow", "pytorch")]
    if any(value for _, _, value in peaks):
        lines.append("- Matmul peak GFLOP/s (TensorFlow / PyTorch): float32 "
                     + " / ".join(_short(v) for _, d, v in peaks if d == "float32")
                     + ", bfloat16 " + " / ".join(_short(v) for _, d, v in peaks
                                                 if d == "bfloat16"))
    lines.append("")
    training = training_headline(results)
    if training:
        lines += ["Training step (G+D), Keras / PyTorch (>= 1: keras-sf2f faster); bfloat16 "
                  "rows also against PyTorch float32 in samples/s:", "",
                  "| config | precision | batch | Keras steps/s | PyTorch steps/s (same "
                  "precision) | vs PyTorch same precision | vs PyTorch float32 |",
                  "|---|---|---|---|---|---|---|"]
        for r in training:
            lines.append(f"| {r['config']} | {r['precision']} | {_training_label(r)} | "
                         f"{_fmt(r['keras_steps_per_s'])} | {_fmt(r['torch_steps_per_s'])} | "
                         f"{_ratio(r['vs_torch_same'])} | {_ratio(r['vs_torch_float32'])} |")
        lines.append("")
    elif "training" in results:
        why = results["training"].get("error") or results["training"].get("skipped")
        lines += [f"Training: not measured ({why}).", ""]
    inference = inference_headline(results)
    if inference:
        lines += ["Inference latency, batch 1, p50: Keras graph with features / the better "
                  "PyTorch eager without (>= 1: keras-sf2f faster; ms in brackets):", "",
                  "| config | " + " | ".join(INFERENCE_AUDIO) + " |",
                  "|---|" + "---|" * len(INFERENCE_AUDIO)]
        for config, cells in inference.items():
            parts = []
            for audio in INFERENCE_AUDIO:
                keras_ms, torch_ms, ratio = cells.get(audio, (None, None, None))
                parts.append(f"{_ratio(ratio)} ({_short(keras_ms)} vs {_short(torch_ms)})"
                             if ratio is not None else "")
            lines.append(f"| {config} | " + " | ".join(parts) + " |")
        lines.append("")
    verdicts = results.get("targets", [])
    if verdicts:
        lines += [f"- {'MET' if v['met'] else 'MISSED'}: {v['target']} ({v['detail']})"
                  for v in verdicts] + [""]
    return lines


def render_index(kinds: dict) -> str:
    lines = [
        "# Benchmarks: keras-sf2f and PyTorch, one section per CPU kind",
        "",
        "A CPU kind is the CPU family plus the SIMD level that decides the kernels TensorFlow "
        "(oneDNN) and PyTorch use: AMX-BF16 or AVX512_BF16 (native bfloat16 kernels), AVX-512, "
        "or AVX2 only (bfloat16 emulated). Each kind keeps its own results in "
        f"`benchmarks/{RESULTS_DIR}/<kind>.md` and `.json`; "
        "`python benchmarks/run.py --sections=peak,training,inference,features` on a machine "
        "adds or updates its kind's files (sections it does not rerun stay, with their date) "
        "and regenerates this page. Every figure was measured by that script on that kind.",
        "",
    ]
    if not kinds:
        lines += ["(no results yet)", ""]
    for kind, results in sorted(kinds.items()):
        lines += render_kind_summary(kind, results, f"{RESULTS_DIR}/{kind}.md")
    return "\n".join(lines).rstrip() + "\n"


def readme_block(kinds: dict) -> str:
    """A short table per CPU kind for the README, between ``README_BEGIN`` and ``README_END``."""
    lines = [README_BEGIN, ""]
    for kind, results in sorted(kinds.items()):
        m = results.get("meta", {}).get("machine", {})
        heading = (f"**{kind}** ({m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs; "
                   f"{measured_line(results)}; "
                   f"[all figures](benchmarks/{RESULTS_DIR}/{kind}.md)):")
        # Wrapped at 100 columns, as the rest of the README is.
        lines += [*textwrap.wrap(heading, 100, break_long_words=False, break_on_hyphens=False),
                  "", "| Keras / PyTorch (>= 1: keras-sf2f faster) | ratio |", "|---|---|"]
        training = training_headline(results)
        for precision in ("float32", "mixed_bfloat16"):
            rows = [r for r in training if r["precision"] == precision]
            if not rows:
                continue
            names = " / ".join(f"{r['config']} {_training_label(r)}" for r in rows)
            if precision == "float32":
                lines.append(f"| training step, float32: {names} | "
                             + " / ".join(_ratio(r["vs_torch_same"]) for r in rows) + " |")
            else:
                lines.append(f"| training step, {precision}: {names}; vs PyTorch bf16, vs "
                             "PyTorch float32 (samples/s) | "
                             + " / ".join(f"{_ratio(r['vs_torch_same'])}, "
                                          f"{_ratio(r['vs_torch_float32'])}" for r in rows)
                             + " |")
        for config, cells in inference_headline(results).items():
            lines.append(f"| inference p50, batch 1, {config}: "
                         + " / ".join(INFERENCE_AUDIO) + " | "
                         + " / ".join(_ratio(cells.get(a, (None, None, None))[2])
                                      for a in INFERENCE_AUDIO) + " |")
        lines.append("")
    lines.append(README_END)
    return "\n".join(lines)


def replace_readme_block(text: str, block: str) -> str:
    """``text`` with its block between the markers replaced; unchanged without markers."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return text
    return text[:begin] + block + text[end + len(README_END):]


def write_index(out_dir: str, readme_path: str | None = None) -> str:
    """Regenerates ``results.md`` from ``results/*.json`` (and the README's block); returns
    the index."""
    kinds = load_kinds(out_dir)
    text = render_index(kinds)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    if readme_path and os.path.exists(readme_path):
        with open(readme_path) as f:
            readme = f.read()
        updated = replace_readme_block(readme, readme_block(kinds))
        if updated != readme:
            with open(readme_path, "w") as f:
                f.write(updated)
    return text

# ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 5 minutes")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out_dir", default=HERE)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child_out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--index_only", action="store_true",
                        help="only regenerate results.md (and the README block) from "
                             "results/*.json")
    parser.add_argument("--readme", default=None,
                        help="README whose benchmark block to regenerate (default: the "
                             "repository's README.md when --out_dir is benchmarks/, else none)")
    args = parser.parse_args()
    if args.child:
        sys.exit(child(args.child, args.quick, args.threads, args.child_out))
    readme_path = args.readme
    if readme_path is None and os.path.abspath(args.out_dir) == HERE:
        readme_path = os.path.join(os.path.dirname(HERE), "README.md")
    if args.index_only:
        print(write_index(args.out_dir, readme_path or None))
        return

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    started = time.perf_counter()
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    if args.sections != ",".join(SECTIONS):
        command += f" --sections={args.sections}"
    results = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "quick": args.quick, "threads": args.threads,
        "machine": machine_info(), "versions": versions()}}
    timeouts = {"peak": 900, "training": 3000, "inference": 2400, "features": 900,
                "modules": 3000}
    for name in sections:
        print(f"[run] {name} ...", file=sys.stderr, flush=True)
        if name == "modules" and args.quick:
            results[name] = {"skipped": "Not run in --quick mode (one process per case); run "
                                        "`python benchmarks/run.py` or "
                                        "`python benchmarks/bench_modules.py`."}
            continue
        if name == "peak":
            tf_part = spawn("peak_tf", args.quick, args.threads, args.out_dir, timeouts[name])
            torch_part = spawn("peak_torch", args.quick, args.threads, args.out_dir,
                               timeouts[name])
            rows = tf_part.get("rows", []) + torch_part.get("rows", [])
            errors = [p["error"] for p in (tf_part, torch_part) if "error" in p]
            results[name] = {"rows": rows, "seconds": tf_part["seconds"] + torch_part["seconds"],
                             "load_average_after": torch_part.get("load_average_after"),
                             "notes": ["Best and median of repeated products after one "
                                       "warm-up; GFLOP/s = 2 n^3 / time."]
                             + [f"error: {e}" for e in errors]}
            if not rows and errors:
                results[name]["error"] = "; ".join(errors)
        else:
            results[name] = spawn(name, args.quick, args.threads, args.out_dir, timeouts[name])
        print(f"[run] {name} done in {results[name].get('seconds', 0):.0f} s"
              + (f" (error: {results[name]['error']})" if "error" in results[name] else ""),
              file=sys.stderr, flush=True)
    results["meta"]["total_seconds"] = time.perf_counter() - started
    kernels = tensorflow_cpu_kernels()
    for name in sections:
        results[name].update(date=results["meta"]["date"], quick=args.quick, command=command,
                             tensorflow_cpu_kernels=kernels)
    kind = cpu_kind(results["meta"]["machine"])
    results["meta"]["cpu_kind"] = kind
    merged = merge_results(load_kind(args.out_dir, kind), results)
    text = write_kind(args.out_dir, kind, merged)
    write_index(args.out_dir, readme_path)
    print(text)


if __name__ == "__main__":
    main()
