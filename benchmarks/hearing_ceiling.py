r"""What any model that hears the voice this well could reach: the oracle for imperfect hearing.

    .venv/bin/python benchmarks/hearing_ceiling.py --data_dir=runs/demo/data \
        --face_network=runs/demo/face_net [--split=val] [--runs=5] \
        [--checkpoint_dir=runs/demo/stage1] [--voice_probe=voice_probe/voice_probe.json] \
        [--hearing=age=0.5,size=0.87] [--output=hearing.json]

The evaluation's voice-only oracle (``keras_sf2f/evaluation/oracle.py``) draws the face a
pixel-loss model aims at when it reads every voice-linked factor perfectly: the pixel mean of
16 faces that share the identity's factors. No model reads the voice perfectly, so that
ceiling is too high to judge a model by. Here the same mean face is drawn for a voice read
with a given accuracy per factor (``oracle.heard_mean_faces``: per identity and run one
Gaussian reading with Pearson r to the truth, and the 16 faces drawn from what the factors
could be given that reading) and scored like a model's faces (``Evaluator``: recall@10 per
embedder, detection, effective templates).

The rows, each an accuracy per factor (gender, age, size, weight, accent, breathiness):

* ``perfect``: r = 1 for every factor, the evaluation's ``voice only, mean of 16`` oracle;
* ``checkpoint``: the hearing of a trained model (``--checkpoint_dir``): a ridge read-out of
  its voice embedding (mean over 5 s crops) fitted on the training identities, its r on the
  split's identities (negative r counts as 0);
* ``voice_probe``: the r of ``benchmarks/voice_attribute_probe.py``'s output (an encoder
  trained on the true factors: about the best the demo's encoder hears);
* ``--hearing``: given values, the other factors perfect (repeat the flag for more rows).

The model's own figures at the same split and runs are ``benchmarks/demo_quality.py``'s; a
model well below the ceiling of its own hearing loses in how it draws, one near it in what
it hears. Procedural corpus only (the factors must be known). Writes ``--output`` as JSON and
``--faces_png`` as a grid: per identity (rows) its photo, then each row's face of the first run
(columns), shown at 128 px with nearest-neighbour upscaling as in the report's ``faces.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_sf2f import files  # noqa: E402
from keras_sf2f.data.corpus.attributes import SHARED_FIELDS  # noqa: E402
from keras_sf2f.machine import cpu_model  # noqa: E402

#: Crops per identity of the checkpoint read-out (5 s each, embeddings averaged).
TRAIN_CROPS, SPLIT_CROPS = 2, 3
#: Ridge penalty of the read-out, on standardised embeddings (1-100 gave the same r within
#: 0.01 on the demo's seed-0 stage 1).
RIDGE = 10.0


def parse_hearing(text: str) -> np.ndarray:
    """``"age=0.5,size=0.87"`` -> r per factor in ``SHARED_FIELDS`` order (others 1)."""
    accuracy = dict.fromkeys(SHARED_FIELDS, 1.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in accuracy:
            raise SystemExit(f"error: --hearing={text!r}: expected factor=r pairs with "
                             f"factors among {', '.join(SHARED_FIELDS)}")
        try:
            r = float(value)
        except ValueError:
            raise SystemExit(f"error: --hearing={text!r}: {value!r} is not a number") from None
        if not 0.0 <= r <= 1.0:
            raise SystemExit(f"error: --hearing={text!r}: r must be in [0, 1], got {r}")
        accuracy[name.strip()] = r
    return np.array([accuracy[k] for k in SHARED_FIELDS])


def probe_hearing(path: str) -> np.ndarray:
    """The r per factor of a ``voice_attribute_probe.py`` output (negative r counts as 0)."""
    try:
        with open(path) as f:
            figures = json.load(f)["val"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: --voice_probe={path}: not a voice_attribute_probe.py output "
                         f"({type(e).__name__}: {e})") from None
    missing = [k for k in SHARED_FIELDS if k not in figures]
    if missing:
        raise SystemExit(f"error: {path} has no r for {', '.join(missing)} (run the probe "
                         f"with --target=attributes)")
    return np.clip([figures[k]["r"] for k in SHARED_FIELDS], 0.0, 1.0)


def ridge_hearing(train_x, train_y, test_x, test_y, penalty: float = RIDGE) -> np.ndarray:
    """r per column of ``test_y`` of a ridge regression from standardised ``train_x``
    (negative r counts as 0; a constant prediction or truth scores 0)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6

    def design(x):
        return np.c_[(x - mean) / std, np.ones(len(x))]

    a = design(train_x)
    weights = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ train_y)
    guess = design(test_x) @ weights
    out = []
    for j in range(test_y.shape[1]):
        if np.std(guess[:, j]) < 1e-12 or np.std(test_y[:, j]) < 1e-12:
            out.append(0.0)
        else:
            out.append(max(0.0, float(np.corrcoef(guess[:, j], test_y[:, j])[0, 1])))
    return np.array(out)


def checkpoint_hearing(checkpoint_dir: str, data_dir: str, split: str, seed: int) -> np.ndarray:
    """How well a trained model's voice embedding carries each factor (``ridge_hearing`` of
    its 5 s crop embeddings, training identities -> ``split``'s)."""
    import tensorflow as tf  # noqa: PLC0415

    from keras_sf2f.data import pipelines, table  # noqa: PLC0415
    from keras_sf2f.data.corpus.attributes import identity_attributes  # noqa: PLC0415
    from keras_sf2f.evaluation import evaluate as ev, oracle  # noqa: PLC0415

    model_config, _ = ev.model_config_for_checkpoint(checkpoint_dir)
    if model_config is None:
        raise SystemExit(f"error: {checkpoint_dir} has no train_config.json or flags.cfg")
    generator, _, _ = ev.load_generator(checkpoint_dir, model_config)

    @tf.function(input_signature=[tf.TensorSpec([None, None, model_config.input_channels],
                                                tf.float32)])
    def embed(mels):
        return tf.reshape(generator.encoder(mels, training=False), [tf.shape(mels)[0], -1])

    def embeddings(name: str, crops: int):
        part = table.load_split(data_dir, name,
                                voice_quality=model_config.voice_quality_channels)
        info = oracle.procedural_identities(data_dir, name, part.names)
        xs, ys = [], []
        for mels, label, _ in pipelines.evaluation_crops(part, frames=500,
                                                         crops_per_identity=crops, seed=seed):
            xs.append(embed(mels).numpy().mean(0))
            identity = info["identities"][int(np.asarray(label).reshape(-1)[0])]
            ys.append(identity_attributes(info["seed"], identity).vector(SHARED_FIELDS))
        return np.stack(xs), np.stack(ys)

    train_x, train_y = embeddings("train", TRAIN_CROPS)
    test_x, test_y = embeddings(split, SPLIT_CROPS)
    return ridge_hearing(train_x, train_y, test_x, test_y)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", required=True, help="Prepared procedural corpus.")
    p.add_argument("--face_network", required=True, help="The face-identity network.")
    p.add_argument("--split", default="val", help="Split whose identities are scored.")
    p.add_argument("--runs", type=int, default=5,
                   help="Runs (fresh donors and readings each); the mean is reported.")
    p.add_argument("--seed", type=int, default=0, help="Donors, readings and crops.")
    p.add_argument("--checkpoint_dir", default=None,
                   help="A trained model whose voice embedding's hearing is one row.")
    p.add_argument("--voice_probe", default=None,
                   help="A voice_attribute_probe.py voice_probe.json whose r is one row.")
    p.add_argument("--hearing", action="append", default=[],
                   help="factor=r pairs, e.g. age=0.5,size=0.87 (others perfect); repeatable.")
    p.add_argument("--no_dlib", action="store_true", help="Skip dlib's recogniser.")
    p.add_argument("--output", default=None, help="JSON file to write.")
    p.add_argument("--faces_png", default=None,
                   help="PNG grid to write: photos, then each row's faces (first run).")
    p.add_argument("--grid_identities", type=int, default=10,
                   help="Identities (rows) in --faces_png.")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs must be >= 1, got {args.runs}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    rows = {"perfect": np.ones(len(SHARED_FIELDS))}
    for text in args.hearing:
        rows[f"hearing {text}"] = parse_hearing(text)
    if args.voice_probe:
        rows["voice_probe"] = probe_hearing(args.voice_probe)

    from keras_sf2f.evaluation import evaluate as ev, oracle  # noqa: PLC0415
    from keras_sf2f.image_ranges import pixels_to_normalized  # noqa: PLC0415

    # Checked before any work: the checkpoint read-out needs the factors too.
    if oracle.procedural_source(args.data_dir) is None:
        raise SystemExit(f"error: {args.data_dir} is not a procedural corpus: the ceiling "
                         f"needs the identities' factors")
    if args.checkpoint_dir:
        rows["checkpoint"] = checkpoint_hearing(args.checkpoint_dir, args.data_dir,
                                                args.split, args.seed)
    config = ev.EvaluationConfig(data_dir=args.data_dir, split=args.split, durations=(5.0,),
                                 runs=args.runs, seed=args.seed, detection=True,
                                 diversity=True)
    embedders, _ = ev.make_embedders(args.face_network, use_dlib=not args.no_dlib)
    evaluator = ev.Evaluator(config, embedders, 64)
    info = oracle.procedural_identities(args.data_dir, args.split, evaluator.split.names)
    seed, identities = info["seed"], info["identities"]
    scale = oracle.factor_scale(seed, range(*info["donor_range"]))
    # The evaluation oracle's donors for its mean of 16, so "perfect" is its row exactly.
    donors = oracle.donor_draws(info["donor_range"], len(identities),
                                args.runs * oracle.MEAN_DRAWS, args.seed + 1)
    out = {"data_dir": os.path.abspath(args.data_dir), "split": args.split,
           "identities": len(identities), "runs": args.runs, "factors": list(SHARED_FIELDS),
           "checkpoint": args.checkpoint_dir, "cpu": cpu_model(), "rows": {}}
    columns = {"photo": evaluator.faces[evaluator.first_faces]}
    for name, accuracy in rows.items():
        rng = np.random.default_rng([args.seed, 0x4EA2])

        def faces(run, accuracy=accuracy, rng=rng):
            block = donors[run * oracle.MEAN_DRAWS:(run + 1) * oracle.MEAN_DRAWS]
            return pixels_to_normalized(oracle.heard_mean_faces(
                seed, identities, block, 64, accuracy, scale, rng, info["quality"])).numpy()

        results, figures, first = evaluator.score_runs_with_figures(
            faces(run) for run in range(args.runs))
        columns[name] = first
        row = {"accuracy": dict(zip(SHARED_FIELDS, map(float, accuracy))),
               "recall@10": {e.name: {"mean": results[e.name]["recall@10"]["mean"],
                                      "std": float(np.sqrt(
                                          results[e.name]["recall@10"]["variance"]))}
                             for e in embedders},
               "detection": figures["detection_rate"]["mean"],
               "effective_templates": figures["effective_templates"]["mean"]}
        out["rows"][name] = row
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["accuracy"].items())
              + " -> " + ", ".join(f"{e} recall@10 {v['mean']:.3f} (sd {v['std']:.3f})"
                                   for e, v in row["recall@10"].items())
              + f", detection {row['detection']:.2f}, effective templates "
              f"{row['effective_templates']:.1f}", flush=True)
    if args.faces_png:
        count = min(args.grid_identities, len(identities))
        ev.write_grid(args.faces_png, columns, list(evaluator.split.names), count)
    out["seconds"] = round(time.monotonic() - started, 1)
    if args.output:
        with files.atomic_write(args.output) as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
