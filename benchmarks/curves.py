"""Training curves of finished runs: read them from TensorBoard event files, draw them.

Shared by the benchmark scripts that compare two runs of ``trainers/train.py`` step by step
(``resume_after_sigkill.py``, ``bf16_curves.py``), with the command they train by.
"""

from __future__ import annotations

import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_train_command(model_dir: str, data_dir: str, face_network: str, *extra: str) -> list:
    """``trainers/train.py`` on ``configs/demo.cfg`` with a loss summary every step and no
    validation (the scripts compare training curves); ``extra`` flags come last and win.

    Without the demo's decoder and voice pre-training: the scripts compare a few dozen
    generator steps, and the demo's first 2400 steps train only the decoder, then only the
    voice encoder."""
    return [sys.executable, os.path.join(_REPO_ROOT, "trainers", "train.py"),
            f"--flagfile={os.path.join(_REPO_ROOT, 'configs', 'demo.cfg')}",
            f"--data_dir={data_dir}", f"--face_network={face_network}",
            f"--model_dir={model_dir}", "--eval_every_steps=0", "--summary_every_steps=1",
            "--decoder_pretrain_steps=0", "--voice_pretrain_steps=0", *extra]


def train_env() -> dict:
    """The environment for the training subprocesses: TensorFlow's C++ log quiet by default."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))


def scalars(model_dir: str, tag: str) -> dict:
    """``{step: value}`` of one training scalar in ``model_dir/train``, as TensorBoard shows it
    (a step written twice, e.g. again after a resume, keeps its last value)."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
        EventAccumulator)

    accumulator = EventAccumulator(os.path.join(model_dir, "train"),
                                   size_guidance={"tensors": 0})
    accumulator.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)}


def plot(curves: dict, path: str, title: str, colours: dict | None = None,
         band: tuple | None = None) -> None:
    """Draws ``{name: {step: value}}`` as lines into a PNG (the first curve thick).

    ``band``: ``(from_step, to_step, label)`` shaded in red, e.g. steps lost to a kill."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    width, height, pad = 900, 420, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = sorted(set().union(*[c.keys() for c in curves.values()]))
    values = [v for c in curves.values() for v in c.values()]
    lo, hi = min(values), max(values)

    def sx(s):
        return pad + (s - steps[0]) / max(steps[-1] - steps[0], 1) * (width - 2 * pad)

    def sy(v):
        return height - pad - (v - lo) / max(hi - lo, 1e-9) * (height - 2 * pad)

    if band is not None:
        start, end, label = band
        draw.rectangle([sx(start), pad, sx(end), height - pad], fill=(255, 235, 235))
        draw.line([sx(start), pad, sx(start), height - pad], fill=(200, 0, 0))
        draw.text((sx(start) + 4, pad + 4), label, fill=(200, 0, 0))
    palette = [(30, 30, 200), (240, 140, 0), (20, 150, 60), (160, 40, 160)]
    for i, (name, curve) in enumerate(curves.items()):
        colour = (colours or {}).get(name, palette[i % len(palette)])
        points = [(sx(s), sy(curve[s])) for s in sorted(curve)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3 if i == 0 else 1)
        draw.text((pad + 10, height - pad + 10 + 14 * i), name, fill=colour)
    draw.text((pad, 10), f"{title} (lo {lo:.3f}, hi {hi:.3f})", fill="black")
    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    image.save(path)
