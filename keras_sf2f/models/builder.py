"""Builds the generator and discriminators of a configuration, and counts their parameters.

``ModelConfig`` declares the model options (each field's default, help and choices): the tools'
model flags are derived from it (keras_sf2f/flags.py), and tests do
``ModelConfig(decoder="upconv_multires", image_size=128, ...)`` without absl.

Object names (also the ``tf.train.Checkpoint`` keys used by the reference importer and the
training loop, see ``checkpoint_objects``):

* ``generator`` (a VoiceToFaceGenerator; its encoder owns the fuser when there is one);
* ``image_discriminator_<res>`` (PatchDiscriminator on <res>x<res> images);
* ``identity_classifier_<res>`` (AuxiliaryClassifier on <res>x<res> images).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Any, ClassVar, Mapping, NamedTuple

import numpy as np

from keras_sf2f.config import options
from keras_sf2f.config.groups import VOICE_QUALITY_CHANNELS
from keras_sf2f.config.options import option

# Output resolutions (px, lowest first) of each decoder choice.
DECODER_RESOLUTIONS = {
    "upconv_64": (64,),
    "upconv_multires": (64, 128),
    "deconv_64": (64,),
}
DISCRIMINATOR_RESOLUTIONS = (64, 128)
FUSERS = ("none", "attention")
ENCODERS = ("inception", "cnn")


@dataclasses.dataclass
class ModelConfig:
    """The generator (voice encoder + optional attention fuser + face decoder) and the image
    discriminators. Defaults are the SF2F 64x64 first-stage model (reference
    options/vox/sf2f/sf2f_1st_stage.yaml); configs/*.cfg select the other released
    configurations. Each field is an option (keras_sf2f/config/options.py): the tools' model
    flags are derived from it."""
    SECTION: ClassVar[str] = "model (generator and discriminators)"

    encoder: str = option(
        "inception",
        "Voice encoder: 'inception' (SF2F's inception 1D-CNN) or 'cnn' (voice2face's plain "
        "1D-CNN, VoiceEmbedNet).", choices=ENCODERS)
    encoder_channels: tuple[int, ...] = option(
        (256, 384, 576, 864),
        "Output channels of the encoder's four blocks (inception: split over 4 branches, so "
        "multiples of 4).")
    embedding_dim: int = option(
        512, "Size of the unit-norm voice embedding (the decoder's input).")
    num_mel_bins: int = option(
        40, "Log-mel channels per frame fed to the encoder (the reference's 40-band logfbank).")
    voice_quality_channels: bool = VOICE_QUALITY_CHANNELS.field()
    encoder_add_noise: bool = option(
        False, "Add stddev * N(0, 1) to the embedding and re-normalise (voice2face baseline).")
    encoder_noise_stddev: float = option(
        0.05, "Standard deviation of the baseline's embedding noise.")
    encoder_noise_at_inference: bool = option(
        True,
        "Also add the baseline's embedding noise at inference/evaluation, as the reference does "
        "(it is not gated on training mode). False makes the baseline deterministic at "
        "inference.")
    fuser: str = option(
        "none",
        "Segment fusion for [B, segments, frames, mels] inputs: 'attention' (SF2F's 1-layer "
        "attention fuser, stage 2) or 'none' (segment embeddings are averaged).",
        choices=FUSERS)
    decoder: str = option(
        "upconv_64",
        "Face decoder: 'upconv_64' (SF2F 64x64), 'upconv_multires' (SF2F 128: 64x64 and "
        "128x128 outputs) or 'deconv_64' (voice2face's transposed-convolution decoder).",
        choices=tuple(DECODER_RESOLUTIONS))
    image_size: int = option(
        64, "Side of the (largest) generated face image, px; must be the decoder's largest "
        "output.")
    deconv_decoder_channels: tuple[int, ...] = option(
        (1024, 512, 256, 128, 64),
        "Channels of the deconv_64 decoder's transposed convolutions (output side "
        "2^(len+1)).")
    image_discriminator_arch_64: str = option(
        "C4-64-2,C4-128-2,C4-256-2",
        "Architecture string (CK-X-S[-P], comma separated) of the 64x64 real/fake patch "
        "discriminator; empty for none.")
    image_discriminator_arch_128: str = option(
        "", "Architecture string of the 128x128 patch discriminator; empty for none.")
    identity_classifier_arch_64: str = option(
        "C4-64-2,C4-128-2,C4-256-2",
        "Architecture string of the 64x64 auxiliary identity classifier (AC discriminator); "
        "empty for none.")
    identity_classifier_arch_128: str = option(
        "", "Architecture string of the 128x128 auxiliary identity classifier; empty for none.")
    discriminator_normalization_64: str = option(
        "batch", "Normalization inside the 64x64 discriminators' conv stacks.",
        choices=("batch", "none"))
    discriminator_normalization_128: str = option(
        "batch", "Normalization inside the 128x128 discriminators' conv stacks.",
        choices=("batch", "none"))
    discriminator_activation_64: str = option(
        "leakyrelu-0.1",
        "Activation inside the 64x64 discriminators: leakyrelu-<slope>, leakyrelu (0.01), relu, "
        "none.")
    discriminator_activation_128: str = option(
        "leakyrelu-0.1", "Activation inside the 128x128 discriminators.")
    discriminator_padding: str = option(
        "valid",
        "Padding of discriminator convolutions written CK-X-S (valid = 0, same = (K-1)/2, odd "
        "K only); CK-X-S-P gives it explicitly.", choices=("valid", "same"))
    num_train_identities: int = option(
        2890,
        "Number of training identities = width of the identity classifiers' softmax. 2890 is "
        "the VoxCeleb/HQ-VoxCeleb training split size reported by later work (third-party); "
        "the reference sets it from the training data, and so should training on other data.")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """From a dict (e.g. flag values or JSON); unknown keys are an error, missing keys keep
        their defaults. Values are coerced (lists of strings -> tuples of ints, etc.)."""
        return options.from_mapping(cls, values, "model config")

    def to_dict(self) -> dict:
        return options.to_dict(self)

    def check_parsed(self) -> None:
        """Run on a tool's model flags once they are parsed (keras_sf2f/flags.py)."""
        self.validate()

    @property
    def input_channels(self) -> int:
        """Feature channels per frame the voice encoder takes: the log-mels, then the four
        voice-quality channels when ``voice_quality_channels``."""
        from keras_sf2f.audio.voice_quality import NUM_CHANNELS  # noqa: PLC0415 - loads TF
        return self.num_mel_bins + (NUM_CHANNELS if self.voice_quality_channels else 0)

    @property
    def output_resolutions(self) -> tuple[int, ...]:
        return DECODER_RESOLUTIONS.get(self.decoder, ())

    def discriminator_arch(self, kind: str, resolution: int) -> str:
        """kind: 'image_discriminator' or 'identity_classifier'."""
        return getattr(self, f"{kind}_arch_{resolution}").strip()

    def validate(self) -> "ModelConfig":
        """Raises ValueError listing every problem found."""
        from keras_sf2f.models.discriminator_arch import (  # noqa: PLC0415
            check_normalization, conv_stack_output_size, parse_activation,
            parse_discriminator_arch)
        problems = []
        if self.encoder not in ENCODERS:
            problems.append(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if len(self.encoder_channels) != 4 or min(self.encoder_channels, default=0) < 1:
            problems.append(f"encoder_channels must be 4 positive integers, "
                            f"got {list(self.encoder_channels)}")
        elif self.encoder == "inception" and any(c % 4 for c in self.encoder_channels):
            problems.append(f"encoder_channels must be multiples of 4 for the inception encoder "
                            f"(4 branches each), got {list(self.encoder_channels)}")
        if self.embedding_dim < 1:
            problems.append(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.num_mel_bins < 1:
            problems.append(f"num_mel_bins must be positive, got {self.num_mel_bins}")
        if self.encoder_noise_stddev < 0:
            problems.append(f"encoder_noise_stddev must be >= 0, got {self.encoder_noise_stddev}")
        if self.fuser not in FUSERS:
            problems.append(f"fuser must be one of {FUSERS}, got {self.fuser!r}")
        if self.decoder not in DECODER_RESOLUTIONS:
            problems.append(f"decoder must be one of {tuple(DECODER_RESOLUTIONS)}, "
                            f"got {self.decoder!r}")
        else:
            if self.decoder == "deconv_64":
                deconv_size = 2 ** (len(self.deconv_decoder_channels) + 1)
                if deconv_size != 64 or min(self.deconv_decoder_channels, default=0) < 1:
                    problems.append(
                        f"deconv_decoder_channels must be 5 positive integers (64px output), "
                        f"got {list(self.deconv_decoder_channels)}")
            else:
                # 4 up blocks halve the channels 4 times; the 128 head halves them once more.
                divisor = 16 * 2 ** (len(self.output_resolutions) - 1)
                if self.embedding_dim % divisor:
                    problems.append(f"embedding_dim must be divisible by {divisor} for "
                                    f"decoder {self.decoder}, got {self.embedding_dim}")
            if self.image_size != self.output_resolutions[-1]:
                problems.append(
                    f"image_size={self.image_size} does not match decoder {self.decoder}, whose "
                    f"largest output is {self.output_resolutions[-1]}px "
                    f"(upconv_64 and deconv_64 -> 64, upconv_multires -> 128)")
        any_identity_classifier = False
        for resolution in DISCRIMINATOR_RESOLUTIONS:
            for kind in ("image_discriminator", "identity_classifier"):
                arch = self.discriminator_arch(kind, resolution)
                if not arch:
                    continue
                flag = f"{kind}_arch_{resolution}"
                if resolution not in self.output_resolutions:
                    problems.append(f"{flag} is set but decoder {self.decoder} has no "
                                    f"{resolution}px output (set it empty)")
                try:
                    _, specs = parse_discriminator_arch(arch, self.discriminator_padding)
                    if conv_stack_output_size(resolution, specs) < 1:
                        problems.append(f"{flag}={arch!r} reduces a {resolution}px image to "
                                        f"nothing")
                except ValueError as e:
                    problems.append(f"{flag}: {e}")
                any_identity_classifier |= kind == "identity_classifier"
            try:
                check_normalization(getattr(self, f"discriminator_normalization_{resolution}"))
            except ValueError as e:
                problems.append(f"discriminator_normalization_{resolution}: {e}")
            try:
                parse_activation(getattr(self, f"discriminator_activation_{resolution}"))
            except ValueError as e:
                problems.append(f"discriminator_activation_{resolution}: {e}")
        if any_identity_classifier and self.num_train_identities < 1:
            problems.append(f"num_train_identities must be >= 1 with an identity classifier, "
                            f"got {self.num_train_identities}")
        if problems:
            raise ValueError("invalid model configuration:\n  " + "\n  ".join(problems))
        return self


class Sf2fModels(NamedTuple):
    """What build_models returns; unpacks as (generator, image_discriminators,
    identity_classifiers). Discriminator lists are ordered by resolution, lowest first; each
    has an ``image_size`` attribute."""
    generator: Any
    image_discriminators: list
    identity_classifiers: list


@contextlib.contextmanager
def seeded_initialisation(seed: int):
    """Inside the block, Keras and TensorFlow draw their random numbers (weight initialisation
    among them) from ``seed``, so the same seed builds the same weights. Python's and NumPy's
    global streams are put back afterwards: a seeded build in the middle of other work changes
    nothing else's random numbers."""
    import keras  # noqa: PLC0415

    saved = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(seed)
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def build_generator(config: ModelConfig, seed: int | None = None):
    """The VoiceToFaceGenerator of a configuration, built (weights created); with ``seed``,
    its initial weights are those of that seed (:func:`seeded_initialisation`)."""
    if seed is not None:
        with seeded_initialisation(seed):
            return build_generator(config)
    from keras_sf2f.models.face_decoder import (  # noqa: PLC0415
        DeconvFaceDecoder, FaceDecoder, MultiResolutionFaceDecoder)
    from keras_sf2f.models.fuser import AttentionFuser  # noqa: PLC0415
    from keras_sf2f.models.generator import VoiceToFaceGenerator  # noqa: PLC0415
    from keras_sf2f.models.voice_encoder import VoiceEncoder  # noqa: PLC0415

    fuser = (AttentionFuser(config.embedding_dim, name="attention_fuser")
             if config.fuser == "attention" else None)
    encoder = VoiceEncoder(
        mode=config.encoder, channels=config.encoder_channels,
        embedding_dim=config.embedding_dim, input_channels=config.input_channels,
        voice_quality_channels=config.input_channels - config.num_mel_bins,
        add_noise=config.encoder_add_noise, noise_stddev=config.encoder_noise_stddev,
        noise_at_inference=config.encoder_noise_at_inference, fuser=fuser,
        name="voice_encoder")
    if config.decoder == "upconv_64":
        decoder = FaceDecoder(config.embedding_dim, 64, name="face_decoder")
    elif config.decoder == "upconv_multires":
        decoder = MultiResolutionFaceDecoder(config.embedding_dim, 64, name="face_decoder")
    else:
        decoder = DeconvFaceDecoder(config.embedding_dim, config.deconv_decoder_channels,
                                    name="face_decoder")
    generator = VoiceToFaceGenerator(encoder, decoder, name="generator")
    generator.build((None, None, config.input_channels))
    return generator


def build_discriminators(config: ModelConfig):
    """(image discriminators, identity classifiers), each a list ordered by resolution."""
    from keras_sf2f.models.discriminators import (  # noqa: PLC0415
        AuxiliaryClassifier, PatchDiscriminator)
    image_discriminators, identity_classifiers = [], []
    for resolution in DISCRIMINATOR_RESOLUTIONS:
        common = dict(
            normalization=getattr(config, f"discriminator_normalization_{resolution}"),
            activation=getattr(config, f"discriminator_activation_{resolution}"),
            padding=config.discriminator_padding, image_size=resolution)
        arch = config.discriminator_arch("image_discriminator", resolution)
        if arch:
            model = PatchDiscriminator(arch, name=f"image_discriminator_{resolution}", **common)
            model.build((None, resolution, resolution, 3))
            image_discriminators.append(model)
        arch = config.discriminator_arch("identity_classifier", resolution)
        if arch:
            model = AuxiliaryClassifier(arch, config.num_train_identities,
                                        name=f"identity_classifier_{resolution}", **common)
            model.build((None, resolution, resolution, 3))
            identity_classifiers.append(model)
    return image_discriminators, identity_classifiers


def build_models(config: ModelConfig | Mapping[str, Any]) -> Sf2fModels:
    """Validates the configuration and builds every model (weights created)."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_mapping(config)
    config.validate()
    generator = build_generator(config)
    image_discriminators, identity_classifiers = build_discriminators(config)
    return Sf2fModels(generator, image_discriminators, identity_classifiers)


#: Checkpoint name of the generator's moving average (training's --generator_ema_decay).
#: Whoever draws pictures from a checkpoint uses it when present.
EMA_GENERATOR_NAME = "generator_ema"


def checkpoint_objects(models: Sf2fModels) -> dict:
    """name -> model, the layout of this project's TF checkpoints (module docstring)."""
    objects = {"generator": models.generator}
    for model in models.image_discriminators:
        objects[f"image_discriminator_{model.image_size}"] = model
    for model in models.identity_classifiers:
        objects[f"identity_classifier_{model.image_size}"] = model
    return objects


def parameter_count(model) -> int:
    """Trainable-kind parameters (incl. BatchNorm gamma/beta, excluding the moving mean and
    variance), counted whether or not the model is currently frozen (the convention of the
    reference's hand-computed counts)."""
    if model is None:
        return 0
    return int(sum(int(np.prod(v.shape)) for v in model.weights
                   if v.name not in ("moving_mean", "moving_variance")))


def count_parameters(models: Sf2fModels) -> dict:
    """Per-module parameter counts: generator (encoder + fuser + decoder), voice_encoder
    (without the fuser), fuser (0 when absent), face_decoder, then one entry per discriminator
    (checkpoint_objects names)."""
    generator = models.generator
    fuser = parameter_count(generator.encoder.fuser)
    counts = {
        "generator": parameter_count(generator),
        "voice_encoder": parameter_count(generator.encoder) - fuser,
        "fuser": fuser,
        "face_decoder": parameter_count(generator.decoder),
    }
    for name, model in checkpoint_objects(models).items():
        if name != "generator":
            counts[name] = parameter_count(model)
    return counts


def describe(models: Sf2fModels, config: ModelConfig) -> str:
    """Human-readable summary: per-module parameter counts and input/output shapes."""
    counts = count_parameters(models)
    generator = models.generator
    mel_shape = (None, "frames", config.input_channels)
    segment_shape = (None, "segments", "frames", config.input_channels)
    embedding_shape = (None, config.embedding_dim)
    image_shapes = [(None, size, size, 3) for size in generator.output_resolutions]
    rows = [
        ("generator", counts["generator"], f"{mel_shape} or {segment_shape}",
         f"(images {image_shapes}, embedding {embedding_shape})"),
        ("  voice_encoder", counts["voice_encoder"], f"{mel_shape}", f"{embedding_shape}"),
        ("  fuser", counts["fuser"],
         f"{(None, 'segments', config.embedding_dim)}" if counts["fuser"] else "-",
         f"{embedding_shape}" if counts["fuser"] else "(absent: segments are averaged)"),
        ("  face_decoder", counts["face_decoder"], f"{embedding_shape}",
         ", ".join(str(s) for s in image_shapes)),
    ]
    for name, model in checkpoint_objects(models).items():
        if name == "generator":
            continue
        in_shape = (None, model.image_size, model.image_size, 3)
        out_shape = model.compute_output_shape(in_shape)
        if name.startswith("identity_classifier"):
            out_text = f"real/fake logits {out_shape[0]}, identity logits {out_shape[1]}"
        else:
            out_text = f"patch logits {tuple(out_shape)}"
        rows.append((name, counts[name], f"{in_shape}", out_text))
    width = max(len(row[0]) for row in rows)
    lines = [f"encoder={config.encoder} fuser={config.fuser} decoder={config.decoder} "
             f"image_size={config.image_size} embedding_dim={config.embedding_dim} "
             f"num_train_identities={config.num_train_identities}"]
    if config.encoder_add_noise:
        lines.append(f"embedding noise: {config.encoder_noise_stddev} * N(0, 1), re-normalised, "
                     + ("also at inference (reference behaviour)"
                        if config.encoder_noise_at_inference else "training only"))
    lines.append("")
    lines.append(f"{'module':<{width}}  {'parameters':>12}  input -> output")
    for name, count, in_text, out_text in rows:
        lines.append(f"{name:<{width}}  {count:>12,}  {in_text} -> {out_text}")
    return "\n".join(lines)
