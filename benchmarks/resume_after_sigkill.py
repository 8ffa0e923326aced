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

import json
import os
import shutil
import signal
import subprocess
import time

from absl import app, flags

from curves import demo_train_command, plot, scalars, train_env  # beside this script

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
    return demo_train_command(model_dir, FLAGS.data_dir, FLAGS.face_network,
                              f"--train_steps={FLAGS.resume_steps}",
                              f"--checkpoint_every_steps={FLAGS.checkpoint_every}",
                              "--log_every_seconds=1")


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
    subprocess.run(_train_command(straight), check=True, env=train_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    print(f"second run, SIGKILL once ckpt-{FLAGS.kill_after_step} exists ...", flush=True)
    os.makedirs(killed, exist_ok=True)
    log_path = os.path.join(FLAGS.output_dir, "killed_run.log")
    log = open(log_path, "w")
    process = subprocess.Popen(_train_command(killed), env=train_env(), stdout=log,
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
    subprocess.run(_train_command(killed), check=True, env=train_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    a, b = scalars(straight, FLAGS.tag), scalars(killed, FLAGS.tag)
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
    plot_path = os.path.join(FLAGS.output_dir, "loss_curves.png")
    plot({"straight": a, "killed + resumed": b}, plot_path, f"{FLAGS.tag} per step",
         band=(FLAGS.kill_after_step, lost_until,
               f"checkpoint {FLAGS.kill_after_step}; killed at ~{lost_until}"))
    with open(os.path.join(FLAGS.output_dir, "resume_check.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"plot: {plot_path}")


if __name__ == "__main__":
    app.run(main)
