"""Does mixed_bfloat16 training track float32? The same demo run in both precisions, step by step.

    python benchmarks/bf16_curves.py --data_dir=runs/demo/data \
        --face_network=runs/demo/face_net --output_dir=runs/bf16_check [--steps=60]

Trains ``trainers/train.py --flagfile=configs/demo.cfg`` twice from the same seed (same initial
weights, same batches): ``--mixed_precision=float32`` and ``--mixed_precision=mixed_bfloat16``,
both with the reference's four loss terms (the demo's own recipe has no GAN or AC term, so it
would leave the discriminators out of the comparison) and without the voice pre-training.
Reads both runs' generator and discriminator total losses from TensorBoard, draws them into
``OUTPUT_DIR/bf16_curves.png`` (and one PNG per further tag), and writes ``bf16_check.json``:
per tag the mean absolute and relative difference over all steps, the means of the last
``--window`` steps of each run, and each run's wall time (start-up included).

bfloat16 keeps 8 bits of mantissa, so single steps differ by ~1%; what matters is that the
curves follow each other. On CPUs without AVX512_BF16/AMX bfloat16 is emulated and the bf16
run is several times slower (see benchmarks/results.md); it is a correctness check, not a
speed claim.
"""

import json
import os
import shutil
import subprocess
import time

from absl import app, flags

from curves import demo_train_command, plot, scalars, train_env  # beside this script
from keras_sf2f.evaluation.ablations.catalog import REFERENCE_LOSS_FLAGS

flags.DEFINE_string("data_dir", "runs/demo/data", "Prepared corpus (scripts/main_job.sh).")
flags.DEFINE_string("face_network", "runs/demo/face_net", "Face-identity network.")
flags.DEFINE_string("output_dir", "runs/bf16_check", "Where the two runs go (replaced).")
flags.DEFINE_integer("steps", 60, "Training steps of each run.", lower_bound=2)
flags.DEFINE_integer("batch_size", 32, "Batch size of both runs (the demo's).", lower_bound=1)
flags.DEFINE_integer("window", 10, "Final steps averaged for the end-of-run comparison.",
                     lower_bound=1)
flags.DEFINE_list("tags", ["loss/total_loss", "d_loss/total_loss"], "Scalars compared.")
FLAGS = flags.FLAGS

PRECISIONS = ("float32", "mixed_bfloat16")


def _train(model_dir: str, precision: str) -> float:
    """Runs one training; returns its wall time in seconds."""
    command = demo_train_command(
        model_dir, FLAGS.data_dir, FLAGS.face_network, f"--train_steps={FLAGS.steps}",
        f"--batch_size={FLAGS.batch_size}", f"--mixed_precision={precision}",
        f"--checkpoint_every_steps={FLAGS.steps}", "--log_every_seconds=30",
        *REFERENCE_LOSS_FLAGS)
    log_path = model_dir + ".log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        done = subprocess.run(command, env=train_env(), stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        with open(log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{precision} training failed (exit {done.returncode}); "
                           f"{log_path}:\n{tail}")
    return time.monotonic() - started


def compare(a: dict, b: dict, window: int) -> dict:
    """Step-by-step comparison of two ``{step: value}`` curves (``b`` against ``a``)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two curves share no step")
    diffs = [abs(a[s] - b[s]) for s in common]
    scale = sum(abs(a[s]) for s in common) / len(common)
    last = common[-window:]
    return {"steps": len(common), "mean_abs_diff": sum(diffs) / len(diffs),
            "max_abs_diff": max(diffs),
            "mean_rel_diff": sum(diffs) / len(diffs) / scale if scale > 0 else None,
            "first_step": {"float32": a[common[0]], "mixed_bfloat16": b[common[0]]},
            f"mean_of_last_{len(last)}": {"float32": sum(a[s] for s in last) / len(last),
                                          "mixed_bfloat16": sum(b[s] for s in last) / len(last)}}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for path in (FLAGS.data_dir, FLAGS.face_network):
        if not os.path.exists(path):
            raise app.UsageError(f"{path} does not exist: run scripts/main_job.sh first")
    shutil.rmtree(FLAGS.output_dir, ignore_errors=True)
    os.makedirs(FLAGS.output_dir)
    seconds = {}
    for precision in PRECISIONS:
        print(f"training {FLAGS.steps} steps, {precision} ...", flush=True)
        seconds[precision] = _train(os.path.join(FLAGS.output_dir, precision), precision)
        print(f"  {seconds[precision]:.0f} s", flush=True)
    result = {"steps": FLAGS.steps, "batch_size": FLAGS.batch_size,
              "wall_seconds": seconds, "tags": {}, "plots": []}
    for i, tag in enumerate(FLAGS.tags):
        curves = {p: scalars(os.path.join(FLAGS.output_dir, p), tag) for p in PRECISIONS}
        result["tags"][tag] = compare(curves["float32"], curves["mixed_bfloat16"],
                                      FLAGS.window)
        name = "bf16_curves.png" if i == 0 else \
            f"bf16_curves_{tag.replace('/', '_')}.png"
        plot(curves, os.path.join(FLAGS.output_dir, name), f"{tag} per step")
        result["plots"].append(name)
    with open(os.path.join(FLAGS.output_dir, "bf16_check.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
