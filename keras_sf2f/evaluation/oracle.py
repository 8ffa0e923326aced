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

Only the procedural corpus has attributes; for any other data there is no oracle.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_sf2f.data.corpus import split_identities, split_ranges
from keras_sf2f.data.corpus.attributes import IdentityAttributes, identity_attributes
from keras_sf2f.data.corpus.face import draw_face
from keras_sf2f.data.procedural import identity_name
from keras_sf2f.image_ranges import pixels_to_uint8_np

__all__ = ["FACE_ONLY_ATTRIBUTES", "oracle_attributes", "voice_only_attributes",
           "oracle_faces", "mean_faces", "donor_draws", "procedural_source",
           "procedural_identities"]

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
