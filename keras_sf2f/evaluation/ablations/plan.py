"""What one ablations command runs: the plan (flagfiles, directories, steps, evaluation
protocol) and the flagfile reader the plan's defaults come from."""

from __future__ import annotations

import dataclasses
import os
import sys

from keras_sf2f import runs
from keras_sf2f.evaluation.ablations.catalog import RECIPES, AblationError

# The checkout: the variants run its trainers/ scripts, from it.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# Stage-1 steps of the reference-loss rows: the demo's former length (600 steps with GAN and
# AC, about the wall time of the demo's 1200 cheaper steps without them), so that the
# adversarial-delay row's terms (on from step 300, full from 400) take part; the demo-recipe
# row runs twice as many. Per idle core pair a reference-loss SF2F step takes ~0.8-1.0 s, a
# demo-recipe step ~0.4 s, voice2face and the no-perceptual variant less; start-up, tracing,
# validation and evaluation add ~2 minutes per variant, so the 13 trainings and evaluations
# take about 2.5 hours. Each variant's measured wall and CPU seconds are in ablations.md.
# With --ablation_recipe=demo the rows default to the demo's own length instead (its flagfile's
# generator steps, after its decoder and voice pre-training in the flagfile's proportions):
# see Plan.__post_init__.
DEFAULT_TRAIN_STEPS = 600
DEFAULT_EVAL_RUNS = 5


def read_flagfile(path: str) -> dict:
    """``{flag: value as text}`` of an absl flagfile, read as absl reads it
    (``keras_sf2f.runs.read_flagfile``: nested --flagfile followed, later lines win, ``--name``
    / ``--noname`` as "true" / "false")."""
    try:
        return runs.read_flagfile(path)
    except runs.RunError as e:
        raise AblationError(str(e)) from None


@dataclasses.dataclass
class Plan:
    output_dir: str
    data_dir: str
    face_network: str
    base_config: str
    fuser_config: str
    voice2face_config: str
    wild_data_dir: str | None = None
    train_steps: int | None = None  # None: the recipe's default (see DEFAULT_TRAIN_STEPS)
    recipe: str = "reference"       # catalog.RECIPES
    train_seed: int | None = None   # --seed of every training run (None: the flagfiles')
    fuser_steps: int | None = None
    jobs: int = 1
    eval_runs: int = DEFAULT_EVAL_RUNS
    eval_durations: tuple = (1.25, 5.0)
    eval_seed: int = 0
    eval_split: str = "test"
    eval_dlib: bool = True
    eval_max_windows: int = 20
    python: str = sys.executable
    # Pre-training steps per generator step in one unit of a variant's decoder / voice
    # pre-training factor: 1 for the reference recipe; for the demo recipe the base flagfile's
    # own proportions (set in __post_init__), so that its rows pre-train as the demo does.
    decoder_pretrain_share: float = 1.0
    voice_pretrain_share: float = 1.0
    # The share of a row's generator steps, at their end, over which the learning rate decays:
    # the base flagfile's (its --train_steps minus --lr_decay_start_step, over its generator
    # steps; 0 when it does not decay), so that every stage-1 row decays at the same point of
    # its own schedule whatever its length (an absolute step would fall outside shorter rows).
    lr_decay_share: float = 0.0

    def evaluation_config(self):
        """The ``evaluate.EvaluationConfig`` every variant is evaluated with."""
        from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
        return ev.EvaluationConfig(
            data_dir=self.data_dir, split=self.eval_split, durations=tuple(self.eval_durations),
            runs=self.eval_runs, seed=self.eval_seed, max_windows=self.eval_max_windows)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise AblationError(f"unknown ablation recipe {self.recipe!r}; choose from "
                                f"{', '.join(RECIPES)}")
        # The demo recipe's rows need the base flagfile's proportions; the reference recipe's
        # only its decay, when there is a flagfile to read (a plan that only renders recorded
        # variants' pages may name none that exists; training would name the missing file).
        needs_base = self.recipe == "demo" or os.path.exists(self.base_config)
        base = read_flagfile(self.base_config) if needs_base else {}
        decay_start = int(base.get("lr_decay_start_step", -1))
        if decay_start >= 0 and "train_steps" in base:
            self.lr_decay_share = min(1.0, (int(base.get("train_steps", 0)) - decay_start)
                                      / self._base_generator_steps(base))
        if self.recipe == "demo":
            generator_steps = self._base_generator_steps(base)
            self.decoder_pretrain_share = (int(base.get("decoder_pretrain_steps", 0))
                                           / generator_steps)
            self.voice_pretrain_share = int(base.get("voice_pretrain_steps", 0)) / generator_steps
        if self.train_steps is None:
            self.train_steps = (generator_steps if self.recipe == "demo"
                                else DEFAULT_TRAIN_STEPS)
        if self.wild_data_dir is None:
            self.wild_data_dir = os.path.join(self.output_dir, "data_in_the_wild")
        if self.fuser_steps is None:
            self.fuser_steps = int(read_flagfile(self.fuser_config).get("train_steps", 60))

    def pretraining_steps(self, decoder_factor: int = 1, voice_factor: int = 1) -> tuple:
        """(decoder, voice) pre-training steps of a stage-1 row with these pre-training
        factors (the catalogue's; 0 leaves that pre-training out)."""
        return (round(self.train_steps * decoder_factor * self.decoder_pretrain_share),
                round(self.train_steps * voice_factor * self.voice_pretrain_share))

    def lr_decay_start_step(self, run_steps: int, generator_steps: int) -> int | None:
        """--lr_decay_start_step of a stage-1 row of ``run_steps`` steps, the last
        ``generator_steps`` of them generator steps (None: the base does not decay)."""
        if self.lr_decay_share <= 0:
            return None
        return run_steps - round(generator_steps * self.lr_decay_share)

    def _base_generator_steps(self, base: dict) -> int:
        """The base flagfile's generator steps (its --train_steps after its
        --decoder_pretrain_steps and --voice_pretrain_steps; ``base``: its flags as read by
        read_flagfile): the demo recipe's rows run as long as the demo, and every recipe's
        rows decay over the same share of them."""
        steps = (int(base.get("train_steps", 0)) - int(base.get("voice_pretrain_steps", 0))
                 - int(base.get("decoder_pretrain_steps", 0)))
        if steps < 1:
            raise AblationError(f"{self.base_config} sets no generator steps (--train_steps "
                                f"after the pre-training steps); pass --train_steps")
        return steps
