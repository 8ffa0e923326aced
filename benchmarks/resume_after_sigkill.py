"""Kill -9 a training run mid-way, restart it, and compare its loss curve with an uninterrupted
run of the same command.

    python benchmarks/resume_after_sigkill.py --data_dir=runs/demo/data \
        --face_network=runs/demo/face_net --output_dir=runs/resume_check

Runs ``trainers/train.py --flagfile=configs/demo.cfg`` three times into OUTPUT_DIR:
``straight/`` to --resume_steps without interruption; ``killed/`` the same command, sent
SIGKILL as soon as its checkpoint of step --kill_after_step is on disk (it has then trained
some steps past it, which are lost), then run again unchanged to --resume_steps. Reads both
runs' TensorBoard scalars the way TensorBoard shows them (the restarted run's steps replace
the lost ones), prints the final step of each run and the largest difference of the total
generator loss before and after the kill, and draws both curves into ``loss_curves.png``.

The data pipeline is a function of (seed, step), so the restarted run sees exactly the batches
the straight run saw; the curves differ only by floating-point summation order (two threads).
"""

import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

flags.DEFINE_string("data_dir", "runs/demo/data", "Prepared corpus (scripts/main_job.sh).")
flags.DEFINE_string("face_network", "runs/demo/face_net", "Face-identity network.")
flags.DEFINE_string("output_dir", "runs/resume_check", "Where the two runs go (replaced).")
flags.DEFINE_integer("resume_steps", 200, "Steps of both runs.")
flags.DEFINE_integer("checkpoint_every", 50, "Checkpoint interval of both runs.")
flags.DEFINE_integer("kill_after_step", 100, "SIGKILL the second run once this step's "
                     "checkpoint exists.")
flags.DEFINE_string("tag", "loss/total_loss", "Scalar compared.")
FLAGS = flags.FLAGS


def _train_command(model_dir: str) -> list:
    return [sys.executable, os.path.join(_REPO_ROOT, "trainers", "train.py"),
            f"--flagfile={os.path.join(_REPO_ROOT, 'configs', 'demo.cfg')}",
            f"--data_dir={FLAGS.data_dir}", f"--face_network={FLAGS.face_network}",
            f"--model_dir={model_dir}", f"--train_steps={FLAGS.resume_steps}",
            f"--checkpoint_every_steps={FLAGS.checkpoint_every}",
            "--eval_every_steps=0", "--summary_every_steps=1", "--log_every_seconds=1"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))


def _checkpointed_step(model_dir: str) -> int:
    """The step of the newest checkpoint listed in ``model_dir/checkpoint`` (0 if none)."""
    path = os.path.join(model_dir, "checkpoint")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        first = f.readline()
    # model_checkpoint_path: "ckpt-<step>"
    try:
        return int(first.rsplit("-", 1)[1].strip().strip('"'))
    except (IndexError, ValueError):
        return 0


def _last_logged_step(log_path: str) -> int:
    """The last step the progress log reported (event files may not be flushed at a kill)."""
    total = f"/{FLAGS.resume_steps} ("
    step = 0
    with open(log_path, errors="replace") as f:
        for line in f:
            if total in line:
                try:
                    step = int(line.split(total)[0].rsplit(" ", 1)[-1])
                except ValueError:
                    pass
    return step


def _scalars(model_dir: str, tag: str) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
        EventAccumulator)
    import tensorflow as tf  # noqa: PLC0415

    accumulator = EventAccumulator(os.path.join(model_dir, "train"),
                                   size_guidance={"tensors": 0})
    accumulator.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)}


def _plot(curves: dict, kill_step: int, lost_until: int, path: str) -> None:
    from PIL import Image, ImageDraw  # noqa: PLC0415

    width, height, pad = 900, 420, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = sorted(set().union(*[c.keys() for c in curves.values()]))
    values = [v for c in curves.values() for v in c.values()]
    lo, hi = min(values), max(values)
    sx = lambda s: pad + (s - steps[0]) / max(steps[-1] - steps[0], 1) * (width - 2 * pad)  # noqa: E731
    sy = lambda v: height - pad - (v - lo) / max(hi - lo, 1e-9) * (height - 2 * pad)  # noqa: E731
    draw.rectangle([sx(kill_step), pad, sx(lost_until), height - pad], fill=(255, 235, 235))
    draw.line([sx(kill_step), pad, sx(kill_step), height - pad], fill=(200, 0, 0))
    draw.text((sx(kill_step) + 4, pad + 4), f"checkpoint {kill_step}; killed at ~{lost_until}",
              fill=(200, 0, 0))
    colours = {"straight": (30, 30, 200), "killed + resumed": (240, 140, 0)}
    for i, (name, curve) in enumerate(curves.items()):
        points = [(sx(s), sy(curve[s])) for s in sorted(curve)]
        draw.line(points, fill=colours[name], width=3 if i == 0 else 1)
        draw.text((pad + 10, height - pad + 10 + 14 * i), name, fill=colours[name])
    draw.text((pad, 10), f"{FLAGS.tag} per step (lo {lo:.3f}, hi {hi:.3f})", fill="black")
    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    image.save(path)


def main(argv):
    del argv
    if FLAGS.kill_after_step >= FLAGS.resume_steps:
        raise app.UsageError("--kill_after_step must be below --resume_steps")
    if FLAGS.kill_after_step % FLAGS.checkpoint_every:
        raise app.UsageError("--kill_after_step must be a multiple of --checkpoint_every")
    for path in (FLAGS.data_dir, FLAGS.face_network):
        if not os.path.exists(path):
            raise app.UsageError(f"{path} does not exist: run scripts/main_job.sh first")
    shutil.rmtree(FLAGS.output_dir, ignore_errors=True)
    straight = os.path.join(FLAGS.output_dir, "straight")
    killed = os.path.join(FLAGS.output_dir, "killed")

    print(f"straight run to step {FLAGS.resume_steps} ...", flush=True)
    subprocess.run(_train_command(straight), check=True, env=_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    print(f"second run, SIGKILL once ckpt-{FLAGS.kill_after_step} exists ...", flush=True)
    os.makedirs(killed, exist_ok=True)
    log_path = os.path.join(FLAGS.output_dir, "killed_run.log")
    log = open(log_path, "w")
    process = subprocess.Popen(_train_command(killed), env=_env(), stdout=log,
                               stderr=subprocess.STDOUT)
    while _checkpointed_step(killed) < FLAGS.kill_after_step:
        if process.poll() is not None:
            raise RuntimeError(f"the run ended (exit {process.returncode}) before step "
                               f"{FLAGS.kill_after_step} was checkpointed")
        time.sleep(0.5)
    # Let it train on past the checkpoint, so the kill really loses steps.
    time.sleep(10)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    lost_until = _last_logged_step(log_path)
    print(f"killed at step ~{lost_until}; last checkpoint {_checkpointed_step(killed)}",
          flush=True)
    print("restarting the same command ...", flush=True)
    subprocess.run(_train_command(killed), check=True, env=_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    a, b = _scalars(straight, FLAGS.tag), _scalars(killed, FLAGS.tag)
    common = sorted(set(a) & set(b))
    before = [abs(a[s] - b[s]) for s in common if s <= FLAGS.kill_after_step]
    after = [abs(a[s] - b[s]) for s in common if s > FLAGS.kill_after_step]
    result = {
        "straight_final_step": _checkpointed_step(straight),
        "resumed_final_step": _checkpointed_step(killed),
        "killed_at_step": lost_until, "resumed_from_step": FLAGS.kill_after_step,
        "steps_compared": len(common), "missing_steps": sorted(set(a) ^ set(b)),
        "max_abs_diff_before_kill": max(before), "max_abs_diff_after_resume": max(after),
        "mean_loss_after_resume": {"straight": sum(a[s] for s in common if s >
                                                   FLAGS.kill_after_step) / len(after),
                                   "resumed": sum(b[s] for s in common if s >
                                                  FLAGS.kill_after_step) / len(after)},
        "tag": FLAGS.tag,
    }
    plot = os.path.join(FLAGS.output_dir, "loss_curves.png")
    _plot({"straight": a, "killed + resumed": b}, FLAGS.kill_after_step, lost_until, plot)
    with open(os.path.join(FLAGS.output_dir, "resume_check.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"plot: {plot}")


if __name__ == "__main__":
    app.run(main)
