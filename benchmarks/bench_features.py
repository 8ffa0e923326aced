"""Throughput of the TF log mel filterbank against python_speech_features (the reference's code).

    python benchmarks/bench_features.py [--quick] [--threads=2] [--json=OUT.json]

Both implementations get the same int16 utterances (speech-like audio, 16 kHz) and return
numpy arrays, for 1.25 s, 5 s and 30 s of audio, two ways:

* one call per utterance (latency): python_speech_features ``logfbank(samples, rate,
  nfilt=40)`` against ``keras_sf2f.audio.features.log_mel_filterbank(samples, rate)`` through
  the public API, eagerly, ``.numpy()`` included;
* throughput: 60 s of audio per call (48 x 1.25 s, 12 x 5 s, 2 x 30 s): a python loop of
  ``logfbank`` against one ``log_mel_filterbank_batch`` call.

The batched comparison also times TensorFlow's FFT alone on the same frames: the ceiling of
any implementation built on it (the ratio the 20x target would need from the FFT alone).

keras-sf2f runs at its default precision (float64 FFT, float32 filterbank product), float64
throughout, and float32 throughout (fastest, not parity-safe). The full run adds 5 s at 8,
22.05 and 44.1 kHz (one call).

Repetitions are interleaved (each round runs every implementation once), so all of them see the
same machine load; the ratio uses the medians. Process CPU time (all threads) is reported too:
TensorFlow may use both cores, numpy uses one, and on a loaded machine the CPU-time ratio is
the steadier figure. ``max abs diff`` is measured against python_speech_features on the same
input, every row.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# python_speech_features' small matrix products are fastest with a single-threaded BLAS (threaded
# OpenBLAS spins and was ~3x slower on a shared 2-core machine): time its best case.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import keras_sf2f  # noqa: E402,F401  (before TensorFlow: sets its CPU kernel default)

LENGTHS = (1.25, 5.0, 30.0)     # seconds, at 16 kHz
FFT_ALONE = "TensorFlow FFT alone (ceiling)"
BATCH_AUDIO_SECONDS = 60.0      # audio per batched call: 48 x 1.25 s, 12 x 5 s, 2 x 30 s
OTHER_RATES = (8000, 22050, 44100)


def speech(seconds: float, rate: int, seed: int) -> np.ndarray:
    from keras_sf2f.serving.savedmodel import speech_like  # noqa: PLC0415
    x = speech_like(seconds, rate, seed=seed)
    # A little broadband noise as in real recordings (the generator's own is -80 dB).
    x = x + np.random.default_rng(seed).normal(scale=30.0, size=x.shape)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def interleaved(fns: dict, repeats: int, min_seconds: float) -> dict:
    """name -> (median wall s, best wall s, median cpu s, repetitions)."""
    for fn in fns.values():
        fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    started = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - started < min_seconds:
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
        rounds += 1
        if rounds >= 50 * repeats:
            break
    return {k: (float(np.median(wall[k])), float(min(wall[k])), float(np.median(cpu[k])),
                len(wall[k])) for k in fns}


def measure(quick: bool = False, threads: int = 2, log=None) -> dict:
    import tensorflow as tf  # noqa: PLC0415
    from python_speech_features import logfbank  # noqa: PLC0415

    from keras_sf2f.audio import features  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    logging.disable(logging.WARNING)  # psf warns about frames longer than the FFT above 20 kHz
    log = log or (lambda s: None)
    repeats, min_seconds = (5, 1.0) if quick else (20, 4.0)
    rows = []

    def add(label, rate, seconds, mode, implementation, variant, default, stats, ref_stats,
            diff):
        w, best, c, n = stats
        rw, _, rc, _ = ref_stats
        row = {"audio": label, "rate": rate, "seconds": seconds, "mode": mode,
               "implementation": implementation, "variant": variant, "default": default,
               "median_ms": w * 1e3, "best_ms": best * 1e3, "cpu_ms": c * 1e3, "repeats": n,
               "audio_s_per_s": seconds / w, "speedup_vs_psf": rw / w,
               "cpu_speedup_vs_psf": rc / c if c > 0 else None, "max_abs_diff": diff}
        rows.append(row)
        if implementation != "python_speech_features":
            log(f"features {label} {mode} {variant}: {w * 1e3:.2f} ms, "
                f"{rw / w:.1f}x psf" + ("" if diff is None else f", diff {diff:.1e}"))

    def compare(label, rate, seconds, batch):
        utts = [speech(seconds, rate, seed=int(seconds * 100) + rate + i) for i in range(batch)]
        refs = [logfbank(u, rate, nfilt=40) for u in utts]
        if batch == 1:
            x = utts[0]
            fns = {
                "psf": lambda: logfbank(x, rate, nfilt=40),
                "default": lambda: features.log_mel_filterbank(x, rate).numpy(),
                "float64": lambda: features.log_mel_filterbank(
                    x, rate, compute_dtype=tf.float64).numpy(),
                "float32": lambda: features.log_mel_filterbank(
                    x, rate, compute_dtype=tf.float32).numpy(),
            }
            outputs = {name: [fn()] for name, fn in fns.items() if name != "psf"}
            mode = "one call"
        else:
            stacked = np.stack(utts)
            lengths = np.full([batch], stacked.shape[1], np.int32)

            def batched(dtype):
                return lambda: features.log_mel_filterbank_batch(
                    stacked, lengths, rate, compute_dtype=dtype)[0].numpy()

            fns = {"psf": lambda: [logfbank(u, rate, nfilt=40) for u in utts],
                   "default": batched(None), "float64": batched(tf.float64),
                   "float32": batched(tf.float32)}
            fns.update(fft_alone(utts, rate))
            outputs = {name: list(fn()) for name, fn in fns.items()
                       if name != "psf" and not name.startswith("fft")}
            mode = f"batch of {batch}"
        diffs = {name: float(max(np.abs(o[:len(r)] - r).max() for o, r in zip(out, refs)))
                 for name, out in outputs.items()}
        stats = interleaved(fns, repeats if batch == 1 else max(3, repeats // 2), min_seconds)
        what = "logfbank (numpy)" if batch == 1 else "logfbank loop"
        add(label, rate, seconds * batch, mode, "python_speech_features", what, True,
            stats["psf"], stats["psf"], 0.0)
        for name, variant, default in (("default", "default precision", True),
                                       ("float64", "float64 throughout", False),
                                       ("float32", "float32 (not parity-safe)", False)):
            add(label, rate, seconds * batch, mode, "keras-sf2f", variant, default,
                stats[name], stats["psf"], diffs[name])
        for name in ("fft64", "fft32"):
            if name in stats:
                add(label, rate, seconds * batch, mode, FFT_ALONE,
                    f"tf.signal.rfft only, {name[3:]}-bit", False, stats[name], stats["psf"],
                    None)

    def fft_alone(utts, rate):
        """The FFT the features need and nothing else: ``tf.signal.rfft`` of every utterance's
        frames, already cut and padded to 512 samples. Its ratio to python_speech_features is
        the ceiling of any implementation built on TensorFlow's FFT kernel."""
        length, step = features.frame_geometry(rate)
        frames = []
        for u in utts:
            n = features.num_frames(len(u), rate)
            padded = np.pad(u.astype(np.float64), (0, (n - 1) * step + length - len(u)))
            idx = np.arange(n)[:, None] * step + np.arange(min(length, 512))[None, :]
            frames.append(np.pad(padded[idx], [(0, 0), (0, max(0, 512 - length))]))
        stacked = np.concatenate(frames)
        out = {}
        for name, dtype in (("fft64", tf.float64), ("fft32", tf.float32)):
            x = tf.constant(stacked, dtype)
            out[name] = lambda x=x: tf.signal.rfft(x)
        return out

    for seconds in LENGTHS:
        label = f"{seconds:g} s"
        compare(label, 16000, seconds, 1)
        compare(label, 16000, seconds, max(1, int(round(BATCH_AUDIO_SECONDS / seconds))))
    if not quick:
        for rate in OTHER_RATES:
            compare(f"5 s @ {rate / 1000:g} kHz", rate, 5.0, 1)
    try:
        profiled = profile(30.0)
    except Exception as e:  # noqa: BLE001 - the profile is an extra
        profiled = {"error": f"{type(e).__name__}: {e}"}
    notes = [
        f"Medians of interleaved repetitions ({'quick' if quick else 'full'} mode); "
        f"TensorFlow {tf.__version__} with {threads} threads, numpy single-threaded.",
        "Input: int16 numpy arrays of speech-like audio; output: numpy float arrays; the "
        "public function is called eagerly, as a user would.",
        "max abs diff: largest absolute difference to python_speech_features' log filterbank "
        "(natural log, before normalisation) on that input.",
        f"{FFT_ALONE}: only the 512-point real FFT of the same frames (framed and padded "
        "beforehand, not timed), no pre-emphasis, power, filterbank or log: no feature "
        "implementation that uses TensorFlow's FFT kernel can beat its ratio to "
        "python_speech_features.",
    ]
    return {"rows": rows, "notes": notes, "profile": profiled}


def profile(seconds: float = 30.0, rate: int = 16000, repeats: int = 5) -> dict:
    """Where the time goes for one utterance: TensorFlow's per-op times (one thread, so that op
    times add up to the call; step stats of a graph run) for the default precision, and the
    stages of python_speech_features (process CPU time, best of ``repeats``)."""
    import collections  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415
    from python_speech_features import base, logfbank, sigproc  # noqa: PLC0415

    from keras_sf2f.audio import features  # noqa: PLC0415

    x = speech(seconds, rate, seed=7)
    graph = tf.Graph()
    with graph.as_default():
        samples = tf.compat.v1.placeholder(tf.int16, [None])
        out = features.log_mel_filterbank(samples, rate)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                      inter_op_parallelism_threads=1)
    per_run = []
    walls = []
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        for _ in range(2):
            session.run(out, {samples: x})
        for _ in range(repeats):
            metadata = tf.compat.v1.RunMetadata()
            started = time.perf_counter()
            session.run(out, {samples: x}, run_metadata=metadata,
                        options=tf.compat.v1.RunOptions(
                            trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
            walls.append(time.perf_counter() - started)
            totals = collections.Counter()
            per_run.append(totals)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    label = node.timeline_label
                    op = label.split("=", 1)[1].split("(")[0].strip() if "=" in label else \
                        node.node_name.split(":")[0]
                    totals[op] += node.op_end_rel_micros - node.op_start_rel_micros
    # Per op type the best run: on a shared machine the minimum drops the time other
    # processes held the core.
    totals = collections.Counter({op: min(run.get(op, 0) for run in per_run)
                                  for run_ops in per_run for op in run_ops})
    op_total = sum(totals.values()) or 1
    groups = {"RFFT": "FFT (float64)", "GatherV2": "framing (gather)",
              "MatMul": "filterbank product (float32)"}
    grouped = collections.Counter()
    for op, micros in totals.items():
        grouped[groups.get(op, "pre-emphasis, masks, casts, squares, log, other ops")] += micros
    tf_rows = [{"stage": stage, "ms": micros / 1e3, "share": micros / op_total}
               for stage, micros in grouped.most_common()]
    top_ops = [{"op": op, "ms": micros / 1e3} for op, micros in totals.most_common(10)]

    def cpu_best(fn):
        """Best wall time, as for the TensorFlow ops (numpy here runs on one thread)."""
        fn()
        best = float("inf")
        for _ in range(repeats):
            c0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - c0)
        return best * 1e3

    length, step = features.frame_geometry(rate)
    y = sigproc.preemphasis(x, 0.97)
    frames = sigproc.framesig(y, length, step)
    power = sigproc.powspec(frames, 512)
    fb = base.get_filterbanks(40, 512, rate)
    total = cpu_best(lambda: logfbank(x, rate, nfilt=40))
    fft = cpu_best(lambda: np.fft.rfft(frames, 512))
    psf_rows = [
        ("pre-emphasis", cpu_best(lambda: sigproc.preemphasis(x, 0.97))),
        ("framing (index matrix, fancy indexing, window)",
         cpu_best(lambda: sigproc.framesig(y, length, step))),
        ("FFT (numpy float64)", fft),
        ("magnitude, square", max(0.0, cpu_best(lambda: sigproc.powspec(frames, 512)) - fft)),
        ("filterbank matrix (python loops)", cpu_best(lambda: base.get_filterbanks(40, 512,
                                                                                   rate))),
        ("filterbank product", cpu_best(lambda: np.dot(power, fb.T))),
    ]
    psf = [{"stage": stage, "ms": ms, "share": ms / total} for stage, ms in psf_rows]
    return {"seconds": seconds, "frames": int(frames.shape[0]), "tensorflow": tf_rows,
            "tensorflow_op_ms": op_total / 1e3, "tensorflow_top_ops": top_ops,
            "tensorflow_wall_ms": float(min(walls)) * 1e3,
            "psf": psf, "psf_total_ms": total}


def profile_markdown(p: dict) -> str:
    lines = [f"Where the time goes, one {p['seconds']:g} s utterance ({p['frames']} frames), "
             f"one thread: TensorFlow default precision, sum of op times "
             f"{p['tensorflow_op_ms']:.1f} ms (best call {p['tensorflow_wall_ms']:.1f} ms; "
             "per op type its best of the runs); python_speech_features "
             f"{p['psf_total_ms']:.1f} ms (best call; stages timed alone, best of runs).", "",
             "| implementation | stage | ms | share |", "|---|---|---|---|"]
    for r in p["tensorflow"]:
        lines.append(f"| keras-sf2f | {r['stage']} | {r['ms']:.2f} | {r['share']:.0%} |")
    for r in p["psf"]:
        lines.append(f"| python_speech_features | {r['stage']} | {r['ms']:.2f} | "
                     f"{r['share']:.0%} |")
    lines += ["", "TensorFlow op types by time: " + ", ".join(
        f"{r['op']} {r['ms']:.2f} ms" for r in p["tensorflow_top_ops"]) + "."]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = ["| audio | call | implementation | variant | median ms | audio s / s | "
             "vs psf (wall) | vs psf (CPU) | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cpu = r.get("cpu_speedup_vs_psf")
        lines.append(
            f"| {r['audio']} | {r['mode']} | {r['implementation']} | {r['variant']} | "
            f"{r['median_ms']:.3f} | "
            f"{r['audio_s_per_s']:.0f} | {r['speedup_vs_psf']:.1f}x | "
            f"{'' if cpu is None else format(cpu, '.1f') + 'x'} | "
            f"{'-' if r['max_abs_diff'] is None else format(r['max_abs_diff'], '.1e')} |")
    if result.get("profile") and "error" not in result["profile"]:
        lines += ["", profile_markdown(result["profile"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 kHz only, fewer repetitions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = measure(args.quick, args.threads, log=lambda s: print(s, flush=True))
    from bench_common import print_result  # noqa: PLC0415 (beside this script)
    print_result(result, markdown, args.json)


if __name__ == "__main__":
    main()
