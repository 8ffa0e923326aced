"""Discriminator architecture strings and activation names, parsed without Keras.

The reference describes its discriminators as strings such as ``C4-64-2,C4-128-2`` (kernel,
filters, stride, optional padding per convolution; an optional leading ``I<channels>``).
Parsing and checking them needs no TensorFlow, so configuration checks (flag validation,
``ModelConfig.validate``) can run before TensorFlow starts; ``discriminators.py`` builds the
layers from the parsed specs.
"""

from __future__ import annotations

import dataclasses

#: PyTorch's ``nn.LeakyReLU`` default negative slope (the reference's "leakyrelu").
TORCH_DEFAULT_LEAKY_SLOPE = 0.01

NORMALIZATIONS = ("batch", "none")
PADDING_MODES = ("valid", "same")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One ``C`` layer of an architecture string."""
    kernel_size: int
    filters: int
    strides: int
    padding: int


def parse_discriminator_arch(arch: str, padding_mode: str = "valid"):
    """Parses an architecture string -> (input_channels, tuple of ConvSpec).

    Raises ValueError with the offending token for anything malformed.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"discriminator padding must be one of {PADDING_MODES}, "
                         f"got {padding_mode!r}")
    tokens = [token.strip() for token in str(arch).split(",") if token.strip()]
    if not tokens:
        raise ValueError("empty discriminator architecture string")
    input_channels = 3
    if tokens[0].startswith("I"):
        try:
            input_channels = int(tokens[0][1:])
        except ValueError:
            raise ValueError(f"bad input-channel token {tokens[0]!r} in {arch!r} "
                             f"(expected IX, e.g. I3)") from None
        tokens = tokens[1:]
    specs = []
    for token in tokens:
        if not token.startswith("C"):
            raise ValueError(f"unsupported layer {token!r} in discriminator architecture {arch!r}: "
                             f"only convolutions 'CK-X', 'CK-X-S', 'CK-X-S-P' are supported")
        try:
            values = [int(v) for v in token[1:].split("-")]
        except ValueError:
            raise ValueError(f"bad convolution token {token!r} in {arch!r} "
                             f"(expected CK-X, CK-X-S or CK-X-S-P with integers)") from None
        if len(values) not in (2, 3, 4) or min(values) < 0 or min(values[:3]) < 1:
            raise ValueError(f"bad convolution token {token!r} in {arch!r} "
                             f"(expected CK-X, CK-X-S or CK-X-S-P, K, X, S >= 1, P >= 0)")
        kernel, filters = values[0], values[1]
        strides = values[2] if len(values) > 2 else 1
        if len(values) == 4:
            padding = values[3]
        elif padding_mode == "valid":
            padding = 0
        else:
            if kernel % 2 == 0:
                raise ValueError(f"'same' padding needs an odd kernel; {token!r} in {arch!r} "
                                 f"has kernel {kernel} (give the padding explicitly: CK-X-S-P)")
            padding = (kernel - 1) // 2
        specs.append(ConvSpec(kernel, filters, strides, padding))
    if not specs:
        raise ValueError(f"discriminator architecture {arch!r} has no convolution")
    return input_channels, tuple(specs)


def parse_activation(name: str):
    """'leakyrelu-0.1' -> ('leakyrelu', 0.1); 'leakyrelu' -> ('leakyrelu', 0.01);
    'relu' -> ('relu', None); 'none' -> ('none', None). ValueError otherwise."""
    text = str(name).strip().lower()
    if text in ("relu", "none"):
        return text, None
    if text == "leakyrelu":
        return "leakyrelu", TORCH_DEFAULT_LEAKY_SLOPE
    if text.startswith("leakyrelu-"):
        try:
            return "leakyrelu", float(text[len("leakyrelu-"):])
        except ValueError:
            pass
    raise ValueError(f"unknown activation {name!r}: use relu, none, leakyrelu (slope 0.01) or "
                     f"leakyrelu-<slope> such as leakyrelu-0.1")


def check_normalization(name: str) -> str:
    if name not in NORMALIZATIONS:
        raise ValueError(f"discriminator normalization must be one of {NORMALIZATIONS}, "
                         f"got {name!r}")
    return name


def conv_stack_output_size(image_size: int, specs) -> int:
    size = image_size
    for spec in specs:
        size = (size + 2 * spec.padding - spec.kernel_size) // spec.strides + 1
    return size
