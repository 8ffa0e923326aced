"""The seed's ablations (Table 2) and model comparison (Table 3) as one resumable command.

Every variant is a real training run: ``trainers/train.py`` (the training library behind the
project's entry point) in a subprocess per variant, so each run starts with clean memory and
writes its effective configuration (``flags.cfg``) into its model directory. Evaluation runs in this process with one shared ``Evaluator`` (test split,
ground truth, crops and embedders are the same for every variant), on the aligned test faces
of ``data_dir`` -- also for the variant trained on in-the-wild faces.

Layout of ``output_dir``::

    ablations.md, ablations.csv          the tables (mean ± std over evaluation runs, per
                                         embedder) and each row's training flags
    index.html, audio/, images/          the results page (results_page.py): per shown test
                                         identity the photo, players with the speech the
                                         faces were made from, one column per variant; then
                                         the tables of ablations.md
    figure1_<input>.png                  the seed's Figure 1 layout: ground truth | SF2F |
                                         voice2face
    data_in_the_wild/                    prepared when the low-quality variant needs it
    variants/<name>/model/               training's model_dir (+ eval/: TensorBoard scalars
                                         under the validation tags)
    variants/<name>/report/              the evaluation report of that variant (no page of
                                         its own: index.html above shows every variant)
    variants/<name>/train.log            the training subprocess's output
    variants/<name>/variant.json         what ran (command, steps, timings); present = done

Re-running the same command skips variants whose ``variant.json`` records the same training
command; a changed command (e.g. more ``--train_steps``) resumes training from the checkpoint
and evaluates again.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time

from keras_sf2f import files, runs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Stage-1 steps of the reference-loss rows: the demo's former length (600 steps with GAN and
# AC, about the wall time of the demo's 1200 cheaper steps without them), so that the
# adversarial-delay row's terms (on from step 300, full from 400) take part; the demo-recipe
# row runs twice as many. Per idle core pair a reference-loss SF2F step takes ~0.8-1.0 s, a
# demo-recipe step ~0.4 s, voice2face and the no-perceptual variant less; start-up, tracing,
# validation and evaluation add ~2 minutes per variant, so the 13 trainings and evaluations
# take about 2.5 hours. Each variant's measured wall and CPU seconds are in ablations.md.
DEFAULT_TRAIN_STEPS = 600
DEFAULT_EVAL_RUNS = 5


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
        Variant("demo_recipe", "demo recipe (L1 + perceptual 10, no GAN / AC, 2x steps)",
                ("2",), reference_losses=False, steps_factor=2),
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


def read_flagfile(path: str) -> dict:
    """``{flag: value as text}`` of an absl flagfile, read as absl reads it
    (``keras_sf2f.runs.read_flagfile``: nested --flagfile followed, later lines win, ``--name``
    / ``--noname`` as "true" / "false")."""
    try:
        return runs.read_flagfile(path)
    except runs.RunError as e:
        raise AblationError(str(e)) from None


def wild_prepare_args(dataset_info: dict, config: str, wild_dir: str) -> list:
    """prepare_data.py arguments for the same procedural corpus with in-the-wild faces.

    The corpus is a pure function of its spec, so the same spec with ``face_quality=
    in_the_wild`` gives the same identities and voices with low-quality faces. Only specs the
    data flags can express are accepted."""
    source = dataset_info.get("source", {})
    if source.get("kind") != "procedural":
        raise AblationError(
            "the low-quality-faces variant needs in-the-wild faces of the same identities: the "
            "data is not the procedural corpus, so pass --wild_data_dir (prepared data with "
            "the same identities and lower-quality faces) or leave the variant out")
    from keras_sf2f.data.corpus import CorpusSpec  # noqa: PLC0415 - light, no TensorFlow
    spec = dict(source["spec"])
    defaults = dataclasses.asdict(CorpusSpec())
    for field in ("image_size", "sample_rate", "val_fraction", "test_fraction"):
        if spec.get(field, defaults[field]) != defaults[field]:
            raise AblationError(
                f"the corpus was generated with {field}={spec[field]}, which prepare_data.py's "
                f"flags cannot reproduce; prepare the in-the-wild data yourself and pass "
                f"--wild_data_dir")
    args = [f"--flagfile={config}", f"--data_dir={wild_dir}", "--data_source=procedural",
            f"--corpus_seed={spec['seed']}", f"--corpus_identities={spec['num_identities']}",
            f"--utterances_per_identity={spec['utterances_per_identity']}",
            f"--images_per_identity={spec['images_per_identity']}",
            f"--faceid_images_per_identity={spec['faceid_images_per_identity']}",
            "--face_quality=in_the_wild"]
    if spec.get("num_faceid_identities") is not None:
        args.append(f"--faceid_identities={spec['num_faceid_identities']}")
    return args


def _latest_step(model_dir: str) -> int:
    """The step of model_dir's latest checkpoint (0 without one), from the text index file,
    so the scheduler needs no TensorFlow."""
    path = os.path.join(model_dir, "checkpoint")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        match = re.search(r'^model_checkpoint_path:\s*"[^"]*?(\d+)"', f.read(), re.M)
    return int(match.group(1)) if match else 0


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError:
        return ""


@dataclasses.dataclass
class Plan:
    output_dir: str
    data_dir: str
    face_network: str
    base_config: str
    fuser_config: str
    voice2face_config: str
    wild_data_dir: str | None = None
    train_steps: int = DEFAULT_TRAIN_STEPS
    fuser_steps: int | None = None
    jobs: int = 1
    eval_runs: int = DEFAULT_EVAL_RUNS
    eval_durations: tuple = (1.25, 5.0)
    eval_seed: int = 0
    eval_split: str = "test"
    eval_dlib: bool = True
    eval_max_windows: int = 20
    python: str = sys.executable

    def evaluation_config(self):
        """The ``evaluate.EvaluationConfig`` every variant is evaluated with."""
        from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
        return ev.EvaluationConfig(
            data_dir=self.data_dir, split=self.eval_split, durations=tuple(self.eval_durations),
            runs=self.eval_runs, seed=self.eval_seed, max_windows=self.eval_max_windows)

    def __post_init__(self):
        if self.wild_data_dir is None:
            self.wild_data_dir = os.path.join(self.output_dir, "data_in_the_wild")
        if self.fuser_steps is None:
            self.fuser_steps = int(read_flagfile(self.fuser_config).get("train_steps", 60))


class Ablations:
    """Runs the plan; ``run()`` returns the number of variants that failed."""

    def __init__(self, plan: Plan, names=(), log=None):
        self.plan = plan
        self.log = log or (lambda line: print(line, flush=True))
        embedding_dim = int(read_flagfile(plan.base_config).get("embedding_dim", 512))
        self.all = variants(embedding_dim)
        self.variants = select(self.all, list(names))
        self.t0 = time.monotonic()
        self.failed = {}
        self.results = {}   # name -> metrics.json "results" of that variant
        self.records = {}   # name -> variant.json
        self._evaluator = None
        self._eval_notes = []

    # -- paths and commands ----------------------------------------------------------------

    def variant_dir(self, name: str) -> str:
        return os.path.join(self.plan.output_dir, "variants", name)

    def model_dir(self, name: str) -> str:
        return os.path.join(self.variant_dir(name), "model")

    def steps(self, v: Variant) -> int:
        return self.plan.fuser_steps if v.stage2_of else self.plan.train_steps * v.steps_factor

    def train_args(self, v: Variant) -> list:
        p = self.plan
        if v.config == "voice2face":
            flagfiles = [p.voice2face_config]
        else:
            flagfiles = [p.base_config] + ([p.fuser_config] if v.stage2_of else [])
        steps = self.steps(v)
        args = [f"--flagfile={f}" for f in flagfiles]
        args += [f"--data_dir={p.wild_data_dir if v.wild_faces else p.data_dir}",
                 f"--model_dir={self.model_dir(v.name)}",
                 f"--face_network={p.face_network}",
                 f"--train_steps={steps}",
                 # validation only at the end: the evaluation below is the measurement
                 f"--eval_every_steps={steps}",
                 f"--checkpoint_every_steps={max(1, min(100, steps))}"]
        if v.stage2_of:
            args.append(f"--init_checkpoint={self.model_dir(v.stage2_of)}")
        if v.config == "base" and v.reference_losses:
            args += list(REFERENCE_LOSS_FLAGS)
        return args + list(v.overrides)

    def _stamp(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        self.log(f"[ablations {int(elapsed // 60)}m{int(elapsed % 60):02d}s] {text}")

    def _run_tool(self, script: str, args: list, log_path: str, what: str) -> None:
        self._stamp(f"{what} (log: {log_path})")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w") as log:
            rc = subprocess.call([self.plan.python, os.path.join(REPO_ROOT, script), *args],
                                 stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
                                 cwd=REPO_ROOT)
        if rc != 0:
            raise AblationError(f"{what} failed (exit {rc}); last lines of {log_path}:\n"
                                f"{_tail(log_path)}")

    # -- inputs ----------------------------------------------------------------------------

    def ensure_inputs(self) -> None:
        p = self.plan
        logs = os.path.join(p.output_dir, "logs")
        if not os.path.isfile(os.path.join(p.data_dir, "dataset.json")):
            self._run_tool("trainers/prepare_data.py",
                           [f"--flagfile={p.base_config}", f"--data_dir={p.data_dir}"],
                           os.path.join(logs, "prepare_data.log"),
                           f"preparing {p.data_dir} from {p.base_config}")
        face_net_ready = (os.path.isfile(p.face_network) if p.face_network.endswith(".keras")
                          else os.path.isfile(os.path.join(p.face_network,
                                                           "face_identity.json")))
        if not face_net_ready:
            self._run_tool("trainers/train_face_identity.py",
                           [f"--flagfile={p.base_config}", f"--data_dir={p.data_dir}",
                            f"--output_dir={p.face_network}"],
                           os.path.join(logs, "train_face_identity.log"),
                           f"training the face-identity network -> {p.face_network}")
        if any(v.wild_faces for v in self.variants) and not os.path.isfile(
                os.path.join(p.wild_data_dir, "dataset.json")):
            with open(os.path.join(p.data_dir, "dataset.json")) as f:
                info = json.load(f)
            try:
                args = wild_prepare_args(info, p.base_config, p.wild_data_dir)
            except AblationError as e:
                for v in self.variants:
                    if v.wild_faces:
                        self.failed[v.name] = str(e)
                self._stamp(f"skipping the in-the-wild variant: {e}")
                return
            self._run_tool("trainers/prepare_data.py", args,
                           os.path.join(logs, "prepare_data_in_the_wild.log"),
                           f"preparing in-the-wild faces -> {p.wild_data_dir}")
        if any(v.wild_faces for v in self.variants if v.name not in self.failed):
            self._check_same_voices()

    def _check_same_voices(self) -> None:
        """The in-the-wild data must hold the same identities and speech as data_dir."""
        def splits(d):
            with open(os.path.join(d, "dataset.json")) as f:
                return {k: (s["identities"], s["utterances"], s["speech_seconds"])
                        for k, s in json.load(f)["splits"].items() if k != "faceid"}
        base, wild = splits(self.plan.data_dir), splits(self.plan.wild_data_dir)
        if base != wild:
            raise AblationError(f"{self.plan.wild_data_dir} does not hold the same voice-face "
                                f"identities and speech as {self.plan.data_dir}: {wild} vs "
                                f"{base}")

    # -- evaluation ------------------------------------------------------------------------

    def evaluator(self):
        if self._evaluator is None:
            from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
            p = self.plan
            config = p.evaluation_config()
            embedders, notes = ev.make_embedders(p.face_network, p.eval_dlib)
            image_size = int(read_flagfile(p.base_config).get("image_size", 64))
            centroids, note = ev.classifier_centroids(p.data_dir, embedders[0], image_size)
            self._evaluator = ev.Evaluator(config, embedders, image_size, centroids)
            self._eval_notes = notes + [note]
        return self._evaluator

    def evaluate(self, v: Variant, record: dict) -> None:
        from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
        t0 = time.monotonic()
        evaluator = self.evaluator()
        model_dir = self.model_dir(v.name)
        model_config, source = ev.model_config_for_checkpoint(model_dir)
        if model_config is None:
            raise AblationError(f"{model_dir} has no flags.cfg")
        if max(model_config.output_resolutions) != evaluator.image_size:
            raise AblationError(f"{v.name} generates {max(model_config.output_resolutions)} px "
                                f"faces; the ablations evaluate at {evaluator.image_size} px")
        generator, prefix, step = ev.load_generator(model_dir, model_config)
        self._stamp(f"evaluating {v.name} ({prefix}, {evaluator.config.runs} runs)")
        out = evaluator.evaluate(ev.FaceGenerator(generator, evaluator.config.batch_size))
        results = {v.name: out["results"]}
        summary_dir = os.path.join(model_dir, "eval")
        ev.write_summaries(summary_dir, results, {v.name: step},
                           training_embedder=evaluator.embedders[0].name)
        notes = self._eval_notes + [
            f"`{v.name}` ({v.label}): checkpoint `{prefix}` (step {step}), trained with "
            f"`{' '.join(record['train_args'])}`."]
        ev.write_report(os.path.join(self.variant_dir(v.name), "report"), evaluator.config,
                        evaluator, results, {v.name: out["samples"]}, notes,
                        figure_columns=[(v.name, v.name, None)], summary_dir=summary_dir,
                        results_page=False)
        record.update(status="done", checkpoint=prefix, trained_step=step,
                      eval_seconds=round(time.monotonic() - t0, 1),
                      evaluated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        files.write_json(os.path.join(self.variant_dir(v.name), "variant.json"), record,
                         sort_keys=False)
        self.results[v.name] = results[v.name]
        self.records[v.name] = record
        del generator, out

    # -- the run ---------------------------------------------------------------------------

    def _finished(self, v: Variant) -> bool:
        path = os.path.join(self.variant_dir(v.name), "variant.json")
        metrics_path = os.path.join(self.variant_dir(v.name), "report", "metrics.json")
        if not (os.path.isfile(path) and os.path.isfile(metrics_path)):
            return False
        with open(path) as f:
            record = json.load(f)
        if record.get("status") != "done" or record.get("train_args") != self.train_args(v):
            return False
        with open(metrics_path) as f:
            self.results[v.name] = json.load(f)["results"][v.name]
        self.records[v.name] = record
        return True

    def run(self) -> int:
        p = self.plan
        os.makedirs(p.output_dir, exist_ok=True)
        self._stamp(f"{len(self.variants)} variants, {p.train_steps} stage-1 steps, "
                    f"{p.fuser_steps} fuser steps, {p.eval_runs} evaluation runs -> "
                    f"{p.output_dir}")
        self.ensure_inputs()
        todo = []
        for v in self.variants:
            if v.name in self.failed:
                continue
            if self._finished(v):
                self._stamp(f"{v.name}: done before, skipped")
            else:
                todo.append(v)
        trained = {v.name for v in self.variants if v.name in self.records}
        running, to_evaluate = {}, collections.deque()
        stop = _Stop().install()
        try:
            while todo or running or to_evaluate:
                if stop.signum is not None:
                    raise KeyboardInterrupt
                progressed = False
                for v in list(todo):
                    if len(running) >= p.jobs:
                        break
                    if v.stage2_of in self.failed:
                        self.failed[v.name] = f"it starts from {v.stage2_of}, which failed"
                        todo.remove(v)
                        continue
                    if v.stage2_of and v.stage2_of not in trained:
                        continue
                    running[v.name] = self._launch(v)
                    todo.remove(v)
                    progressed = True
                if to_evaluate:
                    v, record = to_evaluate.popleft()
                    try:
                        self.evaluate(v, record)
                        self.write_tables()  # partial tables to look at while the rest run
                    except Exception as e:  # noqa: BLE001 - one variant must not stop the rest
                        self.failed[v.name] = f"evaluation failed: {type(e).__name__}: {e}"
                        self._stamp(f"{v.name}: {self.failed[v.name]}")
                    progressed = True
                for name, (proc, v, record, log_file, t0) in list(running.items()):
                    before = _children_cpu()
                    if proc.poll() is None:
                        continue
                    # poll() reaped exactly this child, so the growth of the children's CPU
                    # time is its own: a load-independent measure of what the variant costs.
                    record["train_cpu_seconds"] = round(_children_cpu() - before, 1)
                    log_file.close()
                    del running[name]
                    progressed = True
                    step = _latest_step(self.model_dir(name))
                    record["train_seconds"] = round(time.monotonic() - t0, 1)
                    if proc.returncode == 0 and step >= self.steps(v):
                        trained.add(name)
                        self._stamp(f"{name}: trained to step {step} in "
                                    f"{record['train_seconds']:.0f} s")
                        to_evaluate.append((v, record))
                    else:
                        self.failed[name] = (f"training exited with {proc.returncode} at step "
                                             f"{step} of {self.steps(v)}; last lines of "
                                             f"{record['log']}:\n{_tail(record['log'])}")
                        self._stamp(f"{name}: {self.failed[name]}")
                if not progressed:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            self._stamp("interrupted: asking the running trainings to save a checkpoint")
            for proc, *_ in running.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc, *_ in running.values():
                try:
                    proc.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.write_tables()
            raise
        finally:
            stop.uninstall()
        self.write_tables(final=True)
        for name, why in self.failed.items():
            self._stamp(f"FAILED {name}: {why.splitlines()[0]}")
        return len(self.failed)

    def _launch(self, v: Variant):
        os.makedirs(self.variant_dir(v.name), exist_ok=True)
        args = self.train_args(v)
        log_path = os.path.join(self.variant_dir(v.name), "train.log")
        record = {"name": v.name, "label": v.label, "tables": list(v.tables),
                  "overrides": list(v.overrides), "train_args": args,
                  "train_steps": self.steps(v), "log": log_path,
                  "data_dir": self.plan.wild_data_dir if v.wild_faces else self.plan.data_dir,
                  "init_from": v.stage2_of, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._stamp(f"training {v.name} ({self.steps(v)} steps"
                    + (f", {' '.join(v.overrides)}" if v.overrides else "") + ")")
        log_file = open(log_path, "a")
        proc = subprocess.Popen([self.plan.python, os.path.join(REPO_ROOT, "trainers",
                                                                "train.py"), *args],
                                stdout=log_file, stderr=subprocess.STDOUT, env=_child_env(),
                                cwd=REPO_ROOT, start_new_session=True)
        return proc, v, record, log_file, time.monotonic()

    # -- tables ----------------------------------------------------------------------------

    def write_tables(self, final: bool = False) -> None:
        """``final``: also score the voice-attribute oracle for its reference rows (the
        partial tables written while variants run leave it out)."""
        from keras_sf2f.evaluation.oracle import procedural_source  # noqa: PLC0415

        oracle = None
        if final and self.results and procedural_source(self.plan.data_dir) is not None:
            self._stamp("scoring the voice-attribute oracle (reference rows)")
            out = self.evaluator().oracle()
            if out is not None:
                from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
                oracle = out["results"][ev.ORACLE_PROTOCOL]
        write_tables(self.plan, self.variants, self.results, self.records, self.failed,
                     embedders=self._embedder_names(), elapsed=time.monotonic() - self.t0,
                     oracle=oracle,
                     split_table=self._evaluator.split if self._evaluator else None)

    def _embedder_names(self) -> list:
        names = []
        for res in self.results.values():
            for per in res.values():
                for e in per:
                    if e not in names:
                        names.append(e)
        return names


class _Stop:
    """SIGTERM to the command: stop launching, let running trainings save, write tables."""

    def __init__(self):
        self.signum = None
        self._previous = None

    def install(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    # No PYTHONPATH: the children run this interpreter's installed keras_sf2f (pip install
    # -e ., as scripts/setup_env.sh does), the same code as this process.
    return env


# -- tables ------------------------------------------------------------------------------------

TABLE_PROTOCOLS = ("crops_1.25s", "crops_5s")
METRICS = ("cosine_similarity", "l1_distance", "l2_distance", "recall@1", "recall@5",
           "recall@10", "vggface_score")


def _csv_metric_cells(values: dict) -> list:
    """Mean and standard deviation of every metric in ``METRICS`` (empty when missing)."""
    cells = []
    for m in METRICS:
        c = values.get(m)
        cells += ["", ""] if c is None else [f"{c['mean']:.6f}",
                                             f"{math.sqrt(c['variance']):.6f}"]
    return cells


def _protocol_label(protocol: str) -> str:
    return protocol[len("crops_"):-1] + " s" if protocol.startswith("crops_") else protocol


def _compare(results: dict, a: str, b: str, protocol: str, embedder: str, metric: str):
    """(mean a - mean b, noise) with noise = 2 standard errors of the difference; None when a
    value is missing."""
    try:
        ca = results[a][protocol][embedder][metric]
        cb = results[b][protocol][embedder][metric]
    except KeyError:
        return None
    se = math.sqrt(ca["variance"] / max(ca["runs"], 1) + cb["variance"] / max(cb["runs"], 1))
    return ca["mean"] - cb["mean"], 2 * se


def orderings(results: dict, embedder: str, metric: str = "recall@10") -> list:
    """The paper's orderings, checked on these results: ``[(claim, verdict, detail)]``.

    A comparison "holds" when the difference has the paper's sign and exceeds two standard
    errors over evaluation runs, is "reversed" when it has the opposite sign beyond that, and
    is "within noise" otherwise. (Runs share crops across models, so this is conservative.)"""
    out = []

    def verdict(diffs):
        if not diffs:
            return "not measured"
        signs = ["holds" if d > n else "reversed" if d < -n else "within noise"
                 for d, n in diffs]
        if len(set(signs)) == 1:
            return signs[0]
        return "mixed: " + ", ".join(signs)

    def detail(pairs):
        return "; ".join(f"{label}: {d:+.3f} (±{n:.3f})" for label, (d, n) in pairs)

    table2 = [n for n in ("no_l1", "no_gan", "no_ac", "no_perceptual", "baseline_encoder",
                          "baseline_decoder", "low_quality_faces") if n in results]
    if "sf2f" in results and table2:
        for protocol in TABLE_PROTOCOLS:
            pairs = [(n, c) for n in table2
                     if (c := _compare(results, "sf2f", n, protocol, embedder, metric))]
            out.append((f"full SF2F above every Table-2 variant ({_protocol_label(protocol)})",
                        verdict([c for _, c in pairs]),
                        detail([(f"sf2f - {n}", c) for n, c in pairs])))
        for n in table2:
            pairs = [(_protocol_label(p), c) for p in TABLE_PROTOCOLS
                     if (c := _compare(results, "sf2f", n, p, embedder, metric))]
            out.append((f"removing/replacing for `{n}` hurts", verdict([c for _, c in pairs]),
                        detail(pairs)))
    for model in ("sf2f", "sf2f_fuser"):
        if model in results and "voice2face" in results:
            pairs = [(_protocol_label(p), c) for p in TABLE_PROTOCOLS
                     if (c := _compare(results, model, "voice2face", p, embedder, metric))]
            out.append((f"`{model}` above voice2face", verdict([c for _, c in pairs]),
                        detail(pairs)))
    for model in ("sf2f", "sf2f_fuser", "voice2face"):
        if model in results:
            try:
                a = results[model]["crops_5s"][embedder][metric]
                b = results[model]["crops_1.25s"][embedder][metric]
            except KeyError:
                continue
            # Different crops: independent standard errors.
            d = a["mean"] - b["mean"]
            n = 2 * math.sqrt(a["variance"] / a["runs"] + b["variance"] / b["runs"])
            out.append((f"5 s above 1.25 s for `{model}`", verdict([(d, n)]),
                        detail([("5 s - 1.25 s", (d, n))])))
    if "sf2f" in results and "sf2f_fuser" in results:
        pairs = [(_protocol_label(p), c) for p in TABLE_PROTOCOLS
                 if (c := _compare(results, "sf2f_fuser", "sf2f", p, embedder, metric))]
        out.append(("the fuser helps (sf2f_fuser above sf2f)", verdict([c for _, c in pairs]),
                    detail(pairs)))
    return out


def _largest_recall(results: dict) -> str | None:
    """recall@10 when measured (the seed's headline number), else the largest K measured
    (small splits drop K beyond their size)."""
    ks = set()
    for res in results.values():
        for per in res.values():
            for values in per.values():
                ks |= {int(k.split("@")[1]) for k in values if k.startswith("recall@")}
    if not ks:
        return None
    return "recall@10" if 10 in ks else f"recall@{max(ks)}"


ORACLE_LABEL = "voice-attribute oracle (no model; reference)"


def write_tables(plan: Plan, chosen: list, results: dict, records: dict, failed: dict,
                 embedders: list, elapsed: float, oracle: dict | None = None,
                 split_table=None) -> tuple:
    """ablations.csv, ablations.md, the Figure-1 pictures and the results page index.html;
    returns the paths of the tables.

    ``oracle``: ``{embedder: metrics}`` of the voice-attribute oracle
    (``evaluate.Evaluator.oracle``), shown as a reference row under each Table 2.
    ``split_table``: the evaluation split (the page's speech); loaded when not given."""
    from keras_sf2f.evaluation.metrics import format_summary  # noqa: PLC0415

    os.makedirs(plan.output_dir, exist_ok=True)
    csv_path = os.path.join(plan.output_dir, "ablations.csv")
    md_path = os.path.join(plan.output_dir, "ablations.md")
    by_name = {v.name: v for v in chosen}
    columns = ["table", "variant", "label", "protocol", "embedder"]
    for m in METRICS:
        columns += [f"{m}_mean", f"{m}_std"]
    columns += ["runs", "train_steps", "trained_step", "train_data_dir", "init_from",
                "overrides", "train_args", "model_dir", "report"]
    with files.atomic_write(csv_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for v in chosen:
            if v.name not in results:
                continue
            rec = records.get(v.name, {})
            for protocol, per in results[v.name].items():
                for embedder, values in per.items():
                    row = ["+".join(v.tables), v.name, v.label, protocol, embedder]
                    row += _csv_metric_cells(values)
                    runs = next(iter(values.values()))["runs"] if values else ""
                    row += [runs, rec.get("train_steps", ""), rec.get("trained_step", ""),
                            rec.get("data_dir", ""), rec.get("init_from") or "",
                            " ".join(rec.get("overrides", [])),
                            " ".join(rec.get("train_args", [])),
                            os.path.join("variants", v.name, "model"),
                            os.path.join("variants", v.name, "report", "report.md")]
                    writer.writerow(row)
        for embedder, values in (oracle or {}).items():
            row = ["reference", "oracle", ORACLE_LABEL, "drawn", embedder]
            row += _csv_metric_cells(values) + [next(iter(values.values()))["runs"]] + [""] * 8
            writer.writerow(row)

    figures = _write_figure1(plan, results)
    keys = ["cosine_similarity", "l1_distance", "l2_distance", "recall@1", "recall@5",
            "recall@10", "vggface_score"]
    head = "| " + " | ".join(keys) + " |"
    sep = "---|" * len(keys)
    lines = [
        "# Ablations on the embedded procedural corpus", "",
        f"Every row is its own training run (`trainers/train.py`, flags below): "
        f"{plan.train_steps} stage-1 steps per variant, {plan.fuser_steps} fuser steps on top "
        f"of `sf2f` for `sf2f_fuser`. Base flagfile `{plan.base_config}`; voice2face "
        f"`{plan.voice2face_config}`; fuser `{plan.fuser_config}`. Evaluation: the aligned "
        f"`{plan.eval_split}` faces of `{plan.data_dir}` for every row (also the one trained "
        f"on in-the-wild faces), {plan.eval_runs} runs of one random crop per identity and "
        f"duration; cells are mean ± standard deviation over runs. Each embedder has its own "
        f"table. The paper's absolute numbers come from 120k-step models on HQ-VoxCeleb; these "
        f"are short runs on a synthetic corpus, so only orderings can be compared.", ""]
    if oracle:
        lines += [
            f"The last row of each Table 2, `{ORACLE_LABEL}`, is no model: each test identity's "
            f"face drawn with its own voice-linked attributes and a training identity's "
            f"face-only ones ({plan.eval_runs} runs with fresh donors; "
            f"`keras_sf2f/evaluation/oracle.py`), i.e. about the most a voice-only model can "
            f"reach with that embedder on this corpus.", ""]
    for embedder in embedders:
        lines += [f"## Table 2 (ablations) -- embedder `{embedder}`", "",
                  "| variant | input | " + head[2:], "|---|---|" + sep]
        for v in chosen:
            if "2" not in v.tables or v.name not in results:
                continue
            for protocol in TABLE_PROTOCOLS:
                values = results[v.name].get(protocol, {}).get(embedder)
                if values is not None:
                    lines.append(f"| {v.label} (`{v.name}`) | {_protocol_label(protocol)} | "
                                 + " | ".join(format_summary(values, k) for k in keys) + " |")
        if oracle and embedder in oracle:
            lines.append(f"| {ORACLE_LABEL} | - | "
                         + " | ".join(format_summary(oracle[embedder], k) for k in keys) + " |")
        lines += ["", f"## Table 3 (SF2F vs voice2face) -- embedder `{embedder}`", "",
                  "| model | fuser | input | " + head[2:], "|---|---|---|" + sep]
        for name, fuser in (("voice2face", "no"), ("sf2f", "no"), ("sf2f_fuser", "yes")):
            if name not in results or name not in by_name:
                continue
            for protocol in TABLE_PROTOCOLS:
                values = results[name].get(protocol, {}).get(embedder)
                if values is not None:
                    lines.append(f"| {by_name[name].label} (`{name}`) | {fuser} | "
                                 f"{_protocol_label(protocol)} | "
                                 + " | ".join(format_summary(values, k) for k in keys) + " |")
        lines.append("")
    if embedders:
        recall = _largest_recall(results)
        lines += ["## The paper's orderings on these runs", "",
                  f"Embedder `{embedders[0]}`. A claim holds when the difference has the "
                  f"paper's sign and exceeds two standard errors over evaluation runs "
                  f"(the ± figure), is reversed when it has the opposite sign beyond that, "
                  f"and is within noise otherwise.", ""]
        for metric in [m for m in (recall, "cosine_similarity") if m]:
            lines += [f"### {metric}", "", "| claim | verdict | differences |",
                      "|---|---|---|"]
            for claim, verdict, text in orderings(results, embedders[0], metric):
                lines.append(f"| {claim} | {verdict} | {text} |")
            lines.append("")
    if figures:
        lines += ["## Figure 1 layout", "",
                  "Ground truth | SF2F | voice2face per held-out identity, from the same "
                  "speech.", ""]
        for label, name in figures:
            lines += [f"Input speech: {label}", "", f"![Figure 1, {label}]({name})", ""]
    lines += ["## Variants and their training", "",
              "| variant | tables | changed flags | training data | trained step | train s | "
              "train CPU s | eval s | report |", "|---|---|---|---|---|---|---|---|---|"]
    for v in chosen:
        rec = records.get(v.name, {})
        changes = " ".join(v.overrides) or ("(voice2face flagfile)" if v.config == "voice2face"
                                            else "(fuser flagfile, init from sf2f)"
                                            if v.stage2_of else "(base flagfile)")
        status = rec.get("trained_step", "") if v.name in results else \
            f"FAILED: {failed[v.name].splitlines()[0]}" if v.name in failed else "not run"
        lines.append(f"| `{v.name}` | {', '.join(v.tables)} | `{changes}` | "
                     f"`{rec.get('data_dir', '')}` | {status} | {rec.get('train_seconds', '')} "
                     f"| {rec.get('train_cpu_seconds', '')} | {rec.get('eval_seconds', '')} | "
                     + (f"[report](variants/{v.name}/report/report.md)"
                        if v.name in results else "") + " |")
    lines += ["", "Exact command lines: `variants/<name>/variant.json` (`train_args`) and the "
              "effective configuration in `variants/<name>/model/flags.cfg`. "
              f"This invocation took {elapsed / 60:.1f} minutes.", ""]
    files.write_text(md_path, "\n".join(lines))
    _write_page(plan, chosen, results, lines, figures, split_table)
    return md_path, csv_path


def _write_page(plan: Plan, chosen: list, results: dict, lines: list, figures: list,
                split_table=None) -> str:
    """index.html: one column per variant with samples (``results_page.write_ablation_page``),
    then ablations.md's sections (its Figure-1 pictures are the page's own faces)."""
    import numpy as np  # noqa: PLC0415

    from keras_sf2f.evaluation import results_page  # noqa: PLC0415

    saved = {}
    for v in chosen:
        path = os.path.join(plan.output_dir, "variants", v.name, "report", "samples.npz")
        if v.name in results and os.path.isfile(path):
            with np.load(path) as f:
                saved[v.name] = {k: f[k] for k in f.files}
    if saved and split_table is None:
        from keras_sf2f.data import table  # noqa: PLC0415
        try:
            split_table = table.load_split(plan.data_dir, plan.eval_split)
        except (table.DataError, OSError, ValueError) as e:
            print(f"results page: no audio ({e})", file=sys.stderr)
    markdown, skipping = [], False
    for line in lines[1:]:  # the page has its own title
        if line.startswith("## "):
            skipping = line.startswith("## Figure 1 layout")
        if not skipping:
            markdown.append(line)
    facts = [("Variants", f"{len(saved)} of {len(chosen)} evaluated with faces"),
             ("Training", f"{plan.train_steps} stage-1 steps per variant, {plan.fuser_steps} "
                          f"fuser steps for `sf2f_fuser`; base flagfile `{plan.base_config}`"),
             ("Evaluation", f"split `{plan.eval_split}` of `{plan.data_dir}`, "
                            f"{plan.eval_runs} runs per duration (seed {plan.eval_seed})")]
    links = [("ablations.md", "ablations.md"), ("ablations.csv", "ablations.csv")] + [
        (name, name) for _, name in figures]
    return results_page.write_ablation_page(
        plan.output_dir, plan.evaluation_config(), split_table,
        [(v.name, f"{v.label}", v.stage2_of is not None) for v in chosen], saved, markdown,
        facts, links=links)


def _write_figure1(plan: Plan, results: dict) -> list:
    """Ground truth | SF2F | voice2face from the variants' saved samples (same crops)."""
    import numpy as np  # noqa: PLC0415

    from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415

    sf2f = "sf2f_fuser" if "sf2f_fuser" in results else "sf2f" if "sf2f" in results else None
    if sf2f is None:
        return []

    def samples(name):
        path = os.path.join(plan.output_dir, "variants", name, "report", "samples.npz")
        return dict(np.load(path)) if name in results and os.path.isfile(path) else None

    main, baseline = samples(sf2f), samples("voice2face")
    if main is None:
        return []
    note = None if baseline is not None else "no voice2face column: the voice2face variant " \
                                             "was not run"
    figures = []
    for key in [k for k in main if k.startswith(f"{sf2f}|")]:
        label = key.split("|", 1)[1]
        columns = {"SF2F" + (" + fuser" if sf2f == "sf2f_fuser" else ""): main[key]}
        if baseline is not None and f"voice2face|{label}" in baseline:
            columns["voice2face"] = baseline[f"voice2face|{label}"]
        name = ev.figure1_file_name(label)
        ev.write_figure1(os.path.join(plan.output_dir, name), main["ground_truth"], columns,
                         [str(n) for n in main["names"]],
                         ev.protocol_input_label(label, plan.eval_max_windows), note)
        figures.append((ev.protocol_input_label(label, plan.eval_max_windows), name))
    return figures
