"""Face detection rate: does an off-the-shelf detector that training never uses see a face?

Recall and cosine figures ask whether a generated face is closer to its own identity than to
others, in some embedder's space; they say nothing about whether the picture is a face at all.
A generator that collapses to a few blobs can still score above chance there (a blob of the
right skin tone is nearer its own identity's mean embedding). The detection rate asks the
plainer question: in what fraction of the generated pictures does a generic face detector,
which no part of training has seen, find a face?

The detector is dlib's HOG frontal face detector (``dlib.get_frontal_face_detector()``, from
the ``dlib-bin`` wheel the dlib recogniser already needs). Its sliding window is 80x80 px, so
a 64 px face (the demo's output) is too small to be found at its own size: every image is
first upscaled to ``DETECTION_SIZE`` (256 px) with PIL's bicubic filter. Bicubic rather than
nearest (blocky edges make spurious gradient structure) or bilinear (softer edges weaken the
very gradients HOG reads); on the corpus's ground-truth faces the three give the same rate
within one face in forty, so the choice is about not inventing or erasing edges, not about
the number. The detector runs without its own upsampling pyramid step (``upsample=0``) at its
default threshold 0: a face is "found" when any window scores above 0, wherever it sits.

On the demo corpus's aligned ground-truth faces the rate is about 0.88 (the remaining
faces are drawn with head tilts or hair across the brow that the HOG model rejects); a
flat grey image and uniform noise give 0. The rate of the ground truth is therefore the
ceiling to compare a model with, not 1.

HOG reads intensity gradients, so a dark face with little contrast between skin, brows and
eyes is found less often even when it is a real photo: on the demo corpus's validation photos
the rate is 0.63 for the darkest third of the identities and 0.96 for each of the other two.
``brightness_thirds`` splits the identities into thirds by their ground-truth photo's
face-centre brightness, and ``rates_by_third`` gives the rate per third, so that the
evaluation can put it beside the ground truth's own: a model that draws dark faces faithfully
loses detection there because of the detector, which the overall rate alone would hide.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

# image_ranges imports TensorFlow only for float inputs, so uint8 callers (and the detector's
# tests) pass pixels through without it.
from keras_sf2f.image_ranges import normalized_to_uint8_np

__all__ = ["BRIGHTNESS_THIRDS", "DETECTION_SIZE", "FaceDetector", "THIRD_RATE_KEYS",
           "brightness_thirds", "detection_rate", "detector_available", "face_centre_brightness",
           "found_rate", "rates_by_third", "to_uint8_images"]

#: Side, in pixels, every image is upscaled to before detection.
DETECTION_SIZE = 256

#: Names of the brightness thirds, darkest first (``brightness_thirds``).
BRIGHTNESS_THIRDS = ("darkest", "middle", "lightest")
#: The figure names of the per-third rates (``rates_by_third``), in that order.
THIRD_RATE_KEYS = tuple(f"detection_rate_{name}_third" for name in BRIGHTNESS_THIRDS)
# The face centre whose brightness groups identities: rows and columns as fractions of the
# image (an aligned face's nose and inner cheeks, below the eyes and above the mouth, where
# hair, beard and background rarely reach).
_CENTRE_ROWS = (0.56, 0.69)
_CENTRE_COLUMNS = (0.44, 0.56)


def detector_available() -> bool:
    """True when dlib (the ``dlib-bin`` wheel) imports; the HOG model ships inside it."""
    try:
        import dlib  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def to_uint8_images(images, normalize_method: str = "imagenet") -> np.ndarray:
    """uint8 RGB ``[B, H, W, 3]`` from uint8 images (returned as they are) or from
    generator-space float images (ImageNet-normalised, the generator's output space)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"images must be uint8 or generator-space floats, got {x.dtype}")
    return normalized_to_uint8_np(x.astype(np.float32), normalize_method)


def face_centre_brightness(images, normalize_method: str = "imagenet") -> np.ndarray:
    """float ``[B]``: mean luma (ITU-R BT.601 weights, 0-255) of each face's centre."""
    pixels = to_uint8_images(images, normalize_method).astype(np.float64)
    h, w = pixels.shape[1:3]
    r0, r1 = (int(round(f * h)) for f in _CENTRE_ROWS)
    c0, c1 = (int(round(f * w)) for f in _CENTRE_COLUMNS)
    centre = pixels[:, r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].mean(axis=(1, 2))
    return centre @ np.array([0.299, 0.587, 0.114])


def brightness_thirds(brightness) -> np.ndarray:
    """int ``[B]`` in {0, 1, 2}: the third of the brightness ranking each face falls in
    (0 = darkest). By rank, so the thirds are as equal as the count allows, ties broken by
    order."""
    b = np.asarray(brightness, np.float64).reshape(-1)
    groups = np.empty(len(b), np.int64)
    groups[np.argsort(b, kind="stable")] = np.arange(len(b)) * 3 // max(len(b), 1)
    return groups


def found_rate(found) -> float:
    """The fraction of True in a ``detect`` result (0.0 for no images)."""
    found = np.asarray(found, bool)
    return float(found.mean()) if found.size else 0.0


def rates_by_third(found, thirds) -> dict:
    """``{THIRD_RATE_KEYS[k]: rate}`` of a ``detect`` result over the faces in each
    brightness third (``brightness_thirds``; a third without faces is left out)."""
    found, thirds = np.asarray(found, bool), np.asarray(thirds)
    return {key: found_rate(found[thirds == third])
            for third, key in enumerate(THIRD_RATE_KEYS) if np.any(thirds == third)}


class FaceDetector:
    """dlib's HOG frontal face detector on upscaled images.

    Args:
      size: side every image is resized to (bicubic) before detection.
      threshold: dlib's ``adjust_threshold``; a face is found when a window scores above it.
      upsample: dlib's own pyramid upsampling count (0: the image as resized).
      normalize_method: how float inputs are normalised ('imagenet' or 'standard').
    """

    name = "dlib_hog"

    def __init__(self, size: int = DETECTION_SIZE, threshold: float = 0.0, upsample: int = 0,
                 normalize_method: str = "imagenet"):
        try:
            import dlib  # noqa: PLC0415
        except ImportError as e:
            raise ImportError("face detection needs dlib (pip install dlib-bin)") from e
        self.size = int(size)
        self.threshold = float(threshold)
        self.upsample = int(upsample)
        self.normalize_method = normalize_method
        self._detector = dlib.get_frontal_face_detector()
        # dlib's detector object is not documented as thread-safe; evaluation is
        # single-threaded today, the lock keeps it correct if a caller fans out.
        self._lock = threading.Lock()

    def prepare(self, images) -> np.ndarray:
        """The uint8 ``[B, size, size, 3]`` pictures the detector sees."""
        pixels = to_uint8_images(images, self.normalize_method)
        if pixels.shape[1:3] == (self.size, self.size) or not len(pixels):
            return pixels
        return np.stack([np.asarray(Image.fromarray(p).resize((self.size, self.size),
                                                              Image.BICUBIC))
                         for p in pixels])

    def scores(self, images) -> np.ndarray:
        """float ``[B]``: the best window score of each image, ``-inf`` where no window
        scored above ``threshold``."""
        out = []
        for picture in self.prepare(images):
            _, scores = self._run(picture)
            out.append(max(scores) if len(scores) else -np.inf)
        return np.asarray(out, np.float64)

    def _run(self, picture) -> tuple:
        """dlib's detector on one prepared picture: (boxes, their scores)."""
        with self._lock:
            boxes, scores, _ = self._detector.run(np.ascontiguousarray(picture),
                                                  self.upsample, self.threshold)
        return boxes, scores

    def best_boxes(self, pictures) -> list:
        """For pictures as :meth:`prepare` returns them: the best-scoring face box of each as
        ``(left, top, right, bottom)`` in their pixels, or None where none was found."""
        out = []
        for picture in pictures:
            boxes, scores = self._run(picture)
            if not len(boxes):
                out.append(None)
                continue
            best = boxes[int(np.argmax(scores))]
            out.append((best.left(), best.top(), best.right(), best.bottom()))
        return out

    def detect(self, images) -> np.ndarray:
        """bool ``[B]``: a face was found in the image."""
        return np.isfinite(self.scores(images))

    def rate(self, images) -> float:
        """Fraction of images in which a face was found (0.0 for no images)."""
        return found_rate(self.detect(images))


_DEFAULT: list = []


def detection_rate(images, normalize_method: str = "imagenet") -> float:
    """Fraction of ``images`` (uint8 or generator-space) in which dlib's HOG frontal face
    detector finds a face after bicubic upscaling to ``DETECTION_SIZE`` px."""
    if not _DEFAULT:
        _DEFAULT.append(FaceDetector())
    detector = _DEFAULT[0]
    if normalize_method != detector.normalize_method:
        detector = FaceDetector(normalize_method=normalize_method)
    return detector.rate(images)
