"""The variants: one row of the seed's Table 2 or 3 each, as the change it makes to the
training flags of full SF2F (or the voice2face flagfile it trains instead).

Two recipes for what "full SF2F" is (``--ablation_recipe``):

* ``reference``: the reference's four loss terms (L1, GAN, AC, perceptual) at its weights,
  each "w/o" row removing one of them; the demo's own recipe is a row of its own. At the
  demo's scale these terms collapse the generator to a few templates, so the rows mostly
  measure how much each change weakens the adversarial game.
* ``demo``: the demo's recipe (configs/demo.cfg: voice pre-training, then L1 + perceptual,
  no GAN / AC), which draws faces, as every row's base; the GAN and AC terms, absent from it,
  are tested by adding each at the reference's weight.
"""

from __future__ import annotations

import dataclasses


# The reference's stage-1 loss weights (SF2F 64), and no L1 on image gradients (a term of
# ours). The demo's flagfile trains without the GAN and AC terms, with perceptual weight 10
# and with the gradient term (BUILD_NOTES.md, "The demo's training levers");
# the ablation rows put the paper's weights back so that each "w/o" row removes one term of the
# paper's objective, and the demo's own recipe is a row of its own.
REFERENCE_LOSS_FLAGS = ("--l1_weight=10", "--gan_weight=1", "--ac_weight=0.05",
                        "--perceptual_weight=100", "--gradient_l1_weight=0")



RECIPES = ("reference", "demo")
VOICE_QUALITY_FLAG = "--voice_quality_channels"

# What the paper says about a row, as checked by orderings.py: removing or replacing a part
# makes the model worse (full SF2F above the row), or adding a paper term to a base that lacks
# it makes it better (the row above full SF2F). Rows without a claim are levers of ours.
BASE_ABOVE = "base_above"
ROW_ABOVE = "row_above"


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
    # Decoder pre-training steps (--decoder_pretrain_steps) in the same units, run first.
    decoder_pretrain_factor: int = 0
    claim: str | None = None  # BASE_ABOVE, ROW_ABOVE or None (see above)

    @property
    def voice_quality(self) -> bool:
        """Trains on the data's voice-quality channels: the data must have them."""
        return VOICE_QUALITY_FLAG in self.overrides

    def change_text(self) -> str:
        """What the row changes from its flagfile, for the tables' list of runs."""
        if self.config == "voice2face":
            return "(voice2face flagfile)"
        if self.stage2_of:
            return f"(fuser flagfile, init from {self.stage2_of})"
        parts = list(self.overrides)
        if self.wild_faces:
            parts.append("(in-the-wild training faces)")
        skipped = [part for part, factor in (("decoder", self.decoder_pretrain_factor),
                                             ("voice", self.pretrain_factor)) if factor == 0]
        if not self.reference_losses and skipped:
            parts.append(f"(no {' or '.join(skipped)} pre-training)")
        return " ".join(parts) or "(base flagfile)"


def _baseline_decoder_channels(embedding_dim: int) -> str:
    # The reference's deconvolution decoder (1024, 512, 256, 128, 64 for a 512-d embedding)
    # keeps this ratio to the embedding; it scales with the demo's narrower embedding.
    e = int(embedding_dim)
    return ",".join(str(max(1, c)) for c in (2 * e, e, e // 2, e // 4, e // 8))


def variants(embedding_dim: int, recipe: str = "reference") -> list:
    """Every variant of ``recipe``, in run order (a stage-2 variant after the one it starts
    from)."""
    if recipe not in RECIPES:
        raise AblationError(f"unknown ablation recipe {recipe!r}; choose from "
                            f"{', '.join(RECIPES)}")
    deconv = ("--decoder=deconv_64",
              f"--deconv_decoder_channels={_baseline_decoder_channels(embedding_dim)}")
    if recipe == "demo":
        return _demo_variants(deconv)
    return [
        Variant("sf2f", "SF2F (full)", ("2", "3")),
        Variant("sf2f_fuser", "SF2F + fuser", ("3",), stage2_of="sf2f"),
        Variant("voice2face", "voice2face", ("3",), config="voice2face"),
        Variant("no_l1", "w/o L1 (image reconstruction)", ("2",), ("--l1_weight=0",),
                claim=BASE_ABOVE),
        Variant("no_gan", "w/o L_G (GAN)", ("2",), ("--gan_weight=0",), claim=BASE_ABOVE),
        Variant("no_ac", "w/o L_C (auxiliary classifier)", ("2",), ("--ac_weight=0",),
                claim=BASE_ABOVE),
        Variant("no_perceptual", "w/o L_P (perceptual)", ("2",), ("--perceptual_weight=0",),
                claim=BASE_ABOVE),
        Variant("baseline_encoder", "baseline encoder (1D-CNN)", ("2",), ("--encoder=cnn",),
                claim=BASE_ABOVE),
        Variant("baseline_decoder", "baseline decoder (deconvolution)", ("2",), deconv,
                claim=BASE_ABOVE),
        Variant("low_quality_faces", "lower-quality training faces (in the wild)", ("2",),
                wild_faces=True, claim=BASE_ABOVE),
        # The training levers beyond the reference (BUILD_NOTES.md, "The demo's training
        # levers"), each added on its own to the base config, which does not use them.
        Variant("generator_ema", "+ generator moving average (0.99)", ("2",),
                ("--generator_ema_decay=0.99",)),
        Variant("adversarial_delay", "+ adversarial terms from step 300 (ramp 100)", ("2",),
                ("--adversarial_start_step=300", "--adversarial_ramp_steps=100")),
        Variant("demo_recipe", "demo recipe (decoder and voice pre-training, then L1 + "
                "perceptual 10, no GAN / AC; 2x + 2x + 2x steps)", ("2",),
                reference_losses=False, steps_factor=2, pretrain_factor=2,
                decoder_pretrain_factor=2),
        Variant("demo_no_pretrain", "demo recipe without the decoder and voice pre-training",
                ("2",), reference_losses=False, steps_factor=2),
    ]


def _demo_variants(deconv: tuple) -> list:
    """The rows on the demo's recipe: every SF2F row keeps the base flagfile's losses and
    pre-trains its decoder and then its voice encoder as the base flagfile does, in
    proportion to its generator steps (Plan.decoder_pretrain_share); a factor of 0 leaves
    that pre-training out."""
    def row(name, label, tables, overrides=(), **kw):
        kw.setdefault("pretrain_factor", 1)
        kw.setdefault("decoder_pretrain_factor", 1)
        return Variant(name, label, tables, overrides, reference_losses=False, **kw)

    return [
        row("sf2f", "SF2F (demo recipe: decoder and voice pre-training, L1 + perceptual)",
            ("2", "3")),
        Variant("sf2f_fuser", "SF2F + fuser", ("3",), stage2_of="sf2f",
                reference_losses=False),
        Variant("voice2face", "voice2face", ("3",), config="voice2face"),
        row("no_l1", "w/o L1 (image reconstruction)", ("2",), ("--l1_weight=0",),
            claim=BASE_ABOVE),
        row("no_perceptual", "w/o L_P (perceptual)", ("2",), ("--perceptual_weight=0",),
            claim=BASE_ABOVE),
        row("no_gradient_l1", "w/o L1 on image gradients", ("2",),
            ("--gradient_l1_weight=0",)),
        # After the row's own decay point (Plan.lr_decay_start_step); absl keeps the last value.
        row("no_lr_decay", "w/o the late learning-rate decay", ("2",),
            ("--lr_decay_start_step=-1",)),
        row("baseline_encoder", "baseline encoder (1D-CNN)", ("2",), ("--encoder=cnn",),
            claim=BASE_ABOVE),
        row("baseline_decoder", "baseline decoder (deconvolution)", ("2",), deconv,
            claim=BASE_ABOVE),
        row("low_quality_faces", "lower-quality training faces (in the wild)", ("2",),
            wild_faces=True, claim=BASE_ABOVE),
        row("no_pretrain", "w/o decoder and voice pre-training (generator steps only)",
            ("2",), pretrain_factor=0, decoder_pretrain_factor=0),
        row("no_decoder_pretrain", "w/o decoder pre-training (voice pre-training kept)",
            ("2",), decoder_pretrain_factor=0),
        # The paper's two adversarial terms, which the demo's recipe leaves out, each added
        # at the reference's weight: the paper's "each loss helps" predicts a better row.
        row("with_ac", "+ L_C (auxiliary classifier, weight 0.05)", ("2",),
            ("--ac_weight=0.05",), claim=ROW_ABOVE),
        row("with_gan", "+ L_G (GAN, weight 1)", ("2",), ("--gan_weight=1",), claim=ROW_ABOVE),
        row("generator_ema", "+ generator moving average (0.99)", ("2",),
            ("--generator_ema_decay=0.99",)),
        row("voice_quality", "+ voice-quality channels (44 features per frame)", ("2",),
            (VOICE_QUALITY_FLAG,)),
    ]


VARIANT_NAMES = tuple(v.name for v in variants(128))
DEMO_VARIANT_NAMES = tuple(v.name for v in variants(128, "demo"))


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
