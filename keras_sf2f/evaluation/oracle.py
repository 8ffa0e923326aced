"""A voice-attribute oracle for the procedural corpus: how far a voice can take any model.

In the procedural corpus a voice carries some of an identity's attributes (gender, age, body
size, weight, accent, breathiness and the appearance derived from them) and none of the others
(eye colour, eye spacing, clothes, hair volume, nose width, and the per-identity style: collar,
hair parting, fringe, blush, lip tint). A model that recovered everything the voice carries,
perfectly, could still not know the rest. The oracle draws that face: the test identity's own
attributes, with the face-only ones, the style and the pose taken from a *donor* identity of
the training split.

Scored like a model's faces (same embedders, same ground truth), the oracle says what a
recall figure can reach with a given embedder. It comes in three kinds, one per protocol:

* ``drawn`` (generous): it also knows the identity's own random draws of skin tone, hair
  colour, hair length, greyness, baldness, beard and brow thickness, which the voice does not
  carry. No model from speech can reach it.
* ``voice only`` (a draw): the identity's voice-linked factors exactly, and everything else
  (face-only factors and the appearance draws, re-derived from those factors with the donor's
  randomness) from the donor: a face the voice is fully consistent with. A model that drew a
  sharp, plausible face from a perfect reading of the voice would score like this.
* ``voice only, mean of 16``: the pixel mean of 16 such draws with different donors: the
  face a model trained with a pixel loss (L1) aims at when it reads the voice perfectly.
  Embedders often rank it above a single draw, because the mean keeps what the voice decides
  and blurs what it does not.

No model reads the voice perfectly. ``heard_mean_faces`` draws the same mean face for a voice
read with a given accuracy per factor (a Pearson r, e.g. what a trained encoder's embedding
gives): the face an ideal pixel-loss model with that hearing aims at
(``benchmarks/hearing_ceiling.py`` scores it).

Only the procedural corpus has attributes; for any other data there is no oracle.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_sf2f.data.corpus import split_identities, split_ranges
from keras_sf2f.data.corpus.attributes import (SHARED_FIELDS, IdentityAttributes,
                                               identity_attributes)
from keras_sf2f.data.corpus.face import draw_face
from keras_sf2f.data.procedural import identity_name
from keras_sf2f.image_ranges import pixels_to_uint8_np

__all__ = ["FACE_ONLY_ATTRIBUTES", "oracle_attributes", "voice_only_attributes",
           "oracle_faces", "mean_faces", "FactorScale", "factor_scale", "read_factors",
           "heard_mean_faces", "donor_draws", "procedural_source", "procedural_identities"]

#: Voice-only faces averaged into one by ``mean_faces`` in the evaluation.
MEAN_DRAWS = 16

#: Attributes that never reach the voice (attributes.IdentityAttributes' "face-only factors").
FACE_ONLY_ATTRIBUTES = ("eye_colour", "eye_spacing", "clothes_colour", "hair_volume",
                        "nose_width")


def oracle_attributes(seed: int, identity: int, donor: int) -> IdentityAttributes:
    """``identity``'s attributes with the face-only ones of ``donor``."""
    own = identity_attributes(seed, identity)
    other = identity_attributes(seed, donor)
    return dataclasses.replace(own, **{k: getattr(other, k) for k in FACE_ONLY_ATTRIBUTES})


def voice_only_attributes(seed: int, identity: int, donor: int) -> IdentityAttributes:
    """``identity``'s voice-linked factors (``SHARED_FIELDS``) with everything else drawn by
    ``donor``'s randomness: its face-only factors, and the appearance details derived from
    ``identity``'s factors (a face the voice cannot tell from ``identity``'s own)."""
    return identity_attributes(seed, donor, shared=identity_attributes(seed, identity))


def oracle_faces(seed: int, identities, donors, size: int, quality: str = "aligned",
                 item: int = 0, voice_only: bool = False) -> np.ndarray:
    """uint8 ``[len(identities), size, size, 3]``: face ``i`` has ``identities[i]``'s voice-linked
    attributes and ``donors[i]``'s face-only attributes, style and pose (image ``item``);
    ``voice_only``: also ``donors[i]``'s appearance draws (``voice_only_attributes``)."""
    identities, donors = list(identities), list(donors)
    if len(identities) != len(donors):
        raise ValueError(f"{len(identities)} identities but {len(donors)} donors")
    attributes = voice_only_attributes if voice_only else oracle_attributes
    return np.stack([draw_face(seed, d, item, size, quality,
                               attributes=attributes(seed, i, d))
                     for i, d in zip(identities, donors)])


def mean_faces(seed: int, identities, donor_rows, size: int,
               quality: str = "aligned") -> np.ndarray:
    """uint8 ``[len(identities), size, size, 3]``: per identity the pixel mean (rounded) of its
    voice-only faces over the rows of ``donor_rows`` (``[draws, len(identities)]``)."""
    total = None
    for donors in donor_rows:
        faces = oracle_faces(seed, identities, donors, size, quality,
                             voice_only=True).astype(np.float64)
        total = faces if total is None else total + faces
    if total is None:
        raise ValueError("mean_faces needs at least one row of donors")
    return pixels_to_uint8_np(total / len(donor_rows))


@dataclasses.dataclass(frozen=True)
class FactorScale:
    """Mean, standard deviation and range of each voice-linked factor (``SHARED_FIELDS``
    order) over a set of identities: the standardised space ``read_factors`` works in."""
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray


def factor_scale(seed: int, identities) -> FactorScale:
    """The ``FactorScale`` of ``identities`` (the training split: what a model learns from)."""
    values = np.stack([identity_attributes(seed, int(i)).vector(SHARED_FIELDS)
                       for i in identities])
    if len(values) < 2:
        raise ValueError("factor_scale needs at least two identities")
    return FactorScale(values.mean(0), values.std(0) + 1e-12, values.min(0), values.max(0))


def read_factors(z: np.ndarray, accuracy: np.ndarray, draws: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``[draws, factors]``: standardised factors a listener with ``accuracy`` could believe in.

    A Gaussian model of imperfect hearing, per factor with Pearson r = ``accuracy``: the reading
    is ``x = r z + sqrt(1 - r^2) e`` (so corr(x, z) = r when z is standardised), and each draw
    comes from what the truth could be given that reading, ``N(r x, 1 - r^2)``. At r = 1
    every draw is ``z``; at r = 0 the draws do not depend on ``z``. The model is Gaussian, so
    a two-mode factor (gender) is only approximated; trained encoders read it at r 0.98,
    where the approximation hardly matters."""
    z, r = np.asarray(z, np.float64), np.asarray(accuracy, np.float64)
    if z.shape != r.shape or z.ndim != 1:
        raise ValueError(f"z and accuracy must be vectors of one length, got {z.shape} and "
                         f"{r.shape}")
    if np.any(r < 0) or np.any(r > 1):
        raise ValueError(f"accuracy must be in [0, 1], got {r.tolist()}")
    spread = np.sqrt(1.0 - r ** 2)
    reading = r * z + spread * rng.standard_normal(z.shape)
    return r * reading + spread * rng.standard_normal((int(draws),) + z.shape)


def heard_mean_faces(seed: int, identities, donor_rows, size: int, accuracy,
                     scale: FactorScale, rng: np.random.Generator,
                     quality: str = "aligned") -> np.ndarray:
    """uint8 ``[len(identities), size, size, 3]``: ``mean_faces`` for a voice read with
    ``accuracy`` (Pearson r per factor, ``SHARED_FIELDS`` order): per identity one reading,
    and for each donor row a voice-only face whose voice-linked factors are one draw of
    ``read_factors`` (back in the factors' units, clipped to ``scale``'s range). A factor
    read with r = 1 keeps the identity's own value exactly, so all-ones accuracy is
    ``mean_faces``."""
    accuracy = np.asarray(accuracy, np.float64)
    if accuracy.shape != (len(SHARED_FIELDS),):
        raise ValueError(f"accuracy needs one r per factor of {SHARED_FIELDS}, got "
                         f"{accuracy.shape}")
    donor_rows = np.asarray(donor_rows)
    if donor_rows.ndim != 2 or len(donor_rows) == 0:
        raise ValueError("heard_mean_faces needs at least one row of donors")
    if donor_rows.shape[1] != len(identities):
        raise ValueError(f"each row of donors needs a donor per identity: "
                         f"{donor_rows.shape[1]} donors for {len(identities)} identities")
    exact = accuracy >= 1.0
    means = []
    for n, identity in enumerate(identities):
        own = identity_attributes(seed, int(identity))
        values = own.vector(SHARED_FIELDS)
        draws = read_factors((values - scale.mean) / scale.std, accuracy, len(donor_rows), rng)
        believed = np.clip(scale.mean + scale.std * draws, scale.low, scale.high)
        believed[:, exact] = values[exact]
        faces = np.zeros((size, size, 3))
        for donor, factors in zip(donor_rows[:, n], believed):
            shared = dataclasses.replace(own, **{k: float(v) for k, v in
                                                 zip(SHARED_FIELDS, factors)})
            faces += draw_face(seed, int(donor), 0, size, quality,
                               attributes=identity_attributes(seed, int(donor), shared=shared))
        means.append(faces / len(donor_rows))
    return pixels_to_uint8_np(np.stack(means))


def donor_draws(donor_range, count: int, runs: int, seed: int) -> np.ndarray:
    """``[runs, count]`` donor identities from ``range(*donor_range)``, drawn without
    replacement within a run (reproducible from ``seed``)."""
    lo, hi = int(donor_range[0]), int(donor_range[1])
    if hi - lo < count:
        raise ValueError(f"the donor range [{lo}, {hi}) has fewer than {count} identities")
    rng = np.random.default_rng([seed, 0x0AC1E])
    return np.stack([lo + rng.choice(hi - lo, size=count, replace=False) for _ in range(runs)])


def procedural_source(data_dir: str) -> dict | None:
    """The ``source`` record of a prepared procedural corpus (seed, identity ranges, spec),
    or ``None`` when ``data_dir`` holds other data (or nothing)."""
    path = os.path.join(data_dir, "dataset.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        source = json.load(f).get("source", {})
    return source if source.get("kind") == "procedural" else None


def procedural_identities(data_dir: str, split: str, names) -> dict | None:
    """For a prepared procedural corpus: ``{"seed", "identities", "donor_range", "quality"}``
    (``identities[i]`` the corpus identity of label ``i``; donors come from the training
    split). ``None`` when ``data_dir`` holds other data."""
    source = procedural_source(data_dir)
    if source is None:
        return None
    ranges = source["ranges"]
    identities = split_identities(ranges, split)
    expected = [identity_name(i) for i in identities]
    if list(names) != expected:
        recorded = ", ".join(f"[{lo}, {hi})" for lo, hi in split_ranges(ranges, split))
        raise ValueError(f"split {split!r} of {data_dir}: identity names do not follow the "
                         f"corpus range {recorded} recorded in dataset.json")
    return {"seed": int(source["seed"]), "identities": identities,
            # Donors are never the identity itself.
            "donor_range": tuple(ranges["train" if split != "train" else "val"]),
            "quality": source.get("spec", {}).get("face_quality", "aligned")}
