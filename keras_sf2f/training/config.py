"""TrainConfig: everything ``train()`` needs, as a plain dataclass (the library never reads flags).

Each field is an option (keras_sf2f/config/options.py: default, help, bounds): trainers/train.py's
training flags are derived from it, ``model`` is the ``ModelConfig`` of the model flags.
Defaults are the SF2F 64x64 first stage (reference command line: batch 256, 12,000 epochs of ~11
steps, Adam 5e-4 (0.9, 0.999)); configs/*.cfg set the rest. Tests build it directly.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Mapping

from keras_sf2f.config import groups, options
from keras_sf2f.config.options import option
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
    """A training run: where it writes, what it reads, the model, and how it trains."""
    SECTION: ClassVar[str] = "training"

    model_dir: str | None = option(
        None,
        "Training output directory: checkpoints (resumed automatically when present), "
        "best_<metric>/ checkpoints, TensorBoard summaries (train/, val/) and flags.cfg, the "
        "run's effective configuration (a flagfile).")
    data_dir: str | None = groups.DATA_DIR.field()
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # schedule and optimisation
    train_steps: int = groups.TRAIN_STEPS.field()
    batch_size: int = option(
        256, "Global batch size (identities per step), summed over all replicas.", lower=1)
    learning_rate: float = option(
        5e-4, "Adam learning rate of the generator and of every discriminator.", lower=0.0)
    adam_beta1: float = option(0.9, "Adam beta_1.", lower=0.0, upper=1.0)
    adam_beta2: float = option(0.999, "Adam beta_2.", lower=0.0, upper=1.0)
    adam_epsilon: float = option(1e-8, "Adam epsilon (PyTorch's default).", lower=0.0)
    lr_decay_start_step: int = option(
        -1,
        "From this step on, the generator's and image discriminators' learning rates decay "
        "linearly to lr_decay_final_factor * learning_rate at train_steps; the identity "
        "classifiers keep theirs (the reference's decay_lr_epochs=10000 of 12,000). Counts the "
        "run's steps, pre-training steps included, like --train_steps. -1: no decay.")
    lr_decay_final_factor: float = option(
        1e-3, "Learning-rate factor reached at the end of the decay.", lower=0.0)
    # loss weights (<= 0 switches a term off)
    l1_weight: float = option(
        10.0,
        "Weight of the L1 pixel loss per output resolution (10 at 64x64, 100 for the 128 model "
        "and the baseline); <= 0 switches it off.")
    gan_weight: float = option(
        1.0,
        "Weight of the patch-discriminator GAN loss per resolution; <= 0 switches it off and "
        "the image discriminators are not trained.")
    ac_weight: float = option(
        0.05,
        "Weight of the generator's auxiliary-classifier terms (identity cross-entropy and AC "
        "real/fake) per resolution; the identity classifiers train with weight 1. <= 0 "
        "switches them off (classifiers not trained).")
    perceptual_weight: float = option(
        100.0,
        "Weight of the FaceNet perceptual loss per resolution; <= 0 switches it off (no "
        "--face_network needed then).")
    gradient_l1_weight: float = option(
        0.0,
        "Weight of an L1 loss on the image gradients (differences of neighbouring pixels) "
        "between the drawn and the real face, per resolution, beside the L1 pixel loss, in "
        "every phase that draws faces: it asks for the typical edge (eyes, brows, outline) "
        "where L1 on pixels blurs it. Not in the reference (0: off); configs/demo.cfg uses "
        "10, the L1 pixel loss's weight.", lower=0.0)
    voice_pretrain_steps: int = option(
        0,
        "Steps, counted in --train_steps, that train the voice encoder alone before any "
        "image loss: a Dense read-out of the voice embedding regresses the face network's "
        "embedding of the speaker's face (cosine distance), as Speech2Face trains its voice "
        "encoder; the generator's losses take over after them. The decoder then learns from "
        "an encoder that already tells speakers apart by how their faces look. 0 (the "
        "reference): none. Stage 1 only (no fuser); needs --face_network.", lower=0)
    decoder_pretrain_steps: int = option(
        0,
        "Steps, counted in --train_steps and run before --voice_pretrain_steps, that train the "
        "face decoder alone to draw each batch's real face from the face network's embedding "
        "of that face (a learned linear map onto the decoder's unit-norm input), with the "
        "generator's L1 and perceptual terms; the voice pre-training then regresses the voice "
        "embedding onto that input instead of through its own read-out. The decoder learns to "
        "draw a face from what a face network sees in it, and a voice that predicts that "
        "embedding gets a face drawn from it (Speech2Face's split into a voice-to-feature "
        "encoder and a feature-to-face decoder). 0 (the reference): none. Stage 1 only; needs "
        "--face_network.", lower=0)
    decoder_pretrain_noise: float = option(
        0.05,
        "Standard deviation of Gaussian noise added to each coordinate of the face embedding "
        "(then re-normalised) that the decoder draws from in --decoder_pretrain_steps: a "
        "voice predicts that embedding only roughly, so the decoder learns to draw a face "
        "from its neighbourhood, not only from exact embeddings of faces. 0: none.",
        lower=0.0)
    adversarial_start_step: int = option(
        0,
        "The generator's adversarial terms (patch-GAN and AC real/fake) are off before this "
        "step and then ramp up linearly over --adversarial_ramp_steps; the discriminators "
        "train from step 0. 0 (the reference): on from the start. Short runs (the demo) use it "
        "so the generator draws a face from L1 + perceptual + identity terms before the GAN "
        "pushes it.", lower=0)
    adversarial_ramp_steps: int = option(
        0,
        "Steps over which the adversarial terms ramp from 0 to full weight after "
        "--adversarial_start_step (0: full weight at once).", lower=0)
    generator_ema_decay: float = option(
        0.0,
        "If > 0, training also keeps an exponential moving average of the generator's weights "
        "(ema = decay * ema + (1 - decay) * w after every step; BatchNorm statistics copied), "
        "checkpointed as generator_ema; validation, evaluation, export and a later stage's "
        "--init_checkpoint use it. 0 (the reference): no average.", lower=0.0, upper=0.99999)
    perceptual_layer_weights: tuple[float, ...] = option(
        (0.0625, 0.125, 0.25, 1.0),
        "Perceptual-loss weights of FaceNet's repeat_1, repeat_2, repeat_3 hidden states and "
        "embedding.")
    face_network: str | None = groups.FACE_NETWORK.field()
    # stage 2
    train_fuser_only: bool = option(
        False,
        "Stage 2: train only the attention fuser (encoder and decoder frozen, BatchNorm in "
        "inference mode); the discriminators keep training, as in the reference.")
    init_checkpoint: str | None = option(
        None,
        "Initialise the models (not the optimizers) from this checkpoint directory or prefix, "
        "e.g. a stage-1 model_dir or best_l1/ for stage 2, or an imported reference "
        "checkpoint. Ignored when --model_dir already holds a checkpoint (that one is "
        "resumed).")
    fuser_init: str = option(
        "reference",
        "Stage 2, when --init_checkpoint has no fuser: 'reference' keeps the fuser's random "
        "initialisation (as the reference does); 'average' starts linear_out as [I; 0], so "
        "the fused embedding begins as an attention-weighted average of the segment "
        "embeddings, which the stage-1 decoder already understands (short stage-2 runs, e.g. "
        "the demo).", choices=FUSER_INITS)
    fuser_windows: int = option(
        20, "Stage 2: at most this many 1.25 s windows per identity and batch item.", lower=1)
    # data sampling
    seed: int = option(
        0, "Seed of the weight initialisation and of the stateless data sampling.")
    crop_frames_min: int = option(
        100, "Stage 1: shortest random crop (frames of 10 ms); one length per batch.", lower=1)
    crop_frames_max: int = option(150, "Stage 1: longest random crop (frames).", lower=1)
    # execution
    strategy: str = option(
        "mirrored",
        "tf.distribute strategy: mirrored (all local devices), multi_worker "
        "(MultiWorkerMirroredStrategy, cluster from TF_CONFIG) or default (none).",
        choices=STRATEGIES)
    mixed_precision: str = option(
        "float32",
        "Compute dtype policy: mixed_bfloat16 / mixed_float16 compute in bfloat16 / float16 "
        "with float32 variables; losses and generated images stay float32. mixed_float16 is "
        "for GPUs with float16 tensor cores (V100, T4, ...) and trains with dynamic loss "
        "scaling (each optimizer's loss scale halves on a step with non-finite gradients, "
        "which is skipped, and doubles after 2000 good steps; checkpointed). mixed_bfloat16 "
        "needs native bfloat16 (A100/H100, TPUs, AVX512_BF16/AMX CPUs). On CPUs both are much "
        "slower than float32 (~10x for bfloat16 without AVX512_BF16; "
        "benchmarks/bench_training.py).", choices=PRECISIONS)
    jit_compile: bool = option(
        False,
        "Compile each replica's forward and backward pass (losses and gradients) with XLA; "
        "the cross-replica gradient sum and the optimizer updates stay TensorFlow ops. For "
        "GPUs; the first step compiles for a while.")
    sync_batch_norm: bool = option(
        False,
        "Synchronised BatchNorm: in the trained models (generator, image discriminators, "
        "identity classifiers), BatchNorm in training mode normalises with the mean and "
        "variance of the global batch, all-reduced over the replicas, instead of each "
        "replica's own slice. Off (the reference, whose DataParallel normalises per GPU): "
        "each replica normalises its batch_size / replicas examples. Turn it on when the "
        "per-replica batch is small (many GPUs, small --batch_size), so that training does "
        "not depend on the number of replicas. Costs three small all-reduces (per-channel "
        "sum, sum of squares, count) per BatchNorm layer call in training mode, each step. "
        "Changes nothing with one replica, nor for models, checkpoints and export (a run can "
        "be resumed with it switched).")
    fast_conv: str = option(
        "auto",
        "Convolution input gradients computed with the forward kernel "
        "(keras_sf2f/models/fast_conv.py). auto: on only where it was measured to pay -- "
        "float32 on CPUs running TensorFlow's Eigen convolutions (oneDNN off), without XLA; "
        "off on GPUs. on/off force it.", choices=FAST_CONV_MODES)
    # checkpoints, validation, summaries
    checkpoint_every_steps: int = option(
        1000, "Save a checkpoint every this many steps (and at the end / on SIGTERM).",
        lower=1)
    keep_checkpoints: int = option(
        3,
        "Regular checkpoints kept in model_dir (at least 2 are kept, so that an unreadable "
        "newest checkpoint leaves one to resume from).", lower=1)
    eval_every_steps: int = option(
        1000, "Validate every this many steps (and at the end); 0 switches validation off.",
        lower=0)
    val_split: str = option("val", "Split of --data_dir used for validation.")
    eval_batch_size: int = option(64, "Identities per validation batch.", lower=1)
    eval_max_windows: int = groups.EVAL_MAX_WINDOWS.field()
    best_l1_metric: str = option(
        "pixel",
        "What best_l1/ tracks: the validation pixel L1 of the largest output, or the L1 "
        "distance of FaceNet embeddings (the reference's best_L1_with_model.pt).",
        choices=BEST_L1_METRICS)
    num_image_identities: int = option(
        8,
        "Validation identities whose real and generated faces are written as TensorBoard "
        "images.", lower=0)
    summary_every_steps: int = option(
        10, "Write training scalars every this many steps.", lower=1)
    log_every_seconds: float = option(30.0, "Console progress line interval.", lower=0.0)

    @property
    def pretrain_steps(self) -> int:
        """The run's first steps that train a part of the generator alone (decoder, then voice
        encoder); the GAN step's optimizers begin after them."""
        return self.decoder_pretrain_steps + self.voice_pretrain_steps

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any],
                     model: ModelConfig | Mapping[str, Any] | None = None) -> "TrainConfig":
        """From a dict of training-field values (unknown keys are an error) and a model config
        (a ModelConfig, a dict of model fields, or ``values['model']``)."""
        values = dict(values)
        if model is not None:
            values["model"] = model
        return options.from_mapping(cls, values, "training config")

    def to_dict(self) -> dict:
        return options.to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_flagfile(self) -> str:
        """The configuration as a flagfile (the run's flags.cfg): read back by trainers/train.py
        --flagfile and by keras_sf2f.runs, it gives this configuration again."""
        return ("# The effective configuration of this training run (TrainConfig, with its "
                "model),\n# written by training; --flagfile=<this file> gives it again.\n"
                + "\n".join(options.flag_lines(self)) + "\n")

    def _value_problems(self) -> list[str]:
        problems = options.bound_problems(self)
        if self.crop_frames_max < self.crop_frames_min:
            problems.append(f"crop_frames_max ({self.crop_frames_max}) < crop_frames_min "
                            f"({self.crop_frames_min})")
        if len(self.perceptual_layer_weights) != 4:
            problems.append(f"perceptual_layer_weights needs 4 values (repeat_1, repeat_2, "
                            f"repeat_3, embedding), got {list(self.perceptual_layer_weights)}")
        return problems

    def check_parsed(self) -> None:
        """Run on the training flags once they are parsed (keras_sf2f/flags.py): what the
        values show by themselves; ``validate`` checks the whole run before training."""
        problems = self._value_problems()
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))

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
        problems += self._value_problems()
        for name in ("learning_rate", "adam_epsilon", "lr_decay_final_factor"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2", "generator_ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if len(self.perceptual_layer_weights) == 4 and self.perceptual_weight > 0 and \
                max(self.perceptual_layer_weights) <= 0:
            problems.append("perceptual_weight > 0 but every perceptual layer weight is <= 0")
        if self.perceptual_weight > 0 and not self.face_network:
            problems.append("perceptual_weight > 0 needs --face_network (the face-identity "
                            "network: a directory from trainers/train_face_identity.py or a "
                            ".keras file, e.g. imported VGGFace2 FaceNet weights); or set "
                            "--perceptual_weight=0 to train without the perceptual loss")
        # The pre-training phases: what each needs the face network for; stage 1 only.
        for name, use in (("voice_pretrain_steps",
                           "its embeddings of the speakers' faces are the target"),
                          ("decoder_pretrain_steps",
                           "the decoder draws faces from its embeddings")):
            if getattr(self, name) <= 0:
                continue
            if not self.face_network:
                problems.append(f"{name} > 0 needs --face_network ({use})")
            if self.model.fuser == "attention" or self.train_fuser_only:
                problems.append(f"{name} is for stage 1: set --{name}=0 for a model with "
                                f"the fuser")
        if self.decoder_pretrain_steps > 0:
            if self.l1_weight <= 0 and self.perceptual_weight <= 0:
                problems.append("decoder_pretrain_steps > 0 needs an image loss to draw with: "
                                "--l1_weight or --perceptual_weight > 0")
        if self.pretrain_steps > 0 and self.pretrain_steps >= self.train_steps:
            problems.append(f"decoder_pretrain_steps + voice_pretrain_steps "
                            f"({self.pretrain_steps}) leave no generator step within "
                            f"train_steps ({self.train_steps})")
        if self.train_fuser_only and self.model.fuser != "attention":
            problems.append("train_fuser_only needs a model with --fuser=attention")
        if (self.model.fuser == "attention" and self.train_fuser_only
                and not self.init_checkpoint):
            problems.append("train_fuser_only (stage 2) starts from a stage-1 checkpoint: "
                            "pass --init_checkpoint=<stage-1 model_dir or checkpoint prefix>")
        if problems:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))
        return self
