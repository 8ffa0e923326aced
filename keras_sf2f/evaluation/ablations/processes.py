"""The child processes of the ablations: the tools and trainings they run, their environment,
their CPU time, the last lines of their logs, the step their checkpoints reached, and SIGTERM
to the command. Needs no TensorFlow."""

from __future__ import annotations

import collections
import os
import re
import resource
import signal
import subprocess

from keras_sf2f.evaluation.ablations.catalog import AblationError
from keras_sf2f.evaluation.ablations.plan import REPO_ROOT


def run_tool(python: str, script: str, args: list, log_path: str, what: str) -> None:
    """Runs the checkout's ``script`` (e.g. trainers/prepare_data.py) to the end, its output
    into ``log_path``; raises AblationError with the log's last lines when it fails."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        rc = subprocess.call([python, os.path.join(REPO_ROOT, script), *args],
                             stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                             cwd=REPO_ROOT)
    if rc != 0:
        raise AblationError(f"{what} failed (exit {rc}); last lines of {log_path}:\n"
                            f"{tail(log_path)}")


def start_training(python: str, args: list, log_path: str) -> tuple:
    """``(process, open log file)`` of trainers/train.py started with ``args``, appending to
    ``log_path``; in a session of its own, so that the command's Ctrl-C reaches it only as the
    SIGTERM the runner sends (which makes it save a checkpoint)."""
    log_file = open(log_path, "a")
    proc = subprocess.Popen([python, os.path.join(REPO_ROOT, "trainers", "train.py"), *args],
                            stdout=log_file, stderr=subprocess.STDOUT, env=child_env(),
                            cwd=REPO_ROOT, start_new_session=True)
    return proc, log_file


def latest_step(model_dir: str) -> int:
    """The step of model_dir's latest checkpoint (0 without one), from the text index file,
    so the scheduler needs no TensorFlow."""
    path = os.path.join(model_dir, "checkpoint")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        match = re.search(r'^model_checkpoint_path:\s*"[^"]*?(\d+)"', f.read(), re.M)
    return int(match.group(1)) if match else 0


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError:
        return ""


class StopSignal:
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


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    # No PYTHONPATH: the children run this interpreter's installed keras_sf2f (pip install
    # -e ., as scripts/setup_env.sh does), the same code as this process.
    return env

