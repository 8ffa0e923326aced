"""The seed's ablations (Table 2) and model comparison (Table 3) as one resumable command.

Every variant is a real training run: ``trainers/train.py`` (the training library behind the
project's entry point) in a subprocess per variant, so each run starts with clean memory and
writes its effective configuration (``flags.cfg``) into its model directory. Evaluation runs in
this process with one shared ``Evaluator`` (test split, ground truth, crops and embedders are
the same for every variant), on the aligned test faces of ``data_dir`` -- also for the variant
trained on in-the-wild faces.

Layout of ``output_dir``::

    ablations.md, ablations.csv          the tables (mean ± std over evaluation runs, per
                                         embedder) and each row's training flags
    index.html, audio/, images/          the results page (results_page.py): per shown test
                                         identity the photo, players with the speech the
                                         faces were made from, one column per variant; then
                                         the tables of ablations.md
    figure1_<input>.png                  the seed's Figure 1 layout: ground truth | SF2F |
                                         voice2face
    data_in_the_wild/                    prepared when the low-quality variant needs it
    variants/<name>/model/               training's model_dir (+ eval/: TensorBoard scalars
                                         under the validation tags)
    variants/<name>/report/              the evaluation report of that variant (no page of
                                         its own: index.html above shows every variant)
    variants/<name>/train.log            the training subprocess's output
    variants/<name>/variant.json         what ran (command, steps, timings); present = done

Re-running the same command skips variants whose ``variant.json`` records the same training
command; a changed command (e.g. more ``--train_steps``) resumes training from the checkpoint
and evaluates again.

Modules, one concern each: ``catalog`` (the variants and what each changes), ``plan`` (what a
command runs; the flagfile reader), ``inputs`` (data and face network the variants need),
``processes`` (child processes, checkpoint steps, SIGTERM), ``evaluation`` (the shared
evaluator, one report per variant), ``runner`` (``Ablations``: the schedule), ``orderings``
(the paper's claims checked with their noise), ``tables`` (ablations.csv, ablations.md) and
``page`` (index.html, the Figure-1 pictures). The names below are the public ones.
"""

from keras_sf2f.evaluation.ablations.catalog import (REFERENCE_LOSS_FLAGS, VARIANT_NAMES,
                                                     AblationError, Variant, select, variants)
from keras_sf2f.evaluation.ablations.inputs import wild_prepare_args
from keras_sf2f.evaluation.ablations.orderings import TABLE_PROTOCOLS, orderings
from keras_sf2f.evaluation.ablations.plan import (DEFAULT_EVAL_RUNS, DEFAULT_TRAIN_STEPS,
                                                  REPO_ROOT, Plan, read_flagfile)
from keras_sf2f.evaluation.ablations.runner import Ablations
from keras_sf2f.evaluation.ablations.tables import METRICS, ORACLE_LABEL, write_tables

__all__ = [
    "AblationError", "Ablations", "DEFAULT_EVAL_RUNS", "DEFAULT_TRAIN_STEPS", "METRICS",
    "ORACLE_LABEL", "Plan", "REFERENCE_LOSS_FLAGS", "REPO_ROOT", "TABLE_PROTOCOLS",
    "VARIANT_NAMES", "Variant", "orderings", "read_flagfile", "select", "variants",
    "wild_prepare_args", "write_tables",
]
