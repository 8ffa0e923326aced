"""keras-sf2f against a PyTorch implementation, side by side, in one run.

    python benchmarks/run.py [--quick] [--sections=peak,training,inference,features,modules]
        [--out_dir=benchmarks]

Writes ``results.md`` and ``results.json`` (in ``--out_dir``) with the machine (CPU model,
cores, SIMD flags, whether AVX512_BF16 / AMX exist), library versions and the date, then:

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
import time
import traceback

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
        "Every figure below was measured in that run; nothing is copied from elsewhere.",
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

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 5 minutes")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out_dir", default=HERE)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(child(args.child, args.quick, args.threads, args.child_out))

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
    results["targets"] = summarize_targets(results)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    text = render(results)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
