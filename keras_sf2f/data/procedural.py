"""Worker-side generation of the procedural corpus for the prepare step.

Kept free of TensorFlow on purpose: ``prepare_procedural`` runs these functions in spawned
worker processes, and importing TensorFlow there would cost seconds and hundreds of MB per
worker. The main process turns the returned speech into features and writes the records.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from keras_sf2f.audio.vad import webrtc_vad
from keras_sf2f.data import corpus

def identity_name(identity: int) -> str:
    return f"synth{identity:05d}"


def utterance_id(name: str, item: int) -> str:
    """The prepared data's id of utterance ``item`` of identity ``name``."""
    return f"{name}_u{item:02d}"


_UTTERANCE_ID = re.compile(r"^synth(\d+)_u(\d+)$")


def parse_utterance_id(value: str):
    """``(identity, item)`` of a procedural utterance id (``utterance_id``), else ``None``."""
    match = _UTTERANCE_ID.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def utterance_speech(seed: int, identity: int, item: int, sample_rate: int) -> np.ndarray:
    """The int16 samples preparation computes the features of: the corpus utterance after
    voice activity detection (a pure function of its arguments; reports regenerate it)."""
    wav = corpus.synthesize_utterance(seed, identity, item, sample_rate)
    return webrtc_vad(wav, sample_rate)


def face_pngs(image: np.ndarray, sizes) -> dict:
    """PNG bytes of an RGB uint8 face at each of ``sizes`` (antialiased bilinear resize)."""
    pil = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    out = {}
    for size in sizes:
        resized = pil if pil.size == (size, size) else pil.resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        resized.save(buf, format="PNG")
        out[size] = buf.getvalue()
    return out


def generate_identity_records(args):
    """One identity's speech after VAD and its faces as PNGs: ``(identity, speech, faces)``
    with ``speech = [(item, int16 samples)]`` and ``faces = [(item, {size: png})]``."""
    spec, identity, sizes = args
    faceid = spec.split_of(identity) == "faceid"
    speech = []
    for item in range(0 if faceid else spec.utterances_per_identity):
        speech.append((item, utterance_speech(spec.seed, identity, item, spec.sample_rate)))
    faces = []
    for item in range(spec.faceid_images_per_identity if faceid else spec.images_per_identity):
        # Each stored size is drawn natively (2x supersampled), not resized from another.
        pngs = {size: face_pngs(corpus.draw_face(spec.seed, identity, item, size,
                                                 spec.face_quality), [size])[size]
                for size in sizes}
        faces.append((item, pngs))
    return identity, speech, faces
