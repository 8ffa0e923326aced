"""The report's face figures: detection rate, diversity and collapse, attribute reader.

``Evaluator`` computes the figures per run (``detection.py``, ``diversity.py``,
``attribute_reader.py``); this module turns ``{model: {protocol: {figure: {mean, variance,
runs}}}}`` into markdown sections with a paragraph saying what each figure measures, tables,
and sentences in words (which models collapsed, which attributes the faces carry).
"""

from __future__ import annotations

import math

from keras_sf2f.evaluation import attribute_reader as ar
from keras_sf2f.evaluation import detection, diversity

__all__ = ["DETECTION_TEXT", "DIVERSITY_TEXT", "ATTRIBUTE_TEXT", "sections",
           "attribute_sentence", "attribute_sentences", "collapse_sentences"]

DETECTION_TEXT = (
    "**Face detection rate**: the fraction of faces in which dlib's HOG frontal face detector "
    "(`dlib.get_frontal_face_detector()`, a detector no part of training uses) finds a face, "
    "after bicubic upscaling to 256 px (its window is 80 px, too large for a 64 px face at its "
    "own size), at its default threshold 0. It asks whether a picture is a face at all, which "
    "recall does not: a blob of the right skin tone can be nearer its own identity than others. "
    "The ground-truth photos are the ceiling (the HOG model rejects some tilted heads and "
    "fringes), not 1; the issue's target for generated faces is 0.8. "
    "The identities are also split into thirds by the brightness of their pictured photo's "
    "face centre (nose and inner cheeks): HOG reads intensity gradients and finds dark, "
    "low-contrast faces less often even in photos, so each third's ceiling is the ground "
    "truth's own rate in that third, and a model that draws dark faces as dark as they are "
    "loses detection there because of the detector. "
    "(`keras_sf2f/evaluation/detection.py`)")

DIVERSITY_TEXT = (
    "**Diversity and collapse**: with one face per identity, the *diversity ratio* is the mean "
    "distance between two identities' generated faces divided by the same mean for their "
    "ground-truth photos (each identity's first photo), in pixels (RMS of RGB in [0, 1]) and in "
    "each embedder's space: 1 = as different as the real faces, 0 = the same picture for "
    "everyone; a blurry but faithful model sits below 1. *Templates* counts the distinct "
    "pictures drawn: faces are grouped greedily (identity order; a face joins the first group "
    "whose founding face is within the radius, else founds one), the radius being half the "
    "median pixel distance from a ground-truth photo to the nearest photo of another identity; "
    "*effective templates* is exp(entropy) of the group sizes. A protocol is flagged as "
    f"**collapsed** when the pixel ratio is below {diversity.COLLAPSE_RATIO} or the effective "
    f"templates are fewer than {diversity.COLLAPSE_TEMPLATE_FRACTION:g} x the identities; the "
    "second catches a few far-apart templates (two very different blobs keep a pixel ratio "
    "near 0.5). 'collapsed runs' is the fraction of runs flagged. "
    "(`keras_sf2f/evaluation/diversity.py`)")

ATTRIBUTE_TEXT = (
    "**What the faces carry (attribute reader)**: a small CNN, trained during this evaluation "
    "on the face-only identities' photos and their known latent attributes (never on a "
    "voice-face identity; blurred copies included so that blur alone does not hide an "
    "attribute), reads every generated face; each cell is the Pearson correlation r over the "
    "split's identities between the reading and the identity's true attribute (mean ± std over "
    "runs; a reading that varies by less than 1 % of the attribute's spread, i.e. pixel "
    "rounding, counts as constant and scores 0), and for gender also the fraction with the "
    "right sign (a constant reading scores the share of identities on its side, about 0.5). "
    "The ground-truth column is the reader's ceiling (what can be read from a photo at all), "
    "the voice-attribute oracle's voice-only rows what a voice can give. The face-only "
    "attributes are the control: no voice carries them, so a voice model should be near 0 "
    "there. With 50 "
    f"identities r below about 0.28 is indistinguishable from 0 (5 % level); the sentences call "
    f"an attribute carried from r >= {ar.CARRIED_R}, weakly from {ar.WEAK_R}. "
    "(`keras_sf2f/evaluation/attribute_reader.py`)")

#: Words for attribute names in the report's sentences.
LABELS = {"accent": "accent (skin-tone group)", "skin_tone": "skin tone",
          "hair_length": "hair length", "eye_spacing": "eye spacing",
          "hair_volume": "hair volume", "nose_width": "nose width",
          "brow_thickness": "brow thickness", "greyness": "grey hair", "size": "body size"}

_PROTOCOL_WORDS = {"crops_1.25s": "1.25 s crops", "crops_5s": "5 s crops",
                   "fuser_all_windows": "all windows", "drawn": "drawn", "photos": "photos"}


def _words(protocol: str) -> str:
    return _PROTOCOL_WORDS.get(protocol, protocol)


def _cell(summary: dict | None, key: str, digits: int = 3) -> str:
    if not summary or key not in summary:
        return "-"
    c = summary[key]
    if isinstance(c["mean"], float) and math.isnan(c["mean"]):
        return "n/a"
    if c["runs"] > 1:
        return f"{c['mean']:.{digits}f} ± {math.sqrt(c['variance']):.{digits}f}"
    return f"{c['mean']:.{digits}f}"


def _rows(figures_by_model: dict, key: str):
    """(model, protocol, figures) for every row that has ``key``."""
    for model, protocols in figures_by_model.items():
        for protocol, figures in protocols.items():
            if key in figures:
                yield model, protocol, figures


def collapse_sentences(figures_by_model: dict, identities: int) -> list:
    out = []
    for model, protocol, figures in _rows(figures_by_model, "effective_templates"):
        sentence = diversity.collapse_sentence(model, _words(protocol), figures, identities)
        if sentence:
            out.append(sentence)
    return out


def _mean(figures: dict, key: str):
    return figures[key]["mean"] if key in figures else None


def attribute_sentence(model: str, protocol: str, figures: dict,
                       ceiling: dict | None = None) -> str:
    """One sentence in words: which attributes ``model``'s faces carry, weakly, not, and the
    face-only controls. Attributes the reader cannot read on the photos themselves (ceiling r
    below ``CARRIED_R``) are named apart: no face can be judged on them."""
    carried, weak, absent, unreadable, controls = [], [], [], [], []
    for name in ar.READ_ATTRIBUTES:
        r = _mean(figures, f"attribute_r_{name}")
        if r is None:
            continue
        label = LABELS.get(name, name)
        top = _mean(ceiling or {}, f"attribute_r_{name}")
        if name in ar.FACE_ONLY:
            controls.append(f"{label} r={r:.2f}")
            continue
        if top is not None and top < ar.CARRIED_R:
            unreadable.append(f"{label} (photos r={top:.2f})")
            continue
        if name == "gender" and "attribute_gender_accuracy" in figures:
            share = 100 * _mean(figures, "attribute_gender_accuracy")
            text = f"{label} (r={r:.2f}, sign right for {share:.0f} %)"
        else:
            text = f"{label} (r={r:.2f})"
        (carried if r >= ar.CARRIED_R else weak if r >= ar.WEAK_R else absent).append(text)
    parts = [f"{model} ({_words(protocol)}): the faces carry "
             + (", ".join(carried) if carried else "no attribute measurably")]
    if weak:
        parts.append("weakly " + ", ".join(weak))
    if absent:
        parts.append("not " + ", ".join(absent))
    text = "; ".join(parts) + "."
    if controls:
        text += " Face-only controls (a voice cannot carry them; near 0 expected): " + \
            ", ".join(controls) + "."
    if unreadable:
        text += " Not readable even on the photos, so not judged: " + ", ".join(unreadable) + "."
    return text


def _detection_section(figures_by_model: dict) -> list:
    rows = list(_rows(figures_by_model, "detection_rate"))
    if not rows:
        return []
    # The per-third columns when any row has them (metrics from before them have not).
    thirds = dict(zip(detection.THIRD_RATE_KEYS, detection.BRIGHTNESS_THIRDS))
    if not any(k in f for _, _, f in rows for k in thirds):
        thirds = {}
    lines = ["## Are they faces? Face detection rate", "", DETECTION_TEXT, "",
             "| model | protocol | detection rate |"
             + "".join(f" {name} third |" for name in thirds.values()),
             "|---|---|---|" + "---|" * len(thirds)]
    lines += [f"| {m} | {_words(p)} | {_cell(f, 'detection_rate')} |"
              + "".join(f" {_cell(f, k, 2)} |" for k in thirds) for m, p, f in rows]
    return lines + [""]


def _diversity_section(figures_by_model: dict, identities: int) -> list:
    rows = list(_rows(figures_by_model, "diversity_ratio_pixels"))
    if not rows:
        return []
    spaces = []
    for _, _, f in rows:
        spaces += [k for k in f if k.startswith("diversity_ratio_") and k not in spaces]
    head = [k[len("diversity_ratio_"):] for k in spaces]
    lines = ["## Diversity and collapse", "", DIVERSITY_TEXT, "",
             "| model | protocol | " + " | ".join(f"diversity ({h})" for h in head)
             + " | templates | effective templates | largest template | collapsed runs |",
             "|---|---|" + "---|" * (len(head) + 4)]
    for m, p, f in rows:
        lines.append(f"| {m} | {_words(p)} | " + " | ".join(_cell(f, k) for k in spaces)
                     + f" | {_cell(f, 'templates', 1)} | {_cell(f, 'effective_templates', 1)}"
                     f" | {_cell(f, 'largest_template_share', 2)} | {_cell(f, 'collapsed', 2)} |")
    sentences = collapse_sentences(figures_by_model, identities)
    lines.append("")
    if sentences:
        lines += [f"- {s}" for s in sentences]
    else:
        lines.append("No model's faces collapsed to a few templates (no protocol flagged).")
    return lines + [""]


def _attribute_section(figures_by_model: dict, ground_truth_model: str,
                       exclude_sentences=()) -> list:
    columns = [(m, p, f) for m, p, f in _rows(figures_by_model, "attribute_r_shared_mean")] or \
        [(m, p, f) for m, p, f in _rows(figures_by_model, "attribute_r_gender")]
    if not columns:
        return []
    names = [n for n in ar.READ_ATTRIBUTES if any(f"attribute_r_{n}" in f for _, _, f in columns)]
    lines = ["## What the faces carry: attribute reader", "", ATTRIBUTE_TEXT, "",
             "| attribute | kind | " + " | ".join(f"{m} ({_words(p)})" for m, p, _ in columns)
             + " |", "|---|---|" + "---|" * len(columns)]
    for n in names:
        lines.append(f"| {n} | {ar.attribute_group(n)} | "
                     + " | ".join(_cell(f, f"attribute_r_{n}", 2) for _, _, f in columns) + " |")
    extra = [("attribute_gender_accuracy", "gender sign accuracy"), ("attribute_r_shared_mean",
                                                           "mean r, voice-linked"),
             ("attribute_r_face_only_mean", "mean r, face-only")]
    for key, label in extra:
        if any(key in f for _, _, f in columns):
            lines.append(f"| {label} | summary | "
                         + " | ".join(_cell(f, key, 2) for _, _, f in columns) + " |")
    ceiling = next((f for m, _, f in columns if m == ground_truth_model), None)
    lines.append("")
    for m, p, f in columns:
        if m == ground_truth_model or m in exclude_sentences:
            continue
        lines.append(f"- {attribute_sentence(m, p, f, ceiling)}")
    return lines + [""]


def sections(figures_by_model: dict, identities: int, ground_truth_model: str = "ground truth",
             exclude_sentences=()) -> list:
    """Markdown lines of the three sections for the figures present (empty when none)."""
    return (_detection_section(figures_by_model)
            + _diversity_section(figures_by_model, identities)
            + _attribute_section(figures_by_model, ground_truth_model, exclude_sentences))


def attribute_sentences(figures_by_model: dict, ground_truth_model: str = "ground truth",
                        exclude=()) -> list:
    """The attribute sentences of every model and protocol (for metrics.json)."""
    ceiling = next((f for m, _, f in _rows(figures_by_model, "attribute_r_gender")
                    if m == ground_truth_model), None)
    return [attribute_sentence(m, p, f, ceiling)
            for m, p, f in _rows(figures_by_model, "attribute_r_gender")
            if m != ground_truth_model and m not in exclude]
