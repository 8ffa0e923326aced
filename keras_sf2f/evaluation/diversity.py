"""Diversity of generated faces across identities, and a plain collapse verdict.

A conditional GAN can "collapse": whatever the voice, it draws one of a few templates. Recall
figures hide this when the templates differ in the one thing they track (e.g. skin tone), so
the evaluation measures it directly, with the ground truth as the yardstick.

Given one face per identity (generated from each identity's speech) and the ground truth's
faces of the same identities (one per identity, e.g. each identity's first photo):

* **diversity ratio** (per space): the mean distance between the faces of two different
  identities, over all pairs, for the generated faces, divided by the same mean for the
  ground-truth faces. Spaces: pixels (RMS difference of RGB in [0, 1]) and each embedder's
  unit embeddings (Euclidean distance). 1 means the generated faces differ from one another
  as much as the real faces of those identities do; 0 means every identity gets the same
  picture. A blurry but faithful model sits below 1 (fine detail is part of the real faces'
  differences), the voice-attribute oracle near 1.
* **templates**: how many distinct pictures the generator really draws. Faces are grouped
  greedily in identity order: a face joins the first template whose founding face is within
  the *template radius* in pixels, else it founds a new template. The radius is
  ``TEMPLATE_RADIUS_FRACTION`` (0.5) of the median, over ground-truth faces, of the pixel
  distance to the nearest ground-truth face of another identity: two generated faces count as
  one template when they are closer than half the distance that typically separates a real
  face from its most similar other identity. Also reported: the *effective* number of
  templates (exp of the entropy of the template sizes, which discounts templates holding a
  single odd face) and the largest template's share of identities.
* **collapse**: flagged when the pixel diversity ratio is below ``COLLAPSE_RATIO`` (0.3) or the
  effective number of templates is below ``COLLAPSE_TEMPLATE_FRACTION`` (0.2) of the
  identities (10 of 50). The first catches near-constant output, the second a handful of
  distinct templates that are far apart (two very different blobs keep a pixel ratio well
  above 0.3). Neither fires for the ground truth (ratio 1, templates about the number of
  identities) nor for the demo corpus's oracle.

Everything here is NumPy on at most a few hundred images: milliseconds.
"""

from __future__ import annotations

import math

import numpy as np

from keras_sf2f.image_ranges import uint8_to_unit_np

__all__ = ["COLLAPSE_RATIO", "COLLAPSE_TEMPLATE_FRACTION", "TEMPLATE_RADIUS_FRACTION",
           "diversity_figures", "mean_pairwise_distance", "pairwise_distances",
           "pixel_vectors", "template_count", "template_radius", "is_collapsed",
           "collapse_sentence"]

#: Pixel diversity ratio below which faces are called collapsed.
COLLAPSE_RATIO = 0.3
#: Effective templates below this fraction of the identities: collapsed.
COLLAPSE_TEMPLATE_FRACTION = 0.2
#: Template radius as a fraction of the ground truth's median nearest-other-identity distance.
TEMPLATE_RADIUS_FRACTION = 0.5


def pixel_vectors(images) -> np.ndarray:
    """float64 ``[B, D]`` RGB in [0, 1] from uint8 images (``[B, H, W, 3]``)."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"pixel_vectors takes uint8 images, got {x.dtype} (convert "
                        f"generator-space images with detection.to_uint8_images)")
    return uint8_to_unit_np(x.reshape(len(x), -1), np.float64)


def pairwise_distances(x: np.ndarray, rms: bool = False) -> np.ndarray:
    """``[B, B]`` Euclidean distances between rows (RMS over the row's entries with ``rms``)."""
    x = np.asarray(x, np.float64)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    d = np.sqrt(d2)
    return d / math.sqrt(x.shape[1]) if rms else d


def mean_pairwise_distance(distances: np.ndarray) -> float:
    """Mean over unordered pairs i < j (0.0 for fewer than two rows)."""
    n = len(distances)
    if n < 2:
        return 0.0
    return float(distances[np.triu_indices(n, 1)].mean())


def template_radius(reference_distances: np.ndarray,
                    fraction: float = TEMPLATE_RADIUS_FRACTION) -> float:
    """``fraction`` x the median distance from each reference face to its nearest other one."""
    d = np.array(reference_distances, np.float64)
    if len(d) < 2:
        raise ValueError("a template radius needs at least two reference faces")
    np.fill_diagonal(d, np.inf)
    return float(fraction * np.median(d.min(1)))


def template_count(distances: np.ndarray, radius: float) -> dict:
    """Greedy leader grouping in row order: ``{"templates", "effective_templates",
    "largest_template_share", "assignment"}``."""
    n = len(distances)
    leaders, assignment = [], np.zeros(n, np.int64)
    for i in range(n):
        for t, leader in enumerate(leaders):
            if distances[i, leader] <= radius:
                assignment[i] = t
                break
        else:
            assignment[i] = len(leaders)
            leaders.append(i)
    sizes = np.bincount(assignment, minlength=len(leaders)).astype(np.float64)
    p = sizes / max(n, 1)
    entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    return {"templates": len(leaders), "effective_templates": math.exp(entropy),
            "largest_template_share": float(sizes.max() / n) if n else 0.0,
            "assignment": assignment}


def diversity_figures(generated_uint8, reference_uint8, generated_embeddings: dict | None = None,
                      reference_embeddings: dict | None = None) -> dict:
    """The diversity figures of one face per identity against the reference's.

    Args:
      generated_uint8, reference_uint8: uint8 ``[N, H, W, 3]``, row ``i`` identity ``i``.
      generated_embeddings, reference_embeddings: optional ``{embedder name: [N, D]}`` unit
        embeddings of the same faces.

    Returns a flat dict of floats: ``diversity_ratio_pixels``, ``diversity_ratio_<embedder>``,
    ``templates``, ``effective_templates``, ``largest_template_share``, ``collapsed`` (1.0 or
    0.0), plus the raw means ``mean_distance_pixels`` / ``reference_mean_distance_pixels``.
    """
    gen = pixel_vectors(generated_uint8)
    ref = pixel_vectors(reference_uint8)
    if gen.shape != ref.shape:
        raise ValueError(f"generated {generated_uint8.shape} and reference "
                         f"{reference_uint8.shape} faces must match (one face per identity)")
    d_gen, d_ref = pairwise_distances(gen, rms=True), pairwise_distances(ref, rms=True)
    mean_gen, mean_ref = mean_pairwise_distance(d_gen), mean_pairwise_distance(d_ref)
    out = {"diversity_ratio_pixels": mean_gen / mean_ref if mean_ref > 0 else float("nan"),
           "mean_distance_pixels": mean_gen, "reference_mean_distance_pixels": mean_ref}
    for name, emb in (generated_embeddings or {}).items():
        if reference_embeddings is None or name not in reference_embeddings:
            continue
        m_gen = mean_pairwise_distance(pairwise_distances(emb))
        m_ref = mean_pairwise_distance(pairwise_distances(reference_embeddings[name]))
        out[f"diversity_ratio_{name}"] = m_gen / m_ref if m_ref > 0 else float("nan")
    groups = template_count(d_gen, template_radius(d_ref))
    out.update({k: float(v) for k, v in groups.items() if k != "assignment"})
    out["collapsed"] = float(is_collapsed(out["diversity_ratio_pixels"],
                                          out["effective_templates"], len(gen)))
    return out


def is_collapsed(pixel_ratio: float, effective_templates: float, identities: int) -> bool:
    """The documented verdict (module docstring)."""
    return bool(pixel_ratio < COLLAPSE_RATIO
                or effective_templates < COLLAPSE_TEMPLATE_FRACTION * identities)


def collapse_sentence(model: str, protocol: str, figures: dict, identities: int) -> str | None:
    """A plain sentence when ``figures`` (``{name: value}`` or ``{name: {"mean": ...}}``) say
    the faces collapsed, else ``None``."""
    def value(name):
        v = figures[name]
        return float(v["mean"] if isinstance(v, dict) else v)

    ratio, effective = value("diversity_ratio_pixels"), value("effective_templates")
    if not is_collapsed(ratio, effective, identities):
        return None
    groups = round(value("templates"))
    return (f"**{model} ({protocol}) collapsed**: its {identities} identities' faces fall into "
            f"about {effective:.1f} templates (effective count; {groups} distinct "
            f"group{'' if groups == 1 else 's'}, the largest holding "
            f"{100 * value('largest_template_share'):.0f} "
            f"% of identities), and differ from one another {ratio:.2f} times as much as the "
            f"real faces do (pixel diversity ratio; collapse below {COLLAPSE_RATIO} or below "
            f"{COLLAPSE_TEMPLATE_FRACTION * identities:.0f} effective templates).")
