"""The ablation tables over training seeds: one trainers/ablations.py output per seed, combined.

    python trainers/ablations.py --ablation_recipe=demo --output_dir=runs/ablations_s0
    python trainers/ablations.py --ablation_recipe=demo --ablation_seed=1 \
        --output_dir=runs/ablations_s1 [--variants=...]
    python benchmarks/ablation_seeds.py --recipe=demo --output=runs/ablation_seeds.md \
        runs/ablations_s0 runs/ablations_s1

One ablations command trains each row once, so its ± figures are the spread over evaluation
crops only; rows trained from different seeds differ by more (about ± 0.05 recall@10 for the
demo). This writes, per embedder, each row's recall@10 per seed and the mean over seeds, and
each of the paper's orderings (``keras_sf2f/evaluation/ablations/orderings.py``, the recipe's
claims) judged on every seed's own runs: a claim is established only when it holds on every
seed. Then each row's difference from full SF2F of the same seed, with its mean and standard
error over the seeds: the spread between training runs, which the per-seed verdicts (judged
against the spread over evaluation crops) do not see. Rows missing from a seed's directory are
shown as "-" for that seed.

A seed may also be given as a kept snapshot of an ablations run: a directory holding the
``ablations.csv`` the run wrote (as under ``docs/ablations/``), or that file itself. The CSV
carries each cell's mean, standard deviation and number of runs, and each row's training
command, whose ``--seed`` is the seed; so a seed trained on another machine can be combined
with one trained here after its run directory is gone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import statistics
import sys

from keras_sf2f import files, runs
from keras_sf2f.evaluation.ablations import orderings, variants
from keras_sf2f.evaluation.ablations.orderings import TABLE_PROTOCOLS, protocol_label


# The columns of tables.write_tables' ablations.csv this reads (besides each metric's pair).
_SNAPSHOT_COLUMNS = {"variant", "protocol", "embedder", "runs", "train_args"}


def _snapshot_csv(path: str) -> str | None:
    """The ablations.csv a path names (the file, or a directory holding it without a
    variants/ directory), else None."""
    if os.path.isfile(path) and path.endswith(".csv"):
        return path
    candidate = os.path.join(path, "ablations.csv")
    if os.path.isfile(candidate) and not os.path.isdir(os.path.join(path, "variants")):
        return candidate
    return None


def _seed_of(train_args: str) -> str:
    """The ``--seed`` of a training command line (the flagfile's when the command sets none)."""
    seed = "?"
    for arg in shlex.split(train_args):
        if arg.startswith("--seed="):
            seed = arg[len("--seed="):]
    return seed


def _one_seed(source: str, seeds: set, results: dict, what: str) -> tuple:
    """(the seed, results) of one seed's run; refuses a run with no ``what`` or several seeds."""
    if not results:
        raise ValueError(f"{source} has no {what}")
    if len(seeds) > 1:
        raise ValueError(f"{source} mixes training seeds {sorted(seeds)}")
    return seeds.pop(), results


def load_snapshot(csv_path: str) -> tuple:
    """(training seed, results) from a kept ablations.csv: the cells metrics.json holds, with
    the variance from the CSV's standard deviation (rounded to 6 digits, as written)."""
    results, seeds = {}, set()
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = sorted(_SNAPSHOT_COLUMNS - set(rows[0] if rows else ()))
    if missing:
        raise ValueError(f"{csv_path} is not an ablations.csv with rows (missing columns: "
                         f"{', '.join(missing)})")
    for line, row in enumerate(rows, start=2):
        if row["variant"] == "oracle" or not row["train_args"]:
            continue  # the oracle's reference rows: no model, no seed
        seeds.add(_seed_of(row["train_args"]))
        cells = {}
        try:
            for key, value in row.items():
                if key.endswith("_mean") and value:
                    metric = key[:-len("_mean")]
                    std = float(row.get(f"{metric}_std") or 0.0)
                    cells[metric] = {"mean": float(value), "variance": std * std,
                                     "runs": int(row["runs"])}
        except ValueError as e:
            raise ValueError(f"{csv_path}, line {line}: {e}") from None
        results.setdefault(row["variant"], {}).setdefault(row["protocol"], {})[
            row["embedder"]] = cells
    return _one_seed(csv_path, seeds, results, "trained variant")


def load_run(output_dir: str) -> tuple:
    """(training seed, {variant: its metrics.json results}) of one ablations output dir, or of
    a kept snapshot's ablations.csv (:func:`load_snapshot`)."""
    snapshot = _snapshot_csv(output_dir)
    if snapshot:
        return load_snapshot(snapshot)
    results, seeds = {}, set()
    variants_dir = os.path.join(output_dir, "variants")
    if not os.path.isdir(variants_dir):
        raise ValueError(f"{output_dir} has no variants/ (not a trainers/ablations.py output, "
                         f"nor a directory with its ablations.csv)")
    for name in sorted(os.listdir(variants_dir)):
        record_path = os.path.join(variants_dir, name, "variant.json")
        metrics_path = os.path.join(variants_dir, name, "report", "metrics.json")
        if not (os.path.isfile(record_path) and os.path.isfile(metrics_path)):
            continue  # not run, or not finished
        with open(record_path) as f:
            record = json.load(f)
        if record.get("status") != "done":
            continue
        with open(metrics_path) as f:
            results[name] = json.load(f)["results"][name]
        # The effective configuration the training wrote (the flagfile's seed unless the
        # command set one).
        effective = runs.read_flagfile(os.path.join(variants_dir, name, "model", "flags.cfg"))
        seeds.add(effective.get("seed", "?"))
    return _one_seed(output_dir, seeds, results, "finished variant")


def _value(results: dict, name: str, protocol: str, embedder: str, metric: str):
    try:
        return results[name][protocol][embedder][metric]["mean"]
    except KeyError:
        return None


def combine(seed_runs: list, recipe: str, metric: str = "recall@10") -> str:
    """Markdown: per embedder, every row's ``metric`` per seed and its mean over seeds, then
    the paper's orderings per seed. ``seed_runs``: [(seed, results)]."""
    chosen = variants(128, recipe)
    names = [v.name for v in chosen if any(v.name in r for _, r in seed_runs)]
    labels = {v.name: v.label for v in chosen}
    embedders = []
    for _, results in seed_runs:
        for per in results.values():
            for by_embedder in per.values():
                embedders += [e for e in by_embedder if e not in embedders]
    seeds = [str(s) for s, _ in seed_runs]
    lines = [f"# Ablations over training seeds ({recipe} recipe)", "",
             f"Training seeds: {', '.join(seeds)}. Each cell is one training run's {metric} "
             f"(its mean over evaluation crops); the last column is the mean over the seeds "
             f"that ran the row.", ""]
    for embedder in embedders:
        lines += [f"## {metric}, embedder `{embedder}`", "",
                  "| variant | input | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean |", "|---|---|" + "---|" * (len(seeds) + 1)]
        for name in names:
            for protocol in TABLE_PROTOCOLS:
                values = [_value(r, name, protocol, embedder, metric) for _, r in seed_runs]
                present = [v for v in values if v is not None]
                if not present:
                    continue
                cells = ["-" if v is None else f"{v:.3f}" for v in values]
                lines.append(f"| {labels[name]} (`{name}`) | {protocol_label(protocol)} | "
                             + " | ".join(cells)
                             + f" | {sum(present) / len(present):.3f} |")
        lines += ["", f"### The paper's orderings, embedder `{embedder}`", "",
                  "Each seed's verdict from its own runs (holds / reversed: beyond two "
                  "standard errors over evaluation crops). Established only when it holds on "
                  "every seed.", "",
                  "| claim | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|" + "---|" * len(seeds)]
        verdicts = [{c: v for c, v, _ in orderings(r, embedder, metric, chosen)}
                    for _, r in seed_runs]
        claims = []
        for per_seed in verdicts:
            claims += [c for c in per_seed if c not in claims]
        for claim in claims:
            lines.append(f"| {claim} | "
                         + " | ".join(v.get(claim, "-") for v in verdicts) + " |")
        lines += [""] + _differences(seed_runs, names, labels, embedder, metric)
    return "\n".join(lines)


#: The row every other row is compared with, seed by seed.
REFERENCE_ROW = "sf2f"


def _differences(seed_runs: list, names: list, labels: dict, embedder: str,
                 metric: str) -> list:
    """Markdown lines: each row minus ``REFERENCE_ROW`` of the same seed, per seed, with the
    mean and standard error over the seeds that ran both. The verdicts above judge each seed
    against the spread over evaluation crops; this spread is the one between training runs,
    which is the larger (about 0.05 recall@10 for the demo)."""
    seeds = [str(s) for s, _ in seed_runs]
    lines = [f"### Differences from `{REFERENCE_ROW}` over seeds, embedder `{embedder}`", "",
             f"Each row's {metric} minus `{REFERENCE_ROW}`'s of the same seed and input; mean "
             f"± standard error over the seeds that ran both (n - 1 in the standard deviation; "
             f"none for one seed). \"every seed\" says the sign did not change between seeds.",
             "", "| variant | input | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean ± s.e. | sign |", "|---|---|" + "---|" * (len(seeds) + 2)]
    for name in names:
        if name == REFERENCE_ROW:
            continue
        for protocol in TABLE_PROTOCOLS:
            diffs = []
            for _, r in seed_runs:
                value = _value(r, name, protocol, embedder, metric)
                reference = _value(r, REFERENCE_ROW, protocol, embedder, metric)
                diffs.append(None if value is None or reference is None
                             else value - reference)
            present = [d for d in diffs if d is not None]
            if not present:
                continue
            mean = statistics.mean(present)
            spread = ""
            if len(present) > 1:  # the standard error: sample deviation / sqrt(n)
                spread = f" ± {statistics.stdev(present) / math.sqrt(len(present)):.3f}"
            if len(present) > 1 and all(d < 0 for d in present):
                sign = "below on every seed"
            elif len(present) > 1 and all(d > 0 for d in present):
                sign = "above on every seed"
            else:
                sign = "mixed" if len(present) > 1 else "one seed"
            cells = ["-" if d is None else f"{d:+.3f}" for d in diffs]
            lines.append(f"| {labels[name]} (`{name}`) | {protocol_label(protocol)} | "
                         + " | ".join(cells) + f" | {mean:+.3f}{spread} | {sign} |")
    lines.append("")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dirs", nargs="+",
                        help="trainers/ablations.py output dirs, or kept ablations.csv "
                             "snapshots (a file or the directory holding it)")
    parser.add_argument("--recipe", default="reference", choices=("reference", "demo"))
    parser.add_argument("--metric", default="recall@10")
    parser.add_argument("--output", help="Markdown file (default: print only)")
    args = parser.parse_args(argv)
    try:
        loaded = [load_run(d) for d in args.output_dirs]
    except (ValueError, runs.RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = combine(loaded, args.recipe, args.metric)
    if args.output:
        files.write_text(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
