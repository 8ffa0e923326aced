"""Stage-1 and fuser input pipeline throughput on a prepared data directory.

    python benchmarks/bench_pipeline.py --data_dir=runs/demo/data [--batch_size=64] [--steps=50]

Prints batches/s and examples/s for the stage-1 pipeline (64 and 128 px) and the fuser
pipeline, measured after a warm-up, so they can be compared with the training step's rate.
"""

import time

from absl import app, flags

from keras_sf2f.data import pipelines, table

flags.DEFINE_string("data_dir", "runs/demo/data", "Prepared data directory.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("steps", 50, "Batches to time (after 5 warm-up batches).")
flags.DEFINE_string("split", "train", "Split to read.")
FLAGS = flags.FLAGS


def _rate(ds, steps):
    it = iter(ds)
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps / (time.perf_counter() - t0)


def main(argv):
    del argv
    t0 = time.perf_counter()
    split = table.load_split(FLAGS.data_dir, FLAGS.split)
    print(f"loaded split {FLAGS.split!r}: {split.num_identities} identities, "
          f"{split.num_utterances} utterances, {split.num_faces} faces "
          f"in {time.perf_counter() - t0:.1f} s")
    b = FLAGS.batch_size
    rows = []
    for size in (64, 128):
        ds = pipelines.stage1_dataset(split, batch_size=b, image_size=size, seed=0)
        rows.append((f"stage-1 {size}px", _rate(ds, FLAGS.steps)))
    ds = pipelines.fuser_dataset(split, batch_size=b, image_size=64, seed=0)
    rows.append(("fuser 64px (20 x 125 frames)", _rate(ds, max(5, FLAGS.steps // 5))))
    print(f"\n| pipeline | batches/s | examples/s |   (batch {b})")
    print("|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:.1f} | {r * b:.0f} |")


if __name__ == "__main__":
    app.run(main)
