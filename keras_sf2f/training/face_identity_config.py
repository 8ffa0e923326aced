"""FaceIdentityConfig: the settings of one face-identity network training run, as options.

Each field is an option (keras_sf2f/config/options.py) whose flag carries the ``face_net_``
prefix (``steps`` is ``--face_net_steps``), so that trainers/train_face_identity.py's flags
can share a flagfile with training's (``--batch_size`` is training's, ``--face_net_batch_size``
this network's). The training itself is keras_sf2f/training/face_identity.py; this module
imports no TensorFlow, because keras_sf2f/flags.py derives the tool's flags from it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from keras_sf2f.config import options
from keras_sf2f.config.options import option


@dataclasses.dataclass
class FaceIdentityConfig:
    """Settings of one training run. Defaults: the documented small network (706,880
    trainable parameters) on the default corpus (250 faceid identities x 10 faces at 64 px):
    300 steps of 64 faces, ~0.6 s per step on 2 idle CPU cores (about 3-4 minutes with
    tracing and the held-out check); 8 minutes measured on a 2-core machine shared with
    other jobs (load 6-8). Held-out 1-NN identity accuracy 0.996 (faceid, 250 identities)
    and 1.0 (val and test, 50 unseen identities each)."""
    SECTION: ClassVar[str] = "face-identity network training"

    image_size: int = option(
        64,
        "Resolution (px) the faceid faces are taken at: the generator's output size, so the "
        "network sees exactly what the perceptual loss will show it.", choices=(64, 128),
        flag="face_net_image_size")
    width_multiplier: float = option(
        0.25, "FaceNet channel-width multiplier of the face-identity network.", lower=0.01,
        flag="face_net_width_multiplier")
    repeats: tuple[int, ...] = option(
        (1, 2, 1), "Block35 / Block17 / Block8 repeats of the face-identity network.",
        flag="face_net_repeats")
    embedding_dim: int = option(
        128, "Embedding size of the face-identity network.", lower=2,
        flag="face_net_embedding_dim")
    # Named as FaceNet's argument and face_identity.json's key; users type --face_net_dropout.
    dropout_rate: float = option(
        0.2, "Dropout before last_linear while training.", lower=0.0, upper=0.99,
        flag="face_net_dropout")
    steps: int = option(
        300,
        "Training steps of the face-identity network (300 x 64 faces: about 3-4 minutes on 2 "
        "CPU cores with the default corpus).", lower=1, flag="face_net_steps")
    batch_size: int = option(
        64, "Faces per face-identity training step.", lower=2, flag="face_net_batch_size")
    learning_rate: float = option(
        2e-3, "Peak AdamW learning rate (linear warm-up, then cosine decay to 0); > 0.",
        lower=0.0, flag="face_net_learning_rate")
    warmup_steps: int = option(
        50, "Linear learning-rate warm-up steps (at most a quarter of --face_net_steps).",
        lower=0, flag="face_net_warmup_steps")
    weight_decay: float = option(
        1e-4, "AdamW weight decay of the face-identity network.", lower=0.0,
        flag="face_net_weight_decay")
    logit_scale: float = option(
        16.0, "Scale of the cosine classifier's logits.", lower=0.0,
        flag="face_net_logit_scale")
    margin: float = option(
        0.1,
        "Additive cosine margin of the training classifier (0: plain normalised softmax).",
        lower=0.0, flag="face_net_margin")
    augment: bool = option(
        True, "Stateless shift / brightness / contrast augmentation of training faces.",
        flag="face_net_augment")
    max_shift: float = option(
        0.04, "Augmentation: largest random shift, as a fraction of the image side.",
        lower=0.0, upper=0.5, flag="face_net_max_shift")
    brightness: float = option(
        0.1, "Augmentation: largest brightness offset, +- this fraction of the pixel range.",
        lower=0.0, upper=1.0, flag="face_net_brightness")
    contrast: float = option(
        0.1, "Augmentation: largest relative contrast change (+- this fraction).",
        lower=0.0, upper=1.0, flag="face_net_contrast")
    seed: int = option(
        0, "Seed of the face-identity network's initialisation and of its stateless sampling "
        "and augmentation.", flag="face_net_seed")

    def problems(self) -> list[str]:
        """Every value outside what training accepts, one sentence each, naming the flag."""
        found = options.bound_problems(self)
        by_name = {opt.name: opt for opt in options.options_of(type(self))}
        if len(tuple(self.repeats)) != 3:
            found.append(f"{by_name['repeats'].label} must have 3 entries, got "
                         f"{list(self.repeats)}")
        if not self.learning_rate > 0:
            found.append(f"{by_name['learning_rate'].label} must be > 0, got "
                         f"{self.learning_rate}")
        return found

    def validate(self) -> "FaceIdentityConfig":
        """Raises ValueError listing every problem."""
        found = self.problems()
        if found:
            raise ValueError("invalid face-identity network configuration: " + "; ".join(found))
        return self

    def check_parsed(self) -> None:
        """Run on the tool's flags once they are parsed (keras_sf2f/flags.py)."""
        self.validate()

    def architecture(self) -> dict:
        """Keyword arguments of ``FaceNet`` (without the classifier head)."""
        return {"embedding_dim": int(self.embedding_dim),
                "width_multiplier": float(self.width_multiplier),
                "repeats": [int(r) for r in self.repeats],
                "dropout_rate": float(self.dropout_rate)}
