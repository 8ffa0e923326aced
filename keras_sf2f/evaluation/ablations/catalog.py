"""The variants: one row of the seed's Table 2 or 3 each, as the change it makes to the
training flags of full SF2F (or the voice2face flagfile it trains instead)."""

from __future__ import annotations

import dataclasses


# The reference's stage-1 loss weights (SF2F 64). The demo's flagfile trains without the GAN
# and AC terms and with perceptual weight 10 (BUILD_NOTES.md, "The demo's training levers");
# the ablation rows put the paper's weights back so that each "w/o" row removes one term of the
# paper's objective, and the demo's own recipe is a row of its own.
REFERENCE_LOSS_FLAGS = ("--l1_weight=10", "--gan_weight=1", "--ac_weight=0.05",
                        "--perceptual_weight=100")



class AblationError(RuntimeError):
    """A problem that stops the whole command (message meant for the user)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str            # the row's name in the seed's tables
    tables: tuple         # ("2",), ("3",) or both
    overrides: tuple = ()  # training flags changed from the variant's flagfile(s)
    config: str = "base"  # "base" or "voice2face"
    stage2_of: str | None = None  # fuser variant: initialised from this variant's model
    wild_faces: bool = False      # trains on the in-the-wild data dir
    # SF2F variants train with the reference's loss weights (REFERENCE_LOSS_FLAGS) whatever the
    # base flagfile says, so that Table 2 ablates the paper's objective; the demo-recipe row
    # keeps the base flagfile's own losses and runs steps_factor times the plan's steps.
    reference_losses: bool = True
    steps_factor: int = 1
    # Voice pre-training steps (--voice_pretrain_steps) in units of the plan's steps, run
    # before the variant's steps_factor units of generator steps; 0: none, whatever the base
    # flagfile says (the paper's recipe has none).
    pretrain_factor: int = 0


def _baseline_decoder_channels(embedding_dim: int) -> str:
    # The reference's deconvolution decoder (1024, 512, 256, 128, 64 for a 512-d embedding)
    # keeps this ratio to the embedding; it scales with the demo's narrower embedding.
    e = int(embedding_dim)
    return ",".join(str(max(1, c)) for c in (2 * e, e, e // 2, e // 4, e // 8))


def variants(embedding_dim: int) -> list:
    """Every variant, in run order (a stage-2 variant after the one it starts from)."""
    return [
        Variant("sf2f", "SF2F (full)", ("2", "3")),
        Variant("sf2f_fuser", "SF2F + fuser", ("3",), stage2_of="sf2f"),
        Variant("voice2face", "voice2face", ("3",), config="voice2face"),
        Variant("no_l1", "w/o L1 (image reconstruction)", ("2",), ("--l1_weight=0",)),
        Variant("no_gan", "w/o L_G (GAN)", ("2",), ("--gan_weight=0",)),
        Variant("no_ac", "w/o L_C (auxiliary classifier)", ("2",), ("--ac_weight=0",)),
        Variant("no_perceptual", "w/o L_P (perceptual)", ("2",), ("--perceptual_weight=0",)),
        Variant("baseline_encoder", "baseline encoder (1D-CNN)", ("2",), ("--encoder=cnn",)),
        Variant("baseline_decoder", "baseline decoder (deconvolution)", ("2",),
                ("--decoder=deconv_64",
                 f"--deconv_decoder_channels={_baseline_decoder_channels(embedding_dim)}")),
        Variant("low_quality_faces", "lower-quality training faces (in the wild)", ("2",),
                wild_faces=True),
        # The training levers beyond the reference (BUILD_NOTES.md, "The demo's training
        # levers"), each added on its own to the base config, which does not use them.
        Variant("generator_ema", "+ generator moving average (0.99)", ("2",),
                ("--generator_ema_decay=0.99",)),
        Variant("adversarial_delay", "+ adversarial terms from step 300 (ramp 100)", ("2",),
                ("--adversarial_start_step=300", "--adversarial_ramp_steps=100")),
        Variant("demo_recipe", "demo recipe (voice pre-training, then L1 + perceptual 10, "
                "no GAN / AC; 2x + 2x steps)", ("2",), reference_losses=False, steps_factor=2,
                pretrain_factor=2),
        Variant("demo_no_pretrain", "demo recipe without the voice pre-training", ("2",),
                reference_losses=False, steps_factor=2),
    ]


VARIANT_NAMES = tuple(v.name for v in variants(128))


def select(all_variants: list, names) -> list:
    """The chosen variants plus what they start from, in run order."""
    by_name = {v.name: v for v in all_variants}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise AblationError(f"unknown variant(s) {', '.join(unknown)}; choose from "
                            f"{', '.join(by_name)}")
    chosen = set(names) if names else set(by_name)
    for n in list(chosen):
        while by_name[n].stage2_of:
            n = by_name[n].stage2_of
            chosen.add(n)
    return [v for v in all_variants if v.name in chosen]
