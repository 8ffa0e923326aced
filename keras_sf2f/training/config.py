"""TrainConfig: everything ``train()`` needs, as a plain dataclass (the library never reads FLAGS).

Field names are the ``# --- training ---`` flags of ``keras_sf2f/flags.py`` (same names, same
defaults); ``model`` is the ``ModelConfig`` of the ``# --- model ---`` flags and ``data_dir``
the data section's flag. ``TrainConfig.from_flags(FLAGS)`` builds it in entry points, tests
build it directly.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from keras_sf2f.config_values import coerce_field
from keras_sf2f.models.builder import ModelConfig

STRATEGIES = ("mirrored", "multi_worker", "default")
# mixed_float16 trains with dynamic loss scaling (the float16 exponent range needs it);
# mixed_bfloat16 has float32's range and does not.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
FAST_CONV_MODES = ("auto", "on", "off")
BEST_L1_METRICS = ("pixel", "facenet")
FUSER_INITS = ("reference", "average")


@dataclasses.dataclass
class TrainConfig:
    """See the flag help in keras_sf2f/flags.py (section "training") for each field."""
    model_dir: str = ""
    data_dir: str = ""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # schedule and optimisation
    train_steps: int = 132000
    batch_size: int = 256
    learning_rate: float = 5e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_decay_start_step: int = -1
    lr_decay_final_factor: float = 1e-3
    # loss weights (<= 0 switches a term off)
    l1_weight: float = 10.0
    gan_weight: float = 1.0
    ac_weight: float = 0.05
    perceptual_weight: float = 100.0
    adversarial_start_step: int = 0
    adversarial_ramp_steps: int = 0
    generator_ema_decay: float = 0.0
    perceptual_layer_weights: tuple = (0.0625, 0.125, 0.25, 1.0)
    face_network: str | None = None
    # stage 2
    train_fuser_only: bool = False
    init_checkpoint: str | None = None
    fuser_init: str = "reference"
    fuser_windows: int = 20
    # data sampling
    seed: int = 0
    crop_frames_min: int = 100
    crop_frames_max: int = 150
    # execution
    strategy: str = "mirrored"
    mixed_precision: str = "float32"
    jit_compile: bool = False
    fast_conv: str = "auto"
    # checkpoints, validation, summaries
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    eval_every_steps: int = 1000
    val_split: str = "val"
    eval_batch_size: int = 64
    eval_max_windows: int = 20
    best_l1_metric: str = "pixel"
    num_image_identities: int = 8
    summary_every_steps: int = 10
    log_every_seconds: float = 30.0

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any],
                     model: ModelConfig | Mapping[str, Any] | None = None) -> "TrainConfig":
        """From a dict of training-field values (unknown keys are an error) and a model config
        (a ModelConfig, a dict of model fields, or ``values['model']``)."""
        values = dict(values)
        if model is None:
            model = values.pop("model", None)
        else:
            values.pop("model", None)
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name == "model" or field.name not in values:
                continue
            value = values[field.name]
            if value is None:
                kwargs[field.name] = None
                continue
            value = coerce_field(field, value, {"perceptual_layer_weights": float},
                                 "training config")
            kwargs[field.name] = value
        if model is None:
            model = ModelConfig()
        elif not isinstance(model, ModelConfig):
            model = ModelConfig.from_mapping(model)
        return cls(model=model, **kwargs)

    @classmethod
    def from_flags(cls, flag_values) -> "TrainConfig":
        """From parsed absl FlagValues: the training flags, --data_dir and the model flags."""
        values = {name: getattr(flag_values, name) for name in TRAINING_FIELDS}
        values["data_dir"] = flag_values.data_dir or ""
        values["model_dir"] = flag_values.model_dir or ""
        return cls.from_mapping(values, model=ModelConfig.from_flags(flag_values))

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["model"] = self.model.to_dict()
        values["perceptual_layer_weights"] = list(self.perceptual_layer_weights)
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self, require_dirs: bool = True) -> "TrainConfig":
        """Raises ValueError listing every problem (model configuration included)."""
        problems = []
        try:
            self.model.validate()
        except ValueError as e:
            problems.append(str(e))
        if require_dirs and not self.model_dir:
            problems.append("model_dir is required: where checkpoints and summaries go")
        if require_dirs and not self.data_dir:
            problems.append("data_dir is required: a prepared data directory "
                            "(trainers/prepare_data.py)")
        positive = ("train_steps", "batch_size", "checkpoint_every_steps", "keep_checkpoints",
                    "eval_batch_size", "eval_max_windows", "summary_every_steps",
                    "fuser_windows", "crop_frames_min")
        for name in positive:
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "adam_epsilon", "lr_decay_final_factor"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("adversarial_start_step", "adversarial_ramp_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2", "generator_ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.eval_every_steps < 0:
            problems.append(f"eval_every_steps must be >= 0 (0 = no validation), "
                            f"got {self.eval_every_steps}")
        if self.num_image_identities < 0:
            problems.append(f"num_image_identities must be >= 0, got {self.num_image_identities}")
        if self.crop_frames_max < self.crop_frames_min:
            problems.append(f"crop_frames_max ({self.crop_frames_max}) < crop_frames_min "
                            f"({self.crop_frames_min})")
        if len(self.perceptual_layer_weights) != 4:
            problems.append(f"perceptual_layer_weights needs 4 values (repeat_1, repeat_2, "
                            f"repeat_3, embedding), got {list(self.perceptual_layer_weights)}")
        elif self.perceptual_weight > 0 and max(self.perceptual_layer_weights) <= 0:
            problems.append("perceptual_weight > 0 but every perceptual layer weight is <= 0")
        if self.perceptual_weight > 0 and not self.face_network:
            problems.append("perceptual_weight > 0 needs --face_network (the face-identity "
                            "network: a directory from trainers/train_face_identity.py or a "
                            ".keras file, e.g. imported VGGFace2 FaceNet weights); or set "
                            "--perceptual_weight=0 to train without the perceptual loss")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.mixed_precision not in PRECISIONS:
            problems.append(f"mixed_precision must be one of {PRECISIONS}, "
                            f"got {self.mixed_precision!r}")
        if self.fast_conv not in FAST_CONV_MODES:
            problems.append(f"fast_conv must be one of {FAST_CONV_MODES}, got {self.fast_conv!r}")
        if self.best_l1_metric not in BEST_L1_METRICS:
            problems.append(f"best_l1_metric must be one of {BEST_L1_METRICS}, "
                            f"got {self.best_l1_metric!r}")
        if self.fuser_init not in FUSER_INITS:
            problems.append(f"fuser_init must be one of {FUSER_INITS}, got {self.fuser_init!r}")
        if self.train_fuser_only and self.model.fuser != "attention":
            problems.append("train_fuser_only needs a model with --fuser=attention")
        if (self.model.fuser == "attention" and self.train_fuser_only
                and not self.init_checkpoint):
            problems.append("train_fuser_only (stage 2) starts from a stage-1 checkpoint: "
                            "pass --init_checkpoint=<stage-1 model_dir or checkpoint prefix>")
        if problems:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))
        return self


# The fields set by training flags (everything but the model and the data/model dirs, which
# have their own sections or handling).
TRAINING_FIELDS = tuple(name for name in TrainConfig.field_names()
                        if name not in ("model", "data_dir", "model_dir"))
