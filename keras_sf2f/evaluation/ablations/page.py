"""The pictures of the ablations: index.html (one column of faces per variant, then the
tables) and the seed's Figure-1 layout, from the samples each variant's report saved."""

from __future__ import annotations

import os
import sys

from keras_sf2f.evaluation.ablations.plan import Plan


def write_page(plan: Plan, chosen: list, results: dict, lines: list, figures: list,
               split_table=None) -> str:
    """index.html: one column per variant with samples (``results_page.write_ablation_page``),
    then ablations.md's sections (its Figure-1 pictures are the page's own faces)."""
    import numpy as np  # noqa: PLC0415

    from keras_sf2f.evaluation import results_page  # noqa: PLC0415

    saved = {}
    for v in chosen:
        path = os.path.join(plan.output_dir, "variants", v.name, "report", "samples.npz")
        if v.name in results and os.path.isfile(path):
            with np.load(path) as f:
                saved[v.name] = {k: f[k] for k in f.files}
    if saved and split_table is None:
        from keras_sf2f.data import table  # noqa: PLC0415
        try:
            split_table = table.load_split(plan.data_dir, plan.eval_split)
        except (table.DataError, OSError, ValueError) as e:
            print(f"results page: no audio ({e})", file=sys.stderr)
    markdown, skipping = [], False
    for line in lines[1:]:  # the page has its own title
        if line.startswith("## "):
            skipping = line.startswith("## Figure 1 layout")
        if not skipping:
            markdown.append(line)
    facts = [("Variants", f"{len(saved)} of {len(chosen)} evaluated with faces"),
             ("Training", f"{plan.train_steps} stage-1 steps per variant, {plan.fuser_steps} "
                          f"fuser steps for `sf2f_fuser`; base flagfile `{plan.base_config}`"),
             ("Evaluation", f"split `{plan.eval_split}` of `{plan.data_dir}`, "
                            f"{plan.eval_runs} runs per duration (seed {plan.eval_seed})")]
    links = [("ablations.md", "ablations.md"), ("ablations.csv", "ablations.csv")] + [
        (name, name) for _, name in figures]
    return results_page.write_ablation_page(
        plan.output_dir, plan.evaluation_config(), split_table,
        [(v.name, f"{v.label}", v.stage2_of is not None) for v in chosen], saved, markdown,
        facts, links=links)


def write_figure1(plan: Plan, results: dict) -> list:
    """Ground truth | SF2F | voice2face from the variants' saved samples (same crops)."""
    import numpy as np  # noqa: PLC0415

    from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415

    sf2f = "sf2f_fuser" if "sf2f_fuser" in results else "sf2f" if "sf2f" in results else None
    if sf2f is None:
        return []

    def samples(name):
        path = os.path.join(plan.output_dir, "variants", name, "report", "samples.npz")
        return dict(np.load(path)) if name in results and os.path.isfile(path) else None

    main, baseline = samples(sf2f), samples("voice2face")
    if main is None:
        return []
    note = None if baseline is not None else "no voice2face column: the voice2face variant " \
                                             "was not run"
    figures = []
    for key in [k for k in main if k.startswith(f"{sf2f}|")]:
        label = key.split("|", 1)[1]
        columns = {"SF2F" + (" + fuser" if sf2f == "sf2f_fuser" else ""): main[key]}
        if baseline is not None and f"voice2face|{label}" in baseline:
            columns["voice2face"] = baseline[f"voice2face|{label}"]
        name = ev.figure1_file_name(label)
        ev.write_figure1(os.path.join(plan.output_dir, name), main["ground_truth"], columns,
                         [str(n) for n in main["names"]],
                         ev.protocol_input_label(label, plan.eval_max_windows), note)
        figures.append((ev.protocol_input_label(label, plan.eval_max_windows), name))
    return figures
