"""Ablations: runs a plan. Prepares what is missing, trains the variants in subprocesses (at
most ``plan.jobs`` at once; a fuser variant after the one it starts from), evaluates each as
its training ends, and keeps the tables current; a variant whose ``variant.json`` records the
same training command is skipped, one whose command changed resumes from its checkpoint."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time

from keras_sf2f import files
from keras_sf2f.evaluation.ablations import inputs, processes, tables
from keras_sf2f.evaluation.ablations.catalog import (REFERENCE_LOSS_FLAGS, AblationError,
                                                     Variant, select, variants)
from keras_sf2f.evaluation.ablations.evaluation import VariantEvaluation
from keras_sf2f.evaluation.ablations.plan import Plan, read_flagfile


class Ablations:
    """Runs the plan; ``run()`` returns the number of variants that failed."""

    def __init__(self, plan: Plan, names=(), log=None):
        self.plan = plan
        self.log = log or (lambda line: print(line, flush=True))
        embedding_dim = int(read_flagfile(plan.base_config).get("embedding_dim", 512))
        self.all = variants(embedding_dim, plan.recipe)
        self.variants = select(self.all, list(names))
        self.t0 = time.monotonic()
        self.failed = {}
        self.results = {}   # name -> metrics.json "results" of that variant
        self.records = {}   # name -> variant.json
        self.evaluation = VariantEvaluation(plan, self._stamp)

    # -- paths and commands ----------------------------------------------------------------

    def variant_dir(self, name: str) -> str:
        return os.path.join(self.plan.output_dir, "variants", name)

    def model_dir(self, name: str) -> str:
        return os.path.join(self.variant_dir(name), "model")

    def phase_steps(self, v: Variant) -> tuple:
        """(decoder pre-training, voice pre-training, generator) steps of a stage-1 variant."""
        return (*self.plan.pretraining_steps(v.decoder_pretrain_factor, v.pretrain_factor),
                self.plan.train_steps * v.steps_factor)

    def steps(self, v: Variant) -> int:
        if v.stage2_of:
            return self.plan.fuser_steps
        return sum(self.phase_steps(v))

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
        if v.config == "base" and not v.stage2_of:
            decoder_steps, voice_steps, generator_steps = self.phase_steps(v)
            args.append(f"--voice_pretrain_steps={voice_steps}")
            args.append(f"--decoder_pretrain_steps={decoder_steps}")
            decay_start = p.lr_decay_start_step(steps, generator_steps)
            if decay_start is not None:
                args.append(f"--lr_decay_start_step={decay_start}")
        if p.train_seed is not None:
            args.append(f"--seed={p.train_seed}")
        return args + list(v.overrides)

    def _stamp(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        self.log(f"[ablations {int(elapsed // 60)}m{int(elapsed % 60):02d}s] {text}")

    def _run_tool(self, script: str, args: list, log_path: str, what: str) -> None:
        self._stamp(f"{what} (log: {log_path})")
        processes.run_tool(self.plan.python, script, args, log_path, what)

    # -- inputs and evaluation ---------------------------------------------------------------

    def ensure_inputs(self) -> None:
        self.failed.update(inputs.ensure_inputs(self.plan, self.variants, self._run_tool,
                                                self._stamp))

    def evaluate(self, v: Variant, record: dict) -> None:
        results = self.evaluation.evaluate(v, self.variant_dir(v.name), record)
        files.write_json(os.path.join(self.variant_dir(v.name), "variant.json"), record,
                         sort_keys=False)
        self.results[v.name] = results
        self.records[v.name] = record

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
        self._stamp(f"{len(self.variants)} variants ({p.recipe} recipe), {p.train_steps} "
                    f"stage-1 generator steps, "
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
        stop = processes.StopSignal().install()
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
                    before = processes.children_cpu_seconds()
                    if proc.poll() is None:
                        continue
                    # poll() reaped exactly this child, so the growth of the children's CPU
                    # time is its own: a load-independent measure of what the variant costs.
                    record["train_cpu_seconds"] = round(
                        processes.children_cpu_seconds() - before, 1)
                    log_file.close()
                    del running[name]
                    progressed = True
                    step = processes.latest_step(self.model_dir(name))
                    record["train_seconds"] = round(time.monotonic() - t0, 1)
                    if proc.returncode == 0 and step >= self.steps(v):
                        trained.add(name)
                        self._stamp(f"{name}: trained to step {step} in "
                                    f"{record['train_seconds']:.0f} s")
                        to_evaluate.append((v, record))
                    else:
                        self.failed[name] = (f"training exited with {proc.returncode} at step "
                                             f"{step} of {self.steps(v)}; last lines of "
                                             f"{record['log']}:\n"
                                             f"{processes.tail(record['log'])}")
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
        proc, log_file = processes.start_training(self.plan.python, args, log_path)
        return proc, v, record, log_file, time.monotonic()

    def rewrite_tables(self) -> list:
        """Tables, figures and page from the variants finished so far (``--output_dir`` as a
        run left it); trains and evaluates nothing. Returns the chosen variants that are not
        finished. Raises AblationError when none is."""
        missing = [v.name for v in self.variants if not self._finished(v)]
        if not self.results:
            raise AblationError(f"no finished variant in {self.plan.output_dir}: nothing to "
                                f"tabulate (run without --ablation_tables_only first)")
        self.write_tables(final=not missing)
        return missing

    # -- tables ----------------------------------------------------------------------------

    def write_tables(self, final: bool = False) -> None:
        """``final``: also score the voice-attribute oracle for its reference rows (the
        partial tables written while variants run leave it out)."""
        from keras_sf2f.evaluation.oracle import procedural_source  # noqa: PLC0415

        oracle = None
        if final and self.results and procedural_source(self.plan.data_dir) is not None:
            self._stamp("scoring the voice-attribute oracle (reference rows)")
            oracle = self.evaluation.oracle()
        tables.write_tables(self.plan, self.variants, self.results, self.records, self.failed,
                            embedders=self._embedder_names(),
                            elapsed=time.monotonic() - self.t0, oracle=oracle,
                            split_table=self.evaluation.split)

    def _embedder_names(self) -> list:
        names = []
        for res in self.results.values():
            for per in res.values():
                for e in per:
                    if e not in names:
                        names.append(e)
        return names

