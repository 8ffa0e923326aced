"""The embedded, procedural paired voice-face corpus.

Identities are integers. Each has latent attributes (``attributes.py``); its utterances
(``voice.py``) and face images (``face.py``) are pure functions of ``(seed, identity, item)``,
so the corpus needs no download, any sample can be regenerated alone, and generation
parallelises over identities with no shared state.

Identity ranges (``default_splits``): train / val / test share the voice-face range
``[0, num_identities)``; ``faceid`` is a further, disjoint range ``[num_identities,
num_identities + K)`` whose identities only need faces (for the face-identity network used
by the perceptual loss and evaluation, disjoint from every voice-face identity as FaceNet's
VGGFace2 is disjoint from VoxCeleb). ``CorpusSpec.extra_train_identities`` adds training
identities after the faceid range (``train_extra``), so a corpus with more training voices
keeps the validation and test identities of the one without them.

Typical use (the prepare step)::

    spec = CorpusSpec(seed=0, num_identities=500)
    with multiprocessing.Pool(2) as pool:
        for sample in pool.imap(functools.partial(generate_identity, spec), spec.all_identities()):
            ...  # sample.utterances (int16 arrays), sample.images (uint8 arrays)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_sf2f.data.corpus.attributes import (FACE_ONLY_FIELDS, SHARED_FIELDS,
                                               STREAM_ATTRIBUTES, STREAM_FACE, STREAM_VOICE,
                                               IdentityAttributes, identity_attributes, rng_for)
from keras_sf2f.data.corpus.face import (EYE_LEFT_128, EYE_RIGHT_128, QUALITIES, SIZES,
                                         aligned_eye_positions, draw_face, pupil_positions)
from keras_sf2f.data.corpus.sheets import (PERCEPTUAL_LUT, colourize, write_contact_sheet,
                                           write_spectrogram_png)
from keras_sf2f.data.corpus.voice import (MAX_SECONDS, MIN_SECONDS, SAMPLE_RATE, mean_f0_hz,
                                          synthesize_utterance, vocal_tract_length_cm)

SPLIT_NAMES = ("train", "val", "test", "faceid")
#: The range of ``CorpusSpec.extra_train_identities`` in ``CorpusSpec.splits()``: train data.
TRAIN_EXTRA = "train_extra"

__all__ = [
    "CorpusSpec", "IdentitySamples", "default_splits", "generate_identity", "SPLIT_NAMES",
    "TRAIN_EXTRA", "split_identities", "split_ranges",
    "IdentityAttributes", "identity_attributes", "rng_for", "SHARED_FIELDS",
    "FACE_ONLY_FIELDS", "STREAM_ATTRIBUTES", "STREAM_VOICE", "STREAM_FACE",
    "synthesize_utterance", "mean_f0_hz", "vocal_tract_length_cm", "SAMPLE_RATE",
    "MIN_SECONDS", "MAX_SECONDS",
    "draw_face", "pupil_positions", "aligned_eye_positions", "EYE_LEFT_128", "EYE_RIGHT_128",
    "QUALITIES", "SIZES",
    "write_contact_sheet", "write_spectrogram_png", "colourize", "PERCEPTUAL_LUT",
]


def default_splits(num_identities: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
                   faceid_identities: int | None = None, faceid_fraction: float = 0.5,
                   min_train: int = 2, min_val: int = 1, min_test: int = 1,
                   min_faceid: int = 2) -> dict[str, tuple[int, int]]:
    """Identity ranges, half-open ``(start, stop)``: train, val, test, faceid.

    val and test get ``round(fraction * num_identities)`` identities (at least ``min_val`` /
    ``min_test``), train the rest, in that order: 500 identities give train (0, 400),
    val (400, 450), test (450, 500). ``faceid`` follows the voice-face range with
    ``faceid_identities`` identities (default ``round(faceid_fraction * num_identities)``,
    at least ``min_faceid``): (500, 750) for 500.
    """
    for name, value in (("num_identities", num_identities), ("min_train", min_train),
                        ("min_val", min_val), ("min_test", min_test),
                        ("min_faceid", min_faceid)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction),
                        ("faceid_fraction", faceid_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got "
                         f"{val_fraction} + {test_fraction}")
    n = int(num_identities)
    n_val = max(int(min_val), int(round(val_fraction * n)))
    n_test = max(int(min_test), int(round(test_fraction * n)))
    n_train = n - n_val - n_test
    if n_train < min_train:
        need = int(min_train) + n_val + n_test
        raise ValueError(
            f"num_identities={n} is too few for a train/val/test split: val takes {n_val}, "
            f"test {n_test}, leaving {n_train} for train (at least {min_train} needed); use "
            f"at least {max(need, int(min_train) + int(min_val) + int(min_test))} identities "
            f"or smaller val/test fractions")
    if faceid_identities is None:
        n_faceid = max(int(min_faceid), int(round(faceid_fraction * n)))
    else:
        n_faceid = int(faceid_identities)
        if n_faceid < min_faceid:
            raise ValueError(f"faceid_identities={n_faceid} is too few: the face-identity "
                             f"network needs at least {min_faceid} identities")
    return {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
        "faceid": (n, n + n_faceid),
    }


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Frozen and picklable (it travels to pool workers).

    ``images_per_identity`` applies to voice-face identities, ``faceid_images_per_identity``
    to the faceid range (which has no utterances). ``face_quality`` is ``'aligned'`` (the
    default, like HQ-VoxCeleb) or ``'in_the_wild'`` (the low-quality ablation, like filtered
    VGGFace); faceid identities are drawn with the same quality.
    """

    seed: int = 0
    num_identities: int = 500
    utterances_per_identity: int = 5
    images_per_identity: int = 3
    image_size: int = 128
    face_quality: str = "aligned"
    sample_rate: int = SAMPLE_RATE
    num_faceid_identities: int | None = None
    faceid_images_per_identity: int = 10
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Further training identities, numbered after the faceid range: the train split is then
    # [0, train stop) and this range, and val, test and faceid are those without them.
    extra_train_identities: int = 0

    def __post_init__(self):
        if self.image_size not in SIZES:
            raise ValueError(f"image_size must be one of {SIZES}, got {self.image_size}")
        if self.face_quality not in QUALITIES:
            raise ValueError(f"face_quality must be one of {QUALITIES}, got "
                             f"{self.face_quality!r}")
        for name in ("utterances_per_identity", "images_per_identity",
                     "faceid_images_per_identity", "extra_train_identities"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        self.splits()  # validates num_identities and fractions

    def splits(self) -> dict[str, tuple[int, int]]:
        """Half-open identity ranges: ``default_splits``'s, plus ``train_extra`` (part of
        the train split) when ``extra_train_identities`` > 0."""
        ranges = default_splits(self.num_identities, self.val_fraction, self.test_fraction,
                                faceid_identities=self.num_faceid_identities)
        if self.extra_train_identities > 0:
            start = ranges["faceid"][1]
            ranges[TRAIN_EXTRA] = (start, start + self.extra_train_identities)
        return ranges

    def split_of(self, identity: int) -> str:
        for name, (start, stop) in self.splits().items():
            if start <= identity < stop:
                return "train" if name == TRAIN_EXTRA else name
        raise ValueError(f"identity {identity} is outside the corpus "
                         f"(0 .. {self.all_identities().stop - 1})")

    def identities(self, split: str) -> list[int]:
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
        return split_identities(self.splits(), split)

    def all_identities(self) -> range:
        return range(0, max(stop for _, stop in self.splits().values()))


def split_ranges(ranges: dict, split: str) -> list[tuple[int, int]]:
    """The ranges of ``split`` among a corpus's ranges (``CorpusSpec.splits()``, or the
    ``ranges`` a prepared corpus records in its dataset.json): its own, and for ``train``
    also ``train_extra`` when there is one."""
    names = (split, TRAIN_EXTRA) if split == "train" else (split,)
    return [tuple(ranges[name]) for name in names if name in ranges]


def split_identities(ranges: dict, split: str) -> list[int]:
    """The identities of ``split``, in order (``split_ranges``)."""
    return [i for start, stop in split_ranges(ranges, split) for i in range(start, stop)]


@dataclasses.dataclass
class IdentitySamples:
    """Everything generated for one identity."""

    identity: int
    split: str
    attributes: IdentityAttributes
    utterances: list[np.ndarray]   # int16 [samples], at spec.sample_rate
    images: list[np.ndarray]       # uint8 [size, size, 3]


def generate_identity(spec: CorpusSpec, identity: int) -> IdentitySamples:
    """Utterances and images of one identity (pure; safe in any process, any order)."""
    split = spec.split_of(identity)
    if split == "faceid":
        n_utt, n_img = 0, spec.faceid_images_per_identity
    else:
        n_utt, n_img = spec.utterances_per_identity, spec.images_per_identity
    utterances = [synthesize_utterance(spec.seed, identity, i, spec.sample_rate)
                  for i in range(n_utt)]
    images = [draw_face(spec.seed, identity, j, spec.image_size, spec.face_quality)
              for j in range(n_img)]
    return IdentitySamples(identity=int(identity), split=split,
                           attributes=identity_attributes(spec.seed, identity),
                           utterances=utterances, images=images)
