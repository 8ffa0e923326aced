"""Latent identity attributes of the procedural voice-face corpus.

Every identity of the corpus is a small set of numbers drawn from its own random stream,
``np.random.SeedSequence([seed, identity, 0, STREAM_ATTRIBUTES])``. The voice synthesiser
(``voice.py``) and the face painter (``face.py``) both read these numbers, which is what makes
the corpus paired: the voice carries information about the face, through the *shared* factors
(gender-like factor, age, body size, weight, accent), and only through them. The
*face-only* factors (eye colour and spacing, clothes, hair volume, nose width and the other
appearance details) never reach the voice, so a voice-to-face model cannot recover them; they
make faces of different identities distinguishable beyond what a voice can tell.

Random streams: every generator in the corpus is ``rng_for(seed, identity, item, stream)``, a
``numpy.random.Generator`` seeded by ``SeedSequence([seed, identity, item, stream])``, with one
stream tag per kind of thing generated (attributes, voice, face). Any single attribute set,
utterance or image can therefore be regenerated alone, in any order and in any process.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Stream tags (arbitrary, fixed forever: changing one changes the corpus).
STREAM_ATTRIBUTES = 0x5F2F_A77B
STREAM_VOICE = 0x5F2F_7015
STREAM_FACE = 0x5F2F_FACE

# Names of the factors that reach the voice, and of those that only shape the face.
SHARED_FIELDS = ("gender", "age", "size", "weight", "accent", "breathiness")
FACE_ONLY_FIELDS = ("eye_spacing", "hair_volume", "nose_width")

# Eye colours (RGB) the face-only eye colour is drawn from: brown, dark brown, hazel, green,
# blue, grey.
EYE_PALETTE = ((120, 72, 40), (70, 42, 25), (135, 105, 50), (80, 120, 70), (70, 115, 170),
               (125, 135, 145))
# Natural hair colours (RGB) before greying: black, dark brown, brown, blond, auburn.
HAIR_PALETTE = ((28, 24, 22), (68, 46, 32), (120, 82, 50), (212, 180, 110), (150, 70, 38))


def _check_index(name: str, value: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def rng_for(seed: int, identity: int, item: int, stream: int) -> np.random.Generator:
    """The generator for one (seed, identity, item) in one stream; pure and order-free."""
    entropy = [_check_index("seed", seed), _check_index("identity", identity),
               _check_index("item", item), _check_index("stream", stream)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclasses.dataclass(frozen=True)
class IdentityAttributes:
    """The latent attributes of one identity (ranges are hard limits unless noted).

    Shared factors (reach both voice and face):
      gender: gender-like factor, bimodal around -1 (female-like: higher voice, rounder jaw,
        longer hair) and +1 (male-like: lower voice, squarer jaw, beard); each mode has
        standard deviation 0.3; clipped to [-2, 2].
      age: years, in [18, 80] (18 + 62 * Beta(1.4, 2.0); mean about 44).
      size: body size, standardised, in [-2.5, 2.5]; mean 0.35 * gender, sd 0.85 (bigger
        for male-like identities). Lengthens the vocal tract and widens the face.
      weight: standardised weight, in [-2.5, 2.5]; 0.35 * size + 0.25 * (age - 44) / 18 plus
        N(0, 0.85). Widens the face and neck, lowers the voice slightly, widens formants.
      accent: accent / ethnicity-like factor in [0, 1], drawn from four groups (centres 0.1,
        0.38, 0.64, 0.9, sd 0.07). Sets skin tone and hair colour odds; in the voice it shifts
        the vowel space, the vowel and consonant mix, the speaking rate and the intonation.
      breathiness: in [0, 1] (Beta(2, 5), plus 0.08 for female-like identities): aspiration
        noise, open quotient and spectral tilt of the voice.

    Face-only factors (never reach the voice):
      eye_colour: RGB, a ``EYE_PALETTE`` colour with +-12 jitter per channel.
      eye_spacing: in [-1, 1]; +1 is 10 % wider-set eyes. Faces are aligned on the eyes, so
        this shows as a smaller head around the same eye positions.
      clothes_colour: RGB, random hue, saturation 0.25-0.85, value 0.25-0.9.
      hair_volume: in [0, 1]: how far hair stands out from the skull.
      nose_width: in [-1, 1]: -1 is 30 % narrower, +1 is 30 % wider than average.

    Appearance details (per identity, derived from shared factors plus own randomness):
      skin_tone: in [0, 1], accent + N(0, 0.04); 0 is the lightest skin.
      hair_colour: RGB natural hair colour (``HAIR_PALETTE``, odds set by accent).
      hair_length: in [0, 1], 1 reaching the shoulders; logistic in -3 * gender.
      greyness: in [0, 1], grows from about age 35, complete around 75.
      baldness: in [0, 1], only for male-like identities, grows with age.
      beard: in [0, 1], beard density; 0 for female-like identities.
      brow_thickness: in [0, 1], thicker for male-like identities.
    """

    gender: float
    age: float
    size: float
    weight: float
    accent: float
    breathiness: float
    eye_colour: tuple[int, int, int]
    eye_spacing: float
    clothes_colour: tuple[int, int, int]
    hair_volume: float
    nose_width: float
    skin_tone: float
    hair_colour: tuple[int, int, int]
    hair_length: float
    greyness: float
    baldness: float
    beard: float
    brow_thickness: float

    def vector(self, names: tuple[str, ...] = SHARED_FIELDS + FACE_ONLY_FIELDS) -> np.ndarray:
        """The named scalar attributes as a float64 vector (for regression and evaluation)."""
        return np.array([float(getattr(self, n)) for n in names], dtype=np.float64)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


_ACCENT_CENTRES = (0.1, 0.38, 0.64, 0.9)


def identity_attributes(seed: int, identity: int,
                        shared: IdentityAttributes | None = None) -> IdentityAttributes:
    """The attributes of ``identity`` in the corpus of ``seed`` (deterministic, ~50 us).

    With ``shared`` (another identity's attributes), the result is what ``identity``'s random
    draws give for ``shared``'s voice-linked factors (``SHARED_FIELDS``): the face-only factors
    are ``identity``'s, and the appearance details (skin tone, hair colour and length,
    greyness, baldness, beard, brows) are derived from ``shared``'s factors with
    ``identity``'s own randomness. That is a face a voice with ``shared``'s factors is as
    likely to belong to as ``shared``'s own (keras_sf2f/evaluation/oracle.py uses it). The
    draws are made either way, so the stream and the corpus do not change."""
    rng = rng_for(seed, identity, 0, STREAM_ATTRIBUTES)
    # The draw order below is part of the corpus definition: append, never reorder.
    mode = 1.0 if rng.random() < 0.5 else -1.0
    gender = float(np.clip(mode + 0.3 * rng.standard_normal(), -2.0, 2.0))
    age = float(18.0 + 62.0 * rng.beta(1.4, 2.0))
    size = float(np.clip(0.35 * gender + 0.85 * rng.standard_normal(), -2.5, 2.5))
    weight = float(np.clip(0.35 * size + 0.25 * (age - 44.0) / 18.0
                           + 0.85 * rng.standard_normal(), -2.5, 2.5))
    group = int(rng.integers(len(_ACCENT_CENTRES)))
    accent = float(np.clip(_ACCENT_CENTRES[group] + 0.07 * rng.standard_normal(), 0.0, 1.0))
    breathiness = float(np.clip(rng.beta(2.0, 5.0) + (0.08 if gender < 0 else 0.0), 0.0, 1.0))

    eye = np.array(EYE_PALETTE[int(rng.integers(len(EYE_PALETTE)))], dtype=np.float64)
    eye_colour = tuple(int(c) for c in np.clip(eye + rng.uniform(-12, 12, 3), 0, 255).round())
    eye_spacing = float(rng.uniform(-1.0, 1.0))
    clothes_colour = _hsv_to_rgb(float(rng.random()), float(rng.uniform(0.25, 0.85)),
                                 float(rng.uniform(0.25, 0.9)))
    hair_volume = float(rng.random())
    nose_width = float(rng.uniform(-1.0, 1.0))

    if shared is not None:
        gender, age, size, weight, accent, breathiness = (
            getattr(shared, name) for name in SHARED_FIELDS)
    skin_tone = float(np.clip(accent + 0.04 * rng.standard_normal(), 0.0, 1.0))
    # Hair colour odds: light-skinned groups have every colour, dark-skinned mostly black.
    dark = skin_tone
    odds = np.array([0.25 + 0.7 * dark, 0.3 + 0.2 * dark, 0.25 * (1 - dark),
                     0.22 * (1 - dark) ** 2, 0.08 * (1 - dark) ** 2])
    hair_colour = HAIR_PALETTE[int(rng.choice(len(HAIR_PALETTE), p=odds / odds.sum()))]
    hair_length = float(np.clip(_sigmoid(-3.0 * gender + 0.8 * rng.standard_normal()), 0, 1))
    greyness = float(np.clip((age - 35.0) / 40.0 + 0.12 * rng.standard_normal(), 0.0, 1.0))
    baldness = float(np.clip(max(gender, 0.0) * (age - 38.0) / 35.0 * rng.uniform(0.0, 1.6),
                             0.0, 1.0))
    beard = float(np.clip(rng.uniform(-0.7, 1.0) * _sigmoid(5.0 * (gender - 0.4)), 0.0, 1.0)
                  if gender > 0 else 0.0)
    brow_thickness = float(np.clip(0.45 + 0.3 * math.tanh(gender)
                                   + 0.12 * rng.standard_normal(), 0.0, 1.0))
    return IdentityAttributes(
        gender=gender, age=age, size=size, weight=weight, accent=accent,
        breathiness=breathiness, eye_colour=eye_colour, eye_spacing=eye_spacing,
        clothes_colour=clothes_colour, hair_volume=hair_volume, nose_width=nose_width,
        skin_tone=skin_tone, hair_colour=hair_colour, hair_length=hair_length,
        greyness=greyness, baldness=baldness, beard=beard, brow_thickness=brow_thickness)
