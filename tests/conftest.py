"""Shared test helpers (keep this file small)."""

import importlib.util
import os

import numpy as np
import pytest
from scipy import signal as _signal

from keras_sf2f.data import records
from keras_sf2f.data.prepare import DatasetWriter
from keras_sf2f.data.procedural import face_pngs


def make_speech_like(seed: int, seconds: float, sample_rate: int = 16000,
                     gaps=(), peak: float = 12000.0) -> np.ndarray:
    """A voiced, formant-filtered pulse train with syllable envelopes, on the int16 scale.

    ``gaps`` is a list of ``(start_s, end_s)`` stretches set to digital silence. Returns float64
    integer-valued samples (round-trips through int16 exactly).
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 110 + 40 * rng.random() + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0 / sample_rate)
    source = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    source = source + 0.02 * rng.standard_normal(n)
    x = source
    for formant, bw in ((500 + 200 * rng.random(), 80), (1500 + 400 * rng.random(), 120),
                        (2500 + 300 * rng.random(), 160)):
        if formant < sample_rate / 2 - bw:
            r = np.exp(-np.pi * bw / sample_rate)
            theta = 2 * np.pi * formant / sample_rate
            x = x + _signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source) * 3
    syllable = 0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t)  # ~4 syllables per second
    x = x * (0.2 + 0.8 * syllable)
    x = x / (np.abs(x).max() + 1e-12) * peak
    for start, end in gaps:
        x[int(start * sample_rate):int(end * sample_rate)] = 0.0
    return np.round(x)


@pytest.fixture
def speech_like():
    """The :func:`make_speech_like` generator."""
    return make_speech_like


def write_tiny_dataset(directory: str, names: dict, *, utterances: int = 2, frames: int = 260,
                       faces: int = 2, seed: int = 0) -> str:
    """A prepared dataset small enough to train on in seconds, in the on-disk layout
    ``trainers/prepare_data.py`` writes. ``names`` maps split -> identity names. Within a
    split, identity i's mels are offset by 0.3 * i and its faces are coloured by i, so a model
    can tell identities apart. Returns ``directory``."""
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(directory, names, utterance_shards=1)
    for split_names in names.values():
        for i, name in enumerate(split_names):
            for u in range(utterances):
                mel = rng.normal(size=(frames, 40)).astype(np.float32) + 0.3 * i
                writer.add_utterance(name, f"{name}_u{u}", mel)
            for k in range(faces):
                image = np.full([128, 128, 3], (20 * i + 10, 120 + 40 * k, 60), np.uint8)
                image[40:90, 40:90] = (200 - 15 * i, 80, 30 * k)
                writer.add_face(name, f"{name}_f{k}", face_pngs(image, records.IMAGE_SIZES))
    writer.close()
    return directory


def save_tiny_face_network(path) -> str:
    """A randomly initialised 16-D face-identity network saved where ``--face_network`` reads
    one (trainers/train_face_identity.py's layout); returns the directory."""
    from keras_sf2f.models.facenet import FaceNet
    from keras_sf2f.training.face_identity import save_face_network

    architecture = dict(embedding_dim=16, width_multiplier=0.0625, repeats=[1, 1, 1],
                        dropout_rate=0.0)
    model = FaceNet(**architecture)
    model.build((None, 140, 140, 3))
    save_face_network(model, {"architecture": architecture, "image_size": 64,
                              "input": {"normalize_method": "imagenet"}}, str(path))
    return str(path)


def save_tiny_generator_checkpoint(directory, config, step: int) -> str:
    """A randomly initialised generator of ``config`` (a ``ModelConfig``; seed 3) saved as a
    run directory the evaluation tools read: ``train_config.json`` and ``ckpt-1`` recording
    ``step``. Returns the directory."""
    import json

    import keras
    import tensorflow as tf

    from keras_sf2f.models import builder

    keras.utils.set_random_seed(3)
    generator = builder.build_generator(config)
    generator(tf.zeros([1, 125, 40]), training=False)
    os.makedirs(directory)
    with open(os.path.join(directory, "train_config.json"), "w") as f:
        json.dump({"model": config.to_dict()}, f)
    # save() (not write()) records the save counter, as training's CheckpointManager does.
    tf.train.Checkpoint(generator=generator, step=tf.Variable(step, dtype=tf.int64)).save(
        os.path.join(directory, "ckpt"))
    return str(directory)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relative_path: str):
    """An entry script of the repository (e.g. "trainers/train.py") as a module, without
    running its main."""
    spec = importlib.util.spec_from_file_location(
        os.path.splitext(os.path.basename(relative_path))[0],
        os.path.join(REPO_ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
