"""Quick quality check of a demo checkpoint: are the faces faces, different, and whose?

    .venv/bin/python benchmarks/demo_quality.py --checkpoint_dir=runs/demo/stage2 \
        --data_dir=runs/demo/data --face_network=runs/demo/face_net --split=val --runs=3 \
        [--untrained] [--oracle] [--ground_truth] [--attributes] [--all_windows] \
        [--durations=5] [--flagfile=configs/demo.cfg] [--output=quality.json]

Prints one JSON object (also written to --output when given). For the checkpoint (and, when
asked, the same architecture untrained, the voice-attribute oracle and the ground-truth
photos), per protocol (``crops_5s`` by default: one random 5 s crop per identity per run):

* ``detection_rate``: fraction of faces in which dlib's HOG frontal face detector finds a face
  after bicubic upscaling to 256 px (keras_sf2f/evaluation/detection.py);
* ``diversity_ratio_pixels`` / ``diversity_ratio_<embedder>``, ``templates``,
  ``effective_templates``, ``largest_template_share``, ``collapsed`` (fraction of runs
  flagged): how different the identities' faces are relative to the ground truth's
  (keras_sf2f/evaluation/diversity.py);
* ``recall@10`` with the face-identity network and with dlib's recogniser (chance 10 / N);
* with ``--attributes``: the attribute reader's correlations (attribute_reader.py; adds the
  reader's training, about half a minute on 2 cores).

Every figure is ``{"mean", "std", "runs"}`` over runs. The model configuration comes from the
checkpoint directory's train_config.json / flags.cfg (or its parent's), else --flagfile.
Choose on ``--split=val``; ``test`` is for the final report.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sf2f.machine import cpu_model  # noqa: E402


def _cell(summary: dict) -> dict:
    return {"mean": summary["mean"], "std": summary["variance"] ** 0.5, "runs": summary["runs"]}


def _rows(results: dict, figures: dict, embedders, k: int) -> dict:
    """{protocol: {figure: cell, "recall@k": {embedder: cell}}} from Evaluator outputs."""
    out = {}
    for protocol in sorted(set(results) | set(figures)):
        row = {name: _cell(v) for name, v in figures.get(protocol, {}).items()}
        recall = {e: _cell(results[protocol][e][f"recall@{k}"]) for e in embedders
                  if protocol in results and f"recall@{k}" in results[protocol].get(e, {})}
        if recall:
            row[f"recall@{k}"] = recall
        out[protocol] = row
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint_dir", help="Checkpoint directory or prefix to evaluate.")
    p.add_argument("--data_dir", required=True, help="Prepared data directory.")
    p.add_argument("--face_network", required=True, help="Face-identity network directory.")
    p.add_argument("--split", default="val", help="Split to evaluate (default val).")
    p.add_argument("--runs", type=int, default=3, help="Random crops per identity (runs).")
    p.add_argument("--durations", default="5", help="Crop durations in seconds, comma list.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the crops.")
    p.add_argument("--all_windows", action="store_true",
                   help="Also the fuser protocol (every 125-frame window, one run).")
    p.add_argument("--flagfile", help="Model flags when the checkpoint directory has no "
                                      "train_config.json / flags.cfg (e.g. configs/demo.cfg).")
    p.add_argument("--untrained", action="store_true",
                   help="Also the same architecture freshly initialised.")
    p.add_argument("--oracle", action="store_true",
                   help="Also the voice-attribute oracle (procedural corpus only).")
    p.add_argument("--ground_truth", action="store_true",
                   help="Also the ground-truth photos' figures (the ceiling).")
    p.add_argument("--attributes", action="store_true",
                   help="Also the attribute reader's correlations (trains the reader).")
    p.add_argument("--no_dlib", action="store_true", help="Skip dlib's recogniser.")
    p.add_argument("--k", type=int, default=10, help="Recall@K to report.")
    p.add_argument("--output", help="Also write the JSON here.")
    args = p.parse_args(argv)
    if not args.checkpoint_dir and not (args.untrained and args.flagfile):
        p.error("--checkpoint_dir is required (or --untrained with --flagfile)")
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    import tensorflow as tf  # noqa: PLC0415 - after the environment is set

    from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
    from keras_sf2f.evaluation.diversity import collapse_sentence  # noqa: PLC0415
    from keras_sf2f.evaluation.results import ORACLE_MODEL  # noqa: PLC0415
    from keras_sf2f.models.builder import build_generator  # noqa: PLC0415

    model_config, source, prefix, step = None, None, None, None
    if args.checkpoint_dir:
        model_config, source = ev.model_config_for_checkpoint(args.checkpoint_dir)
    if model_config is None:
        if not args.flagfile:
            raise SystemExit(f"{args.checkpoint_dir} has no train_config.json or flags.cfg: "
                             f"pass --flagfile")
        from keras_sf2f.serving.savedmodel import model_config_from_flagfile  # noqa: PLC0415
        model_config, source = model_config_from_flagfile(args.flagfile).validate(), \
            args.flagfile
    image_size = max(model_config.output_resolutions)

    config = ev.EvaluationConfig(
        data_dir=args.data_dir, split=args.split,
        durations=tuple(float(d) for d in args.durations.split(",") if d.strip()),
        runs=args.runs, seed=args.seed, fuser_protocol=args.all_windows,
        detection=True, diversity=True, attributes=args.attributes,
        voice_quality=model_config.voice_quality_channels)
    embedders, _ = ev.make_embedders(args.face_network, use_dlib=not args.no_dlib)
    evaluator = ev.Evaluator(config, embedders, image_size)
    names = [e.name for e in embedders]

    models = {}
    if args.checkpoint_dir:
        models["model"], prefix, step = ev.load_generator(args.checkpoint_dir, model_config)
    if args.untrained:
        import keras  # noqa: PLC0415
        keras.utils.set_random_seed(args.seed)
        models["untrained"] = build_generator(model_config)

    out = {"checkpoint": prefix, "step": step, "model_config": source,
           "data_dir": os.path.abspath(args.data_dir), "split": args.split,
           "identities": evaluator.split.num_identities, "runs": args.runs,
           "chance_recall": min(1.0, args.k / evaluator.gallery_size),
           "cpu": cpu_model(), "tensorflow": tf.__version__, "models": {}, "collapse": []}
    for name, generator in models.items():
        res = evaluator.evaluate(ev.FaceGenerator(generator, config.batch_size))
        out["models"][name] = _rows(res["results"], res["figures"], names, args.k)
    if args.oracle:
        res = evaluator.oracle()
        if res is not None:
            out["models"][ORACLE_MODEL] = _rows(res["results"], res["figures"], names,
                                                   args.k)
    if args.ground_truth:
        out["models"][ev.GROUND_TRUTH_MODEL] = _rows({}, evaluator.ground_truth_figures(),
                                                     names, args.k)
    for model, protocols in out["models"].items():
        for protocol, row in protocols.items():
            if "effective_templates" in row:
                sentence = collapse_sentence(
                    model, protocol, row, evaluator.split.num_identities)
                if sentence:
                    out["collapse"].append(sentence)
    out["notes"] = list(evaluator.figure_notes)
    out["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
