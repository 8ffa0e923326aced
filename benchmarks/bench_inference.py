"""Inference latency at batch 1: keras-sf2f (features included) against PyTorch eager.

    python benchmarks/bench_inference.py [--quick] [--configs=sf2f_64_fuser,sf2f_128_fuser]
        [--requests=N] [--json=OUT.json]

For 1.25 s, 5 s and 30 s of 16 kHz speech-like audio (1.27 s gives the 125 frames of one
window; 5 s gives 3 windows; 30 s gives 23, of which the protocol keeps the first 20), one
request at a time, p50 and p99 over the timed requests after warm-up requests. All paths do
the same model work: the evaluation / serving protocol of 125-frame windows (stride 125, at
most 20) encoded one by one, fused (attention fuser for the ``*_fuser`` configs), decoded to
the largest image. Random weights (time does not depend on them).

* ``keras graph``: one ``tf.function`` from the int16 waveform to the image
  (``keras_sf2f.serving.inference.waveform_to_face_function``): the samples of the windows
  used, then log mel filterbank (``keras_sf2f.audio.features``, default precision),
  normalisation, windows and encoder as XLA clusters (two groups of windows side by side from
  8 windows on, one below), then fusion and decoder as one more (``jit_compile``; compiled
  once per window count, during the warm-up requests). Features included. The SavedModel
  rows run no XLA (TF-Serving's XLA:CPU is off by default).
* ``no-XLA keras graph``: the previous Keras graph, for comparison: one plain ``tf.function``
  with the features of the whole waveform and the generator.
* ``keras eager``: the same steps with the Keras model called eagerly (op by op), as a
  PyTorch user would call a module. Features included (the feature function is traced).
* ``SavedModel predict_waveform``: the exported model (``keras_sf2f.serving.savedmodel``,
  reloaded with ``tf.saved_model.load``) from the float waveform: input checks, resampling
  (none at 16 kHz), energy gate, features, windows, model.
* ``SavedModel serving_default``: WAV bytes in, PNG bytes out (what a TF-Serving client
  sends and gets).
* ``PyTorch eager``: the reference modules (tests/torch_reference.py) in
  ``eval()`` under ``torch.no_grad()``, on features computed beforehand: **features
  excluded**. Runs in a subprocess with the same thread count, once with PyTorch's default
  OpenMP settings and once with ``OMP_WAIT_POLICY=PASSIVE`` (spinning OpenMP threads are
  badly hurt by any other load on a 2-core machine); the ratio column uses the faster.
* ``PyTorch eager + psf``: the same, with the reference's feature code
  (python_speech_features ``logfbank`` in numpy, normalisation, windows) timed inside the
  request.

The PyTorch workers stay alive for the whole run. The requests of one length are split into
rounds, and in every round each path (Keras and PyTorch) takes its turn, so all of them see the
same machine load on average.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import keras_sf2f  # noqa: E402,F401  (before TensorFlow: sets its CPU kernel default)

RATE = 16000
WINDOW = 125
MAX_WINDOWS = 20
DURATIONS = (("1.25 s", 1.27), ("5 s", 5.0), ("30 s", 30.0))


def audio_int16(seconds: float, seed: int) -> np.ndarray:
    from keras_sf2f.serving.savedmodel import speech_like  # noqa: PLC0415
    return np.clip(np.rint(speech_like(seconds, RATE, seed=seed)), -32768, 32767).astype(
        np.int16)


def wav_bytes(samples: np.ndarray) -> bytes:
    import soundfile as sf  # noqa: PLC0415
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def percentiles(times) -> dict:
    ms = np.asarray(times) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(ms.size)}


def time_requests(fn, inputs, warmup: int, requests: int) -> list:
    """Seconds per request (after ``warmup`` untimed requests)."""
    for k in range(warmup):
        fn(inputs[k % len(inputs)])
    times = []
    for k in range(requests):
        started = time.perf_counter()
        fn(inputs[k % len(inputs)])
        times.append(time.perf_counter() - started)
    return times


# ------------------------------------------------------------------------------------------
# PyTorch worker (a subprocess: reads one JSON command per line, answers one JSON line)
# ------------------------------------------------------------------------------------------

def psf_windows(samples: np.ndarray) -> np.ndarray:
    """The reference's features and windows: [1, W, 40, 125] normalised log mel (NCL)."""
    from python_speech_features import logfbank  # noqa: PLC0415
    mel = logfbank(samples, samplerate=RATE, nfilt=40)               # [frames, 40]
    mel = ((mel - 10.9915) / 3.1661).astype(np.float32)
    count = min(mel.shape[0] // WINDOW, MAX_WINDOWS)
    windows = mel[:count * WINDOW].reshape(count, WINDOW, 40).transpose(0, 2, 1)
    return np.ascontiguousarray(windows[None])


def _torch_worker(threads: int) -> None:
    import logging  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from bench_common import tests_module  # noqa: PLC0415 (beside this script)
    ref = tests_module("torch_reference")

    logging.disable(logging.WARNING)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    models = {}
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        command = json.loads(line)
        if command["op"] == "quit":
            break
        key = (command["fuser"], command["multires"])
        if key not in models:
            torch.manual_seed(0)
            model = ref.GeneratorRef(ref.VoiceEncoderRef(fuser=command["fuser"]),
                                     ref.UpsamplingDecoderRef(multires=command["multires"]))
            models[key] = model.eval()
        model = models[key]
        clips = [np.load(path) for path in command["audio"]]
        features = [torch.from_numpy(psf_windows(c)) for c in clips]
        windows = int(features[0].shape[1])

        def forward(x):
            # Without a fuser the reference averages the window embeddings (its
            # average_voice_embedding mode): feed the windows as a batch and average.
            with torch.no_grad():
                if command["fuser"]:
                    images, _ = model(x)
                else:
                    embedding = model.encoder(x[0]).mean(dim=0, keepdim=True)
                    images = model.decoder(embedding)
            return images[-1] if isinstance(images, tuple) else images

        def with_features(samples):
            return forward(torch.from_numpy(psf_windows(samples)))

        result = {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "windows": windows,
            "eager": time_requests(forward, features, command["warmup"], command["requests"]),
            "eager_psf": time_requests(with_features, clips, command["warmup"],
                                       command["requests"]),
        }
        print(json.dumps(result), flush=True)


class TorchWorker:
    def __init__(self, threads: int, passive: bool = False):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS="1")
        if passive:
            # OpenMP threads sleep instead of spinning between parallel regions: on a machine
            # with other work running, spinning threads steal the cores (measured here: the
            # same forward 84 ms passive, 840 ms spinning, at load 8 on 2 cores).
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        else:
            env.pop("OMP_WAIT_POLICY", None)
        # stderr to a file: a pipe nobody reads could fill up and block the worker.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch_worker", f"--threads={threads}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=env)

    def run(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise RuntimeError("PyTorch worker died: " + self.stderr.read()[-2000:])
        return json.loads(line)

    def close(self):
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


# ------------------------------------------------------------------------------------------
# Keras side
# ------------------------------------------------------------------------------------------

def keras_paths(generator):
    """(graph fn, eager fn, no-XLA graph fn): int16 waveform [S] -> largest image
    [1, H, W, 3]. The no-XLA graph is the previous "keras graph": features of the whole
    waveform and the generator in one plain ``tf.function``."""
    import tensorflow as tf  # noqa: PLC0415
    from keras_sf2f.audio import features  # noqa: PLC0415
    from keras_sf2f.serving import inference  # noqa: PLC0415

    def windows_of(waveform):
        mel = features.normalize_log_mel(features.log_mel_filterbank(waveform, RATE))
        count = tf.minimum(tf.shape(mel)[0] // WINDOW, MAX_WINDOWS)
        return tf.reshape(mel[:count * WINDOW], [1, count, WINDOW, 40])

    def forward(waveform):
        images, _ = generator(windows_of(waveform), training=False)
        return images[-1]

    graph = inference.waveform_to_face_function(generator, RATE, MAX_WINDOWS)
    plain = tf.function(forward, input_signature=[tf.TensorSpec([None], tf.int16)],
                        autograph=False)
    return ((lambda x: graph(x)[0].numpy()), (lambda x: forward(x).numpy()),
            (lambda x: plain(x).numpy()))


def model_flops(generator, windows: int) -> float | None:
    import tensorflow as tf  # noqa: PLC0415
    from bench_modules import _graph_flops  # noqa: PLC0415
    fn = tf.function(lambda m: generator(m, training=False)[0][-1],
                     input_signature=[tf.TensorSpec([1, windows, WINDOW, 40], tf.float32)],
                     autograph=False)
    flops = _graph_flops(fn.get_concrete_function())
    return None if flops is None else flops / 1e9


def measure(quick: bool = False, threads: int = 2, configs=None, requests: int | None = None,
            log=None) -> dict:
    import tensorflow as tf  # noqa: PLC0415
    from keras_sf2f.audio import features  # noqa: PLC0415
    from keras_sf2f.models import builder  # noqa: PLC0415
    from keras_sf2f.serving import savedmodel  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    configs = configs or (["sf2f_64_fuser"] if quick else ["sf2f_64_fuser", "sf2f_128_fuser"])
    requests = requests or (15 if quick else 60)
    rounds = 3 if quick else 4
    warmup = 3
    log = log or (lambda s: None)
    work = tempfile.mkdtemp(prefix="bench_inference_")
    rows, notes = [], []
    workers = {"default": TorchWorker(threads), "passive": TorchWorker(threads, passive=True)}
    try:
        for name in configs:
            config = savedmodel.model_config_from_flagfile(
                os.path.join(REPO, "configs", name + ".cfg"))
            generator = builder.build_generator(config)
            started = time.perf_counter()
            exported = savedmodel.export_generator(generator, os.path.join(work, name))
            notes.append(f"{name}: export (trace, save, reload, warm-up replay) "
                         f"{time.perf_counter() - started:.0f} s")
            loaded = exported.loaded
            predict_waveform = loaded.signatures["predict_waveform"]
            serving_default = loaded.signatures["serving_default"]
            graph_fn, eager_fn, plain_fn = keras_paths(generator)
            size = generator.output_resolutions[-1]
            for label, seconds in DURATIONS:
                clips = [audio_int16(seconds, seed) for seed in range(3)]
                paths = []
                for k, clip in enumerate(clips):
                    path = os.path.join(work, f"clip_{label.split()[0]}_{k}.npy")
                    np.save(path, clip)
                    paths.append(path)
                tensors = [tf.constant(c) for c in clips]
                floats = [tf.constant(c.astype(np.float32)[None]) for c in clips]
                wavs = [tf.constant([wav_bytes(c)]) for c in clips]
                windows = min(features.num_frames(len(clips[0]), RATE) // WINDOW, MAX_WINDOWS)
                gflop = model_flops(generator, windows)
                common = dict(config=name, px=size, audio=label, samples=len(clips[0]),
                              windows=windows, model_gflop=gflop)
                # Rounds: every path takes its turn in each round, so that Keras and PyTorch
                # see the same machine load (other processes come and go on a shared machine).
                per_round = -(-requests // rounds)
                raw = {}

                def timed(path, fn, inputs, first, count):
                    raw.setdefault(path, []).extend(
                        time_requests(fn, inputs, warmup if first else 0, count))

                for round_index in range(rounds):
                    first = round_index == 0
                    timed("keras graph (features included)", graph_fn, tensors, first,
                          per_round)
                    # The previous Keras graph (no XLA), for the A/B in the same rounds; not
                    # named "keras graph ..." so that run.py's verdict keeps to the one above.
                    timed("no-XLA keras graph (features included)", plain_fn, tensors, first,
                          per_round)
                    timed("SavedModel predict_waveform (features included)",
                          lambda x: predict_waveform(
                              waveform=x, sample_rate=tf.constant(RATE))["image"].numpy(),
                          floats, first, per_round)
                    timed("SavedModel serving_default (WAV -> PNG)",
                          lambda x: serving_default(audio=x)["image_png_bytes"].numpy(),
                          wavs, first, per_round)
                    if not quick:
                        timed("keras eager (features included)", eager_fn, tensors, first,
                              max(2, per_round // 4))
                    for policy, worker in workers.items():
                        result = worker.run(
                            op="run", fuser=config.fuser == "attention",
                            multires=len(generator.output_resolutions) > 1, audio=paths,
                            warmup=warmup if first else 0, requests=per_round)
                        if result["windows"] != windows:
                            raise RuntimeError(f"window count differs: keras {windows}, "
                                               f"torch {result['windows']}")
                        torch_info = result
                        if policy == "default":
                            raw.setdefault("PyTorch eager (features excluded)", []).extend(
                                result["eager"])
                        else:
                            raw.setdefault("PyTorch eager, OMP passive (features excluded)",
                                           []).extend(result["eager"])
                            raw.setdefault("PyTorch eager, OMP passive + psf features",
                                           []).extend(result["eager_psf"])
                timings = {path: percentiles(times) for path, times in raw.items()}
                # The baseline is PyTorch at its best of the two OpenMP settings.
                torch_p50 = min(timings["PyTorch eager (features excluded)"]["p50_ms"],
                                timings["PyTorch eager, OMP passive (features excluded)"]
                                ["p50_ms"])
                for path, stats in timings.items():
                    row = {**common, "path": path, **stats,
                           "torch_eager_over_this": torch_p50 / stats["p50_ms"]}
                    if gflop:
                        row["model_gflop_per_s"] = gflop / (stats["p50_ms"] / 1000.0)
                    rows.append(row)
                    log(f"{name} {label} {path}: p50 {stats['p50_ms']:.1f} ms, "
                        f"p99 {stats['p99_ms']:.1f} ms")
            notes.append(f"PyTorch {torch_info['torch']} with {torch_info['threads']} threads; "
                         f"TensorFlow {tf.__version__} with {threads} intra-op threads")
    finally:
        for worker in workers.values():
            worker.close()
        shutil.rmtree(work, ignore_errors=True)
    notes.append("PyTorch eager / this = the better PyTorch eager p50 (features excluded; "
                 "default or passive OpenMP waiting) / this path's p50: >= 1 means this "
                 "path is at least as fast as PyTorch at its best.")
    notes.append(f"{requests} timed requests per path and length, in {rounds} interleaved "
                 f"rounds (all paths take a turn in each round), after {warmup} warm-up "
                 "requests; with few requests p99 is close to the maximum.")
    return {"rows": rows, "notes": notes, "requests": requests}


def markdown(result: dict) -> str:
    lines = ["| config | audio | windows | path | p50 ms | p99 ms | PyTorch eager / this | "
             "model GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        rate = r.get("model_gflop_per_s")
        lines.append(f"| {r['config']} | {r['audio']} | {r['windows']} | {r['path']} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['torch_eager_over_this']:.2f} | "
                     f"{'' if rate is None else format(rate, '.1f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default=None, help="comma-separated configs/<name>.cfg")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        _torch_worker(args.threads)
        return
    result = measure(args.quick, args.threads,
                     args.configs.split(",") if args.configs else None, args.requests,
                     log=lambda s: print(s, flush=True))
    from bench_common import print_result  # noqa: PLC0415 (beside this script)
    print_result(result, markdown, args.json)


if __name__ == "__main__":
    main()
