"""End-to-end serving latency and throughput of exported models (random weights).

    python benchmarks/bench_serving.py [--configs=configs/sf2f_64.cfg,configs/sf2f_128.cfg]
        [--requests=20] [--concurrency=4] [--work_dir=/tmp/bench_serving]

--work_dir: where each invocation makes its own scratch directory, kept afterwards (default: a
temporary directory, removed at the end).

For each configuration: builds the generator with random weights, writes a checkpoint with its
flags.cfg, exports it (export time reported), then measures WAV bytes -> PNG

* through the SavedModel in this process (``serving_default`` of ``tf.saved_model.load``);
* through the development server (export/serve.py in a subprocess, REST + JSON + base64 over a
  kept-alive connection on 127.0.0.1),

for 1.25 s (one window: 1.27 s of audio gives the 125 frames), 5 s and 30 s of 16 kHz 16-bit
speech-like audio (the energy gate keeps all of it; 30 s is cut to the first 20 windows, 25 s),
p50 and p99 over ``--requests`` timed requests after 2 warm-up requests (with few requests p99
is close to the maximum). Then the server's throughput with ``--concurrency`` clients sending
5 s requests. Prints a markdown table.
"""

import argparse
import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
# Before TensorFlow: importing the package sets its CPU kernel default.
from keras_sf2f import machine  # noqa: E402

DURATIONS = (("1.25 s", 1.27), ("5 s", 5.0), ("30 s", 30.0))


def wav_of(seconds: float, seed: int) -> bytes:
    import soundfile as sf  # noqa: PLC0415
    from keras_sf2f.serving.savedmodel import speech_like  # noqa: PLC0415
    buffer = io.BytesIO()
    samples = np.clip(np.rint(speech_like(seconds, 16000, seed=seed)), -32768, 32767)
    sf.write(buffer, samples.astype(np.int16), 16000, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def percentiles(times):
    ms = np.asarray(times) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def export_random(config_path: str, work_dir: str, name: str):
    import tensorflow as tf  # noqa: PLC0415
    from keras_sf2f.models import builder  # noqa: PLC0415
    from keras_sf2f.serving import savedmodel  # noqa: PLC0415

    config = savedmodel.model_config_from_flagfile(config_path)
    generator = builder.build_generator(config)
    run_dir = os.path.join(work_dir, f"{name}_run")
    os.makedirs(run_dir)
    tf.train.CheckpointManager(tf.train.Checkpoint(generator=generator), run_dir,
                               max_to_keep=1).save()
    shutil.copy(config_path, os.path.join(run_dir, "flags.cfg"))
    started = time.perf_counter()
    exported = savedmodel.export_checkpoint(run_dir, os.path.join(work_dir, "models", name))
    return exported, time.perf_counter() - started, builder.parameter_count(generator)


class Client:
    def __init__(self, port: int, model: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.path = f"/v1/models/{model}:predict"

    def predict(self, wav: bytes) -> bytes:
        body = json.dumps({"instances": [{"audio": {"b64": base64.b64encode(wav).decode()}}]})
        self.conn.request("POST", self.path, body=body,
                          headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(payload[:500])
        return base64.b64decode(json.loads(payload)["predictions"][0]["image_png_bytes"]["b64"])


def start_server(base: str, model: str):
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "export", "serve.py"), f"--model_base_path={base}",
         f"--model_name={model}", "--rest_api_port=0"],
        # As a user starts it: the server picks its own CPU kernels unless the user chose.
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=machine.user_environment())
    line = process.stdout.readline()
    if not line.startswith("listening on"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    port = int(line.strip().rsplit(":", 1)[1])
    deadline = time.time() + 600
    while time.time() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", f"/v1/models/{model}")
            response = conn.getresponse()
            if response.status == 200 and b"AVAILABLE" in response.read():
                return process, port
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not load the model")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="configs/sf2f_64.cfg,configs/sf2f_128.cfg")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--throughput_requests", type=int, default=24)
    parser.add_argument("--work_dir", default=None)
    args = parser.parse_args()

    import tensorflow as tf  # noqa: PLC0415

    # A fresh directory per invocation (inside --work_dir when given), so that a rerun with
    # the same --work_dir never meets the previous run's checkpoint and export.
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix="bench_serving_", dir=args.work_dir)
    audio = {label: [wav_of(seconds, seed) for seed in range(3)]
             for label, seconds in DURATIONS}
    rows, notes = [], []
    for config_path in args.configs.split(","):
        name = os.path.splitext(os.path.basename(config_path))[0]
        exported, export_seconds, parameters = export_random(
            os.path.join(REPO, config_path), work_dir, name)
        size = exported.module.image_size
        notes.append(f"{name}: {parameters:,} generator parameters, {size} px; export "
                     f"(trace, save, reload, warm-up check) {export_seconds:.0f} s")
        fn = exported.loaded.signatures["serving_default"]
        for label, _ in DURATIONS:
            clips = audio[label]
            for k in range(2):
                fn(audio=tf.constant([clips[k % 3]]))
            times = []
            for k in range(args.requests):
                started = time.perf_counter()
                out = fn(audio=tf.constant([clips[k % 3]]))
                out["image_png_bytes"].numpy()
                times.append(time.perf_counter() - started)
            rows.append((name, size, label, "SavedModel (in process)", *percentiles(times)))
        del fn
        process, port = start_server(os.path.dirname(exported.path), name)
        try:
            client = Client(port, name)
            for label, _ in DURATIONS:
                clips = audio[label]
                for k in range(2):
                    client.predict(clips[k % 3])
                times = []
                for k in range(args.requests):
                    started = time.perf_counter()
                    client.predict(clips[k % 3])
                    times.append(time.perf_counter() - started)
                rows.append((name, size, label, "dev server (REST)", *percentiles(times)))
            # Throughput: concurrent clients, 5 s requests.
            clips = audio["5 s"]
            per_client = max(1, args.throughput_requests // args.concurrency)
            errors = []

            def worker(index):
                c = Client(port, name)
                try:
                    for k in range(per_client):
                        c.predict(clips[(index + k) % 3])
                except Exception as e:  # noqa: BLE001
                    errors.append(e)

            threads = [threading.Thread(target=worker, args=(i,))
                       for i in range(args.concurrency)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            if errors:
                raise errors[0]
            total = per_client * args.concurrency
            notes.append(f"{name}: {total} requests of 5 s audio from {args.concurrency} "
                         f"concurrent clients through the dev server in {elapsed:.1f} s: "
                         f"{total / elapsed:.2f} requests/s ({total * 5 / elapsed:.1f} s of "
                         f"audio per second)")
        finally:
            process.terminate()
            process.wait(timeout=60)

    print(f"\n{os.cpu_count()} CPU cores; {args.requests} timed requests per row\n")
    print("| model | px | audio | path | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, size, label, path, p50, p99 in rows:
        print(f"| {name} | {size} | {label} | {path} | {p50:.0f} | {p99:.0f} |")
    print()
    for note in notes:
        print(f"- {note}")
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
