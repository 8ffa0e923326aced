"""ablations.csv and ablations.md: each variant's metrics by protocol and embedder (Tables 2
and 3 per embedder, mean ± standard deviation over evaluation runs), the paper's orderings on
them, and each variant's training; then the Figure-1 pictures and the results page."""

from __future__ import annotations

import csv
import math
import os

from keras_sf2f import files
from keras_sf2f.evaluation.ablations.orderings import (TABLE_PROTOCOLS, orderings,
                                                       protocol_label)
from keras_sf2f.evaluation.ablations.page import write_figure1, write_page
from keras_sf2f.evaluation.ablations.plan import Plan

METRICS = ("cosine_similarity", "l1_distance", "l2_distance", "recall@1", "recall@5",
           "recall@10", "vggface_score")


def _csv_metric_cells(values: dict) -> list:
    """Mean and standard deviation of every metric in ``METRICS`` (empty when missing)."""
    cells = []
    for m in METRICS:
        c = values.get(m)
        cells += ["", ""] if c is None else [f"{c['mean']:.6f}",
                                             f"{math.sqrt(c['variance']):.6f}"]
    return cells


def _largest_recall(results: dict) -> str | None:
    """recall@10 when measured (the seed's headline number), else the largest K measured
    (small splits drop K beyond their size)."""
    ks = set()
    for res in results.values():
        for per in res.values():
            for values in per.values():
                ks |= {int(k.split("@")[1]) for k in values if k.startswith("recall@")}
    if not ks:
        return None
    return "recall@10" if 10 in ks else f"recall@{max(ks)}"


ORACLE_LABEL = "voice-attribute oracle (no model; reference)"

RECIPE_TEXT = {
    "reference": "full SF2F trains with the reference's four loss terms and weights, each "
                 "'w/o' row drops one; the demo's recipe is a row of its own",
    "demo": "full SF2F is the demo's recipe, decoder and voice pre-training then L1 + "
            "perceptual without GAN or AC, which every row changes by one thing; the paper's "
            "GAN and AC terms are rows that add them at the reference's weights",
}


def _pretraining_text(plan) -> str:
    """The pre-training every demo-recipe row does before its generator steps (unless the row
    leaves it out), as the base flagfile's proportions give it."""
    if plan.recipe != "demo":
        return ""
    decoder, voice = plan.pretraining_steps()
    phases = [f"{n} {name}" for n, name in ((decoder, "decoder"), (voice, "voice")) if n]
    if not phases:
        return ""
    return (f" after {' and '.join(phases)} pre-training steps (the base flagfile's "
            f"proportions; the rows named for a pre-training leave it out)")


def write_tables(plan: Plan, chosen: list, results: dict, records: dict, failed: dict,
                 embedders: list, elapsed: float, oracle: dict | None = None,
                 split_table=None) -> tuple:
    """ablations.csv, ablations.md, the Figure-1 pictures and the results page index.html;
    returns the paths of the tables.

    ``oracle``: ``{embedder: metrics}`` of the voice-attribute oracle
    (``evaluate.Evaluator.oracle``), shown as a reference row under each Table 2.
    ``split_table``: the evaluation split (the page's speech); loaded when not given."""
    from keras_sf2f.evaluation.metrics import format_summary  # noqa: PLC0415

    os.makedirs(plan.output_dir, exist_ok=True)
    csv_path = os.path.join(plan.output_dir, "ablations.csv")
    md_path = os.path.join(plan.output_dir, "ablations.md")
    by_name = {v.name: v for v in chosen}
    columns = ["table", "variant", "label", "protocol", "embedder"]
    for m in METRICS:
        columns += [f"{m}_mean", f"{m}_std"]
    columns += ["runs", "train_steps", "trained_step", "train_data_dir", "init_from",
                "overrides", "train_args", "model_dir", "report"]
    with files.atomic_write(csv_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for v in chosen:
            if v.name not in results:
                continue
            rec = records.get(v.name, {})
            for protocol, per in results[v.name].items():
                for embedder, values in per.items():
                    row = ["+".join(v.tables), v.name, v.label, protocol, embedder]
                    row += _csv_metric_cells(values)
                    runs = next(iter(values.values()))["runs"] if values else ""
                    row += [runs, rec.get("train_steps", ""), rec.get("trained_step", ""),
                            rec.get("data_dir", ""), rec.get("init_from") or "",
                            " ".join(rec.get("overrides", [])),
                            " ".join(rec.get("train_args", [])),
                            os.path.join("variants", v.name, "model"),
                            os.path.join("variants", v.name, "report", "report.md")]
                    writer.writerow(row)
        for embedder, values in (oracle or {}).items():
            row = ["reference", "oracle", ORACLE_LABEL, "drawn", embedder]
            row += _csv_metric_cells(values) + [next(iter(values.values()))["runs"]] + [""] * 8
            writer.writerow(row)

    figures = write_figure1(plan, results)
    keys = ["cosine_similarity", "l1_distance", "l2_distance", "recall@1", "recall@5",
            "recall@10", "vggface_score"]
    head = "| " + " | ".join(keys) + " |"
    sep = "---|" * len(keys)
    lines = [
        "# Ablations on the embedded procedural corpus", "",
        f"Every row is its own training run (`trainers/train.py`, flags below) on the "
        f"`{plan.recipe}` recipe ({RECIPE_TEXT[plan.recipe]}): "
        f"{plan.train_steps} stage-1 generator steps per variant"
        + _pretraining_text(plan)
        + f", {plan.fuser_steps} fuser steps on top of `sf2f` for `sf2f_fuser`"
        + (f", training seed {plan.train_seed}" if plan.train_seed is not None else "")
        + f". Base flagfile `{plan.base_config}`; voice2face "
        f"`{plan.voice2face_config}`; fuser `{plan.fuser_config}`. Evaluation: the aligned "
        f"`{plan.eval_split}` faces of `{plan.data_dir}` for every row (also the one trained "
        f"on in-the-wild faces), {plan.eval_runs} runs of one random crop per identity and "
        f"duration; cells are mean ± standard deviation over runs. Each embedder has its own "
        f"table. The paper's absolute numbers come from 120k-step models on HQ-VoxCeleb; these "
        f"are short runs on a synthetic corpus, so only orderings can be compared.", ""]
    if oracle:
        lines += [
            f"The last row of each Table 2, `{ORACLE_LABEL}`, is no model: each test identity's "
            f"face drawn with its own voice-linked attributes and a training identity's "
            f"face-only ones ({plan.eval_runs} runs with fresh donors; "
            f"`keras_sf2f/evaluation/oracle.py`), i.e. about the most a voice-only model can "
            f"reach with that embedder on this corpus.", ""]
    for embedder in embedders:
        lines += [f"## Table 2 (ablations) -- embedder `{embedder}`", "",
                  "| variant | input | " + head[2:], "|---|---|" + sep]
        for v in chosen:
            if "2" not in v.tables or v.name not in results:
                continue
            for protocol in TABLE_PROTOCOLS:
                values = results[v.name].get(protocol, {}).get(embedder)
                if values is not None:
                    lines.append(f"| {v.label} (`{v.name}`) | {protocol_label(protocol)} | "
                                 + " | ".join(format_summary(values, k) for k in keys) + " |")
        if oracle and embedder in oracle:
            lines.append(f"| {ORACLE_LABEL} | - | "
                         + " | ".join(format_summary(oracle[embedder], k) for k in keys) + " |")
        lines += ["", f"## Table 3 (SF2F vs voice2face) -- embedder `{embedder}`", "",
                  "| model | fuser | input | " + head[2:], "|---|---|---|" + sep]
        for name, fuser in (("voice2face", "no"), ("sf2f", "no"), ("sf2f_fuser", "yes")):
            if name not in results or name not in by_name:
                continue
            for protocol in TABLE_PROTOCOLS:
                values = results[name].get(protocol, {}).get(embedder)
                if values is not None:
                    lines.append(f"| {by_name[name].label} (`{name}`) | {fuser} | "
                                 f"{protocol_label(protocol)} | "
                                 + " | ".join(format_summary(values, k) for k in keys) + " |")
        lines.append("")
    if embedders:
        recall = _largest_recall(results)
        lines += ["## The paper's orderings on these runs", "",
                  "A claim holds when the difference has the paper's sign and exceeds two "
                  "standard errors over evaluation runs (the ± figure), is reversed when it "
                  "has the opposite sign beyond that, and is within noise otherwise. One "
                  "table per embedder and figure: an embedder that training optimises "
                  "against (the perceptual loss's face network) can be satisfied by "
                  "pictures that are not faces, so the orderings are read on each.", ""]
        for embedder in embedders:
            for metric in [m for m in (recall, "cosine_similarity") if m]:
                lines += [f"### {metric} -- embedder `{embedder}`", "",
                          "| claim | verdict | differences |", "|---|---|---|"]
                for claim, verdict, text in orderings(results, embedder, metric, chosen):
                    lines.append(f"| {claim} | {verdict} | {text} |")
                lines.append("")
    if figures:
        lines += ["## Figure 1 layout", "",
                  "Ground truth | SF2F | voice2face per held-out identity, from the same "
                  "speech.", ""]
        for label, name in figures:
            lines += [f"Input speech: {label}", "", f"![Figure 1, {label}]({name})", ""]
    lines += ["## Variants and their training", "",
              "| variant | tables | changed flags | training data | trained step | train s | "
              "train CPU s | eval s | report |", "|---|---|---|---|---|---|---|---|---|"]
    for v in chosen:
        rec = records.get(v.name, {})
        changes = v.change_text()
        status = rec.get("trained_step", "") if v.name in results else \
            f"FAILED: {failed[v.name].splitlines()[0]}" if v.name in failed else "not run"
        lines.append(f"| `{v.name}` | {', '.join(v.tables)} | `{changes}` | "
                     f"`{rec.get('data_dir', '')}` | {status} | {rec.get('train_seconds', '')} "
                     f"| {rec.get('train_cpu_seconds', '')} | {rec.get('eval_seconds', '')} | "
                     + (f"[report](variants/{v.name}/report/report.md)"
                        if v.name in results else "") + " |")
    lines += ["", "Exact command lines: `variants/<name>/variant.json` (`train_args`) and the "
              "effective configuration in `variants/<name>/model/flags.cfg`. "
              f"This invocation took {elapsed / 60:.1f} minutes.", ""]
    files.write_text(md_path, "\n".join(lines))
    write_page(plan, chosen, results, lines, figures, split_table)
    return md_path, csv_path

