"""TensorBoard names and pictures: the one definition shared by training and evaluation.

Tag layout. TensorBoard groups scalars and images by the part of the tag before the first
``/`` and orders the groups by comparing characters (digits and ``/`` first, then ASCII:
upper case before lower case). Training writes ``d_acc/``, ``d_loss/``, ``loss/``, ``lr/`` and
``perf/`` (the keys of ``GanTrainer.train_step``'s values, also used by the step callbacks
and benchmarks, so they stay). The validation metrics, the answer to "is it learning?", go
under ``Validation/``: the capital letter puts the group before every lower-case training
group without a number or an artificial prefix (``eval/`` would land after ``d_loss/``,
``val/`` last of all), and the word is what a reader looks for. Offline evaluation
(``evaluate.write_summaries``) writes its metrics under the same tags so its points land on
the validation charts: the embedder training validates with under ``Validation/``, other
embedders under ``Validation_<embedder>/``, standard deviations over runs under
``<group>_std/``, face figures under ``Validation_faces/``. Runs written before this layout
have ``val/...``; they still load, under their old names.

HParams. Each training run writes, into its validation run directory (``model_dir/val``), an
experiment config (``hparams_config``) that declares the validation metrics, and its session
(the hyper-parameter values). The HParams plugin looks a session's metric up in the run
``<session run>/<group>``; with the session in ``val/`` the group is empty and the lookup
works whether TensorBoard is pointed at the run directory or at a directory of several runs.
"""

from __future__ import annotations

import numpy as np
from absl import logging
from PIL import Image, ImageDraw

from keras_sf2f.data.corpus.sheets import label_font
from keras_sf2f.image_ranges import unit_to_uint8_np

# -- tag names ------------------------------------------------------------------------------

VALIDATION_GROUP = "Validation"
FACE_FIGURES_GROUP = f"{VALIDATION_GROUP}_faces"


def tag_name(metric: str) -> str:
    """A metric key as it appears in a tag (``recall@10`` -> ``recall_at_10``)."""
    return metric.replace("@", "_at_")


def validation_tag(metric: str, group: str = VALIDATION_GROUP) -> str:
    """The tag of a validation metric, e.g. ``Validation/recall_at_10``."""
    return f"{group}/{tag_name(metric)}"


def embedder_group(embedder: str, training_embedder: str) -> str:
    """The tag group of an evaluation embedder: training's own tags for the embedder that
    training validates with, ``Validation_<embedder>`` for the others."""
    return VALIDATION_GROUP if embedder == training_embedder else f"{VALIDATION_GROUP}_{embedder}"


def std_group(group: str) -> str:
    """The group of the standard deviations over runs of ``group``'s metrics."""
    return f"{group}_std"


def faces_image_tag(resolution: int) -> str:
    """The validation face grid of one output resolution, among the validation scalars."""
    return f"{VALIDATION_GROUP}/faces_{resolution}"


# Validation metrics declared to the HParams dashboard, most telling first: (result key of
# loop.Validator.evaluate, column title, description). The list is fixed, not derived from
# a run's config: TensorBoard shows one experiment config for a whole log directory (the first
# it finds), so every run must declare the same metrics; a run without one of them (no face
# network) leaves that cell empty. Pixel L1 is declared for the largest output only (the
# per-resolution values stay among the scalars): a per-resolution column would be empty for
# every 64 px model.
HPARAMS_METRICS = (
    ("recall@10", "val recall@10",
     "Fraction of validation identities whose generated face is among the 10 nearest "
     "ground-truth identities (face network embeddings, cosine). Higher is better."),
    ("cosine_similarity", "val cosine",
     "Mean cosine similarity of a generated face's embedding with its identity's "
     "ground-truth embedding. Higher is better."),
    ("pixel_l1", "val pixel L1",
     "Mean absolute pixel difference to the identity's first face at the largest output "
     "resolution (generator space). Lower is better."),
    ("recall@5", "val recall@5", "As recall@10, among the 5 nearest."),
    ("recall@1", "val recall@1", "As recall@10, the nearest only."),
    ("l1_distance", "val emb L1", "Mean L1 distance of the embeddings. Lower is better."),
    ("l2_distance", "val emb L2", "Mean L2 distance of the embeddings. Lower is better."),
)

# Hyper-parameters the HParams table shows as its columns by default (the others can be
# switched on): what tells the stages and the usual experiments apart. TensorBoard lists the
# hyper-parameters marked ``differs`` first and shows the first five; a declared config cannot
# know which values differ between runs, so these five are marked.
LEADING_HPARAMS = ("train_fuser_only", "model.fuser", "learning_rate", "train_steps", "seed")


def _hparam_info(name: str, value):
    """An HParamInfo of the value's type. Only booleans get a domain: a declared domain is
    a filter in the dashboard, and the values of the other runs sharing the config are not
    known here (a discrete domain of this run's value would hide them)."""
    from tensorboard.plugins.hparams import api_pb2  # noqa: PLC0415
    info = api_pb2.HParamInfo(name=name, differs=name in LEADING_HPARAMS)
    if isinstance(value, bool):
        info.type = api_pb2.DATA_TYPE_BOOL
        info.domain_discrete.extend([False, True])
    elif isinstance(value, (int, float)):
        info.type = api_pb2.DATA_TYPE_FLOAT64
    else:
        info.type = api_pb2.DATA_TYPE_STRING
    return info


def write_hparams(writer, hparams: dict, trial_id: str) -> bool:
    """Writes into ``writer`` (the validation run) the experiment config declaring
    ``HPARAMS_METRICS`` and this session's ``hparams`` ({name: bool/int/float/str}).
    Returns False when tensorboard's HParams plugin is not installed."""
    import tensorflow as tf  # noqa: PLC0415 - this module stays light for the evaluation
    try:
        from tensorboard.plugins.hparams import api as hp  # noqa: PLC0415
        from tensorboard.plugins.hparams import summary as hp_summary  # noqa: PLC0415
    except ImportError:  # pragma: no cover - tensorboard is pinned in requirements.txt
        logging.warning("tensorboard's HParams plugin is not installed: hyperparameters "
                        "are not written")
        return False
    metrics = [hp.Metric(validation_tag(key), group="", display_name=title,
                         description=description).as_proto()
               for key, title, description in HPARAMS_METRICS]
    # The v1 proto writer: hp.hparams_config cannot give an HParam a type without a domain.
    config = hp_summary.experiment_pb(
        [_hparam_info(name, value) for name, value in hparams.items()], metrics,
        description="keras-sf2f training runs: hyper-parameters and validation metrics "
                    "(the latest value of each run's Validation/ scalars).")
    with writer.as_default():
        with tf.summary.experimental.summary_scope("hparams_config"):
            tf.summary.experimental.write_raw_pb(config.SerializeToString(), step=0)
        hp.hparams(hparams, trial_id=trial_id)
    writer.flush()
    return True


# -- pictures -------------------------------------------------------------------------------

FACE_GRID_DESCRIPTION = (
    "Top row: ground truth, the first face of each of the first validation identities "
    "(downsampled to the output resolution). Bottom row: the face the generator draws for the "
    "same identity from its speech at this step. The header gives the step.")


def labelled_face_grid(grid: np.ndarray, *, step: int, resolution: int,
                       first_identity: int = 0, split: str = "val") -> np.ndarray:
    """A validation face grid (``[1, 2S, kS, 3]`` in [0, 1]: ground truth above, generated
    below) with a header naming the step, the resolution and the identities, and a label
    before each row, so that the picture explains itself in TensorBoard's Images.
    Returns ``[1, H, W, 3]`` uint8."""
    image = np.asarray(grid)[0]
    size = image.shape[0] // 2
    count = image.shape[1] // size
    faces = Image.fromarray(unit_to_uint8_np(image))
    font = label_font(max(11, min(16, size // 9)))
    pad = 4
    line = int(font.getbbox("Ag")[3]) + 2
    labels = ("ground truth", "generated")
    label_w = int(max(font.getlength(t) for t in labels)) + 2 * pad
    last = first_identity + count - 1
    header = (f"step {step}  \u00b7  {resolution} px  \u00b7  {split} "
              f"identit{'ies' if count > 1 else 'y'} {first_identity}"
              + (f"-{last}, left to right" if count > 1 else ""))
    gap = 2  # between the rows: which face belongs to which label stays clear
    width = max(label_w + faces.width, int(font.getlength(header)) + 2 * pad)
    height = line + 2 * pad + faces.height + gap
    out = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(out)
    draw.text((pad, pad), header, fill=(0, 0, 0), font=font)
    for row, text in enumerate(labels):
        top = line + 2 * pad + row * (size + gap)
        out.paste(faces.crop((0, row * size, faces.width, (row + 1) * size)), (label_w, top))
        draw.text((label_w - pad - font.getlength(text), top + (size - line) // 2), text,
                  fill=(0, 0, 0), font=font)
    return np.asarray(out)[None]
