"""The main job for several training seeds: mean ± standard deviation of every headline figure.

    python benchmarks/demo_seeds.py [--seeds=3] [--output_dir=runs/seeds] [--first_seed=0]
    python benchmarks/demo_seeds.py --summarize_only [--seeds=3] [--output_dir=runs/seeds]

Seed ``s`` runs ``scripts/main_job.sh`` with ``SEED=s`` (model initialisation and data order of
both training stages) in ``<output_dir>/seed_<s>``; the corpus and the face-identity network do
not depend on the training seed, so the first seed's are linked into the others' run
directories. Each run resumes or skips what is done, so an interrupted command continues.

``--summarize_only`` runs nothing: it rewrites the summary from the seed directories' finished
reports (e.g. after seeds were run side by side as separate commands).

Writes ``<output_dir>/seeds.json`` (every numeric figure of each run's ``report/metrics.json``,
per seed and as mean / std / n) and ``seeds.md`` (the headline figures: recall@10 per embedder
and protocol, face detection rate, diversity, attribute-reader correlations), with the CPU kind
and the library versions. About 23 minutes per seed on 2 cores (AMD EPYC, oneDNN, 2400 decoder
steps).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

from keras_sf2f import files, machine

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The figures the Markdown table shows (paths into metrics.json, matched as regular
# expressions); seeds.json has all of them.
HEADLINE = (r"recall@10", r"detection_rate", r"diversity_ratio", r"collapsed",
            r"attribute.*(gender|skin|accent|age)")


def cpu_kind() -> dict:
    """lscpu's model name and the SIMD features that decide TensorFlow's kernels."""
    info = machine.cpu_info()
    flags = machine.cpu_flags(info)
    return {"model": machine.cpu_model(info),
            "features": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                         if f in flags]}


def versions() -> dict:
    from importlib import metadata  # noqa: PLC0415 - only what is installed
    out = {"python": platform.python_version()}
    for dist in ("tensorflow", "keras", "numpy", "dlib-bin"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def numeric_leaves(tree, prefix: str = "") -> dict:
    """{"a/b/c": value} for every number in a JSON tree; a {"mean": ...} cell counts as its
    mean (the run's own spread over evaluation crops is not the seed spread)."""
    out = {}
    if isinstance(tree, dict):
        if "mean" in tree and isinstance(tree["mean"], (int, float)):
            return {prefix.rstrip("/"): float(tree["mean"])}
        for key, value in tree.items():
            out.update(numeric_leaves(value, f"{prefix}{key}/"))
    elif isinstance(tree, bool):
        out[prefix.rstrip("/")] = float(tree)
    elif isinstance(tree, (int, float)):
        out[prefix.rstrip("/")] = float(tree)
    return out


def aggregate(per_seed: dict) -> dict:
    """{figure: {"mean", "std", "n", "values"}} over the seeds that have it (std: sample
    standard deviation, 0 for one seed)."""
    figures = sorted({k for leaves in per_seed.values() for k in leaves})
    out = {}
    for figure in figures:
        values = [leaves[figure] for leaves in per_seed.values() if figure in leaves]
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        out[figure] = {"mean": mean, "std": var ** 0.5, "n": n, "values": values}
    return out


def markdown(summary: dict) -> str:
    machine, seeds = summary["machine"], summary["seeds"]
    lines = [f"# The main job over {len(seeds)} training seeds ({', '.join(map(str, seeds))})",
             "",
             f"Machine: {machine['cpu']['model']} ({', '.join(machine['cpu']['features'])}), "
             f"{machine['cpus']} CPUs; {', '.join(f'{k} {v}' for k, v in machine['versions'].items())}; "
             f"{summary['date']}. Test split; each figure is mean ± sample standard deviation "
             f"over seeds of the run's own figure (itself a mean over evaluation crops).",
             "", "| figure | mean ± std | per seed |", "|---|---|---|"]
    pattern = re.compile("|".join(HEADLINE))
    for figure, cell in summary["figures"].items():
        if not pattern.search(figure):
            continue
        values = ", ".join(f"{v:.3f}" for v in cell["values"])
        lines.append(f"| `{figure}` | {cell['mean']:.3f} ± {cell['std']:.3f} | {values} |")
    lines += ["", f"Run time per seed (s): {summary['seconds']}"]
    return "\n".join(lines) + "\n"


def run_seed(seed: int, output_dir: str, shared_from: str | None, extra: list) -> float:
    run_dir = os.path.join(output_dir, f"seed_{seed}")
    os.makedirs(run_dir, exist_ok=True)
    if shared_from is not None:
        for name in ("data", "face_net"):
            link = os.path.join(run_dir, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(shared_from, name)), link)
    env = dict(os.environ, SEED=str(seed), RUN_DIR=os.path.abspath(run_dir))
    start = time.monotonic()
    print(f"[seeds] seed {seed} -> {run_dir}", flush=True)
    subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "main_job.sh"), *extra],
                   env=env, check=True)
    return time.monotonic() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of training seeds")
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--output_dir", default=os.path.join(REPO_ROOT, "runs", "seeds"))
    parser.add_argument("--summarize_only", action="store_true",
                        help="run nothing; summarise the seed directories' finished reports")
    parser.add_argument("extra", nargs="*", help="extra stage-1 flags (after --)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.summarize_only:
        return summarize_only(args.output_dir, seeds)
    first_dir = os.path.join(args.output_dir, f"seed_{seeds[0]}")
    per_seed, seconds = {}, {}
    for i, seed in enumerate(seeds):
        seconds[seed] = round(run_seed(seed, args.output_dir, first_dir if i else None,
                                       args.extra))
        path = os.path.join(args.output_dir, f"seed_{seed}", "report", "metrics.json")
        with open(path) as f:
            per_seed[seed] = numeric_leaves(json.load(f))
        # Written after every seed: a long run that is stopped keeps what it measured.
        text = write_summary(args.output_dir, list(per_seed), per_seed, seconds)
    print(text)
    return 0


def summarize_only(output_dir: str, seeds: list) -> int:
    """The summary of finished seed runs, keeping the run times an earlier summary recorded."""
    missing = [s for s in seeds if not os.path.isfile(
        os.path.join(output_dir, f"seed_{s}", "report", "metrics.json"))]
    if missing:
        print(f"error: no finished report for seed(s) {', '.join(map(str, missing))} in "
              f"{output_dir} (seed_<s>/report/metrics.json)", file=sys.stderr)
        return 1
    seconds = {}
    previous = os.path.join(output_dir, "seeds.json")
    if os.path.isfile(previous):
        with open(previous) as f:
            seconds = {int(k): v for k, v in json.load(f).get("seconds", {}).items()
                       if int(k) in seeds}
    per_seed = {}
    for seed in seeds:
        with open(os.path.join(output_dir, f"seed_{seed}", "report", "metrics.json")) as f:
            per_seed[seed] = numeric_leaves(json.load(f))
    print(write_summary(output_dir, seeds, per_seed, seconds))
    return 0


def write_summary(output_dir: str, seeds: list, per_seed: dict, seconds: dict) -> str:
    summary = {"seeds": seeds, "date": datetime.date.today().isoformat(),
               "machine": {"cpu": cpu_kind(), "cpus": os.cpu_count(), "versions": versions()},
               "seconds": seconds, "figures": aggregate(per_seed),
               "per_seed": {str(k): v for k, v in per_seed.items()}}
    files.write_json(os.path.join(output_dir, "seeds.json"), summary, sort_keys=False)
    text = markdown(summary)
    files.write_text(os.path.join(output_dir, "seeds.md"), text)
    return text


if __name__ == "__main__":
    sys.exit(main())
