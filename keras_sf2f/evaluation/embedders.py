"""Face embedders for evaluation: generator-space images in, unit embeddings out.

An embedder turns ImageNet-normalised NHWC images (the generator's output space, and the space
``keras_sf2f.data.pipelines.decode_face`` yields real faces in) into L2-normalised embeddings,
as NumPy ``[B, D]`` float32, in batches. Two kinds:

* ``FaceNetEmbedder`` wraps any Keras ``FaceNet``: the project's own face-identity network
  (trained by ``keras_sf2f.training.face_identity``, read by ``keras_sf2f.models.face_network``)
  or one imported from facenet-pytorch's VGGFace2 state dict. Images go through the
  reference's chain (``face_preprocessing.facenet_inputs_from_generator_images``: denormalise,
  standardise, VGG-box crop, 140x140 align-corners resize).
* ``DlibEmbedder``: dlib's pretrained 128-d ResNet face recogniser (``dlib-bin`` +
  ``face_recognition_models``), an independent network no part of training has seen.
  It takes uint8 RGB 150x150 face chips; the corpus faces are already
  aligned crops, so the whole image (or a fixed central box, ``box``) is resized to 150x150
  instead of running a face detector and landmark alignment. dlib's descriptors are compared
  by Euclidean distance in dlib; here they are L2-normalised like every other embedder.
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

import numpy as np
import tensorflow as tf

from keras_sf2f.evaluation import dlib_recognizer
from keras_sf2f.evaluation.detection import FaceDetector
from keras_sf2f.evaluation.dlib_recognizer import DlibRecognizer, dlib_model_path
from keras_sf2f.image_ranges import normalized_to_uint8_np, pixels_to_uint8_np
from keras_sf2f.models import face_preprocessing
from keras_sf2f.models.face_network import load_face_network


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check_images(images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {x.shape}")
    return x


class FaceEmbedder:
    """Interface: ``name``, ``embedding_dim`` and ``embed(images) -> unit [B, D] float32``."""

    name: str = "face_embedder"
    embedding_dim: int = 0

    def embed(self, images) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, dim={self.embedding_dim})"


class FaceNetEmbedder(FaceEmbedder):
    """Embeds generator-space images with a Keras ``FaceNet`` (inference mode).

    Args:
      model: a built ``keras_sf2f.models.facenet.FaceNet``.
      name: how reports name this embedder.
      normalize_method: the generator's image normalisation ('imagenet' or 'standard').
      crop: crop the VGG face box before resizing (the reference's chain); False feeds the
        whole image.
      batch_size: images per forward pass.
    """

    def __init__(self, model, name: str = "facenet", normalize_method: str = "imagenet",
                 crop: bool = True, batch_size: int = 64):
        self.model = model
        self.name = name
        self.normalize_method = normalize_method
        self.crop = bool(crop)
        self.batch_size = int(batch_size)
        self.embedding_dim = int(model.embedding_dim)
        self._functions = {}  # (H, W) -> tf.function with a [None, H, W, 3] signature

    @classmethod
    def from_path(cls, path: str, name: str | None = None, **kwargs) -> "FaceNetEmbedder":
        """The project's face-identity network written by trainers/train_face_identity.py."""
        model, info = load_face_network(path)
        kwargs.setdefault("normalize_method", info.get("input", {}).get("normalize_method",
                                                                        "imagenet"))
        return cls(model, name=name or "face_identity", **kwargs)

    def _embed_batch(self, images):
        x = face_preprocessing.facenet_inputs_from_generator_images(
            images, self.normalize_method, crop=self.crop)
        return self.model(x, training=False)

    def _function(self, height: int, width: int):
        """One traced graph per image size, whatever the batch sizes."""
        key = (int(height), int(width))
        if key not in self._functions:
            self._functions[key] = tf.function(
                self._embed_batch,
                input_signature=[tf.TensorSpec([None, key[0], key[1], 3], tf.float32)])
        return self._functions[key]

    def embed(self, images) -> np.ndarray:
        x = _check_images(images)
        forward = self._function(x.shape[1], x.shape[2])
        out = [forward(tf.constant(x[i:i + self.batch_size])).numpy()
               for i in range(0, x.shape[0], self.batch_size)]
        if not out:
            return np.zeros([0, self.embedding_dim], np.float32)
        return _unit_rows(np.concatenate(out))


def dlib_available() -> bool:
    """True when ``dlib`` (the ``dlib-bin`` wheel) and ``face_recognition_models`` import."""
    return (importlib.util.find_spec("dlib") is not None
            and importlib.util.find_spec("face_recognition_models") is not None)


class DlibEmbedder(FaceEmbedder):
    """dlib's 128-d ResNet face descriptor (``face_recognition_model_v1``), L2-normalised.

    Args:
      box: (left, top, right, bottom) fractions of the image cut out before resizing to
        150x150 (dlib's chip size); the default ``(0, 0, 1, 1)`` is the whole image, the right
        input for faces that are already aligned crops (the corpus, HQ-VoxCeleb).
      normalize_method: the generator's image normalisation.
      num_jitters: dlib's test-time jitter count (0 = none, deterministic).
      processes: dlib's network runs in that many helper processes, each on a share of every
        batch (``dlib_recognizer.py``); default one per available core, 1 = in this process.
        The descriptors are the same either way.
      align: instead of ``box``, dlib's stock alignment: the picture upscaled as for face
        detection (``detection.FaceDetector``, 256 px bicubic), the best HOG face box (the
        whole picture when none is found), dlib's 5 landmarks in it, and the chip
        ``dlib.get_face_chip`` cuts from them (150 px, padding 0.25), the chip dlib's
        recogniser was trained on. What an outside check of an export would measure
        (``benchmarks/check_export.py``); on the demo's soft 64 px faces it ranks seeds
        differently from the whole picture (BUILD_NOTES.md, "Checked from outside").
    """

    CHIP_SIZE = dlib_recognizer.CHIP_SIZE
    #: dlib's default margin around the landmarks' face when it cuts an aligned chip.
    ALIGNED_PADDING = 0.25
    #: Descriptors kept by chip (``num_jitters=0`` only): an evaluation embeds the same
    #: picture many times (an untrained or collapsed model draws one face for every crop), and
    #: dlib's network is most of its time on 2 cores. About 0.6 KB per chip.
    CACHE_SIZE = 100_000

    def __init__(self, name: str = "dlib_resnet",
                 box: Sequence[float] = (0.0, 0.0, 1.0, 1.0),
                 normalize_method: str = "imagenet", num_jitters: int = 0,
                 batch_size: int = 64, processes: int | None = None, align: bool = False):
        if importlib.util.find_spec("dlib") is None:  # optional dependency (dlib-bin)
            raise ImportError("DlibEmbedder needs the dlib-bin and face_recognition_models "
                              "packages (pip install dlib-bin face_recognition_models)")
        self.name = name
        self.box = tuple(float(v) for v in box)
        self.normalize_method = normalize_method
        self.num_jitters = int(num_jitters)
        self.batch_size = int(batch_size)
        self.embedding_dim = 128
        dlib_model_path()  # a missing model file is reported here, not at the first batch
        self.align = bool(align)
        if self.align:
            import dlib  # noqa: PLC0415 - optional dependency, checked above
            self._detector = FaceDetector(normalize_method=normalize_method)
            self._landmarks = dlib.shape_predictor(
                dlib_model_path(dlib_recognizer.LANDMARK_MODEL))
        self.recognizer = DlibRecognizer(processes)
        # Chip bytes -> descriptor. Exact: with no jitter dlib's descriptor is a function of
        # the chip alone (jittered descriptors are random, so they are never kept).
        self._descriptors: dict[bytes, np.ndarray] = {}
        self.computed = 0  # chips dlib's network actually ran on (the rest came from the cache)

    def chips(self, images) -> np.ndarray:
        """The uint8 150x150 RGB chips dlib sees."""
        if self.align:
            return self._aligned_chips(images)
        pixels = normalized_to_uint8_np(_check_images(images), self.normalize_method)
        h, w = pixels.shape[1:3]
        left, top, right, bottom = self.box
        y0, y1 = int(round(top * h)), int(round(bottom * h))
        x0, x1 = int(round(left * w)), int(round(right * w))
        crop = pixels[:, y0:y1, x0:x1]
        resized = tf.image.resize(tf.constant(crop, tf.float32),
                                  (self.CHIP_SIZE, self.CHIP_SIZE), method="bilinear",
                                  antialias=True)
        return pixels_to_uint8_np(resized.numpy())

    def _aligned_chips(self, images) -> np.ndarray:
        import dlib  # noqa: PLC0415 - optional dependency, checked in __init__
        pictures = self._detector.prepare(_check_images(images))
        chips = []
        for picture, box in zip(pictures, self._detector.best_boxes(pictures)):
            h, w = picture.shape[:2]
            rect = dlib.rectangle(*(box or (0, 0, w - 1, h - 1)))
            picture = np.ascontiguousarray(picture)
            chips.append(dlib.get_face_chip(picture, self._landmarks(picture, rect),
                                            size=self.CHIP_SIZE,
                                            padding=self.ALIGNED_PADDING))
        if not chips:
            return np.zeros([0, self.CHIP_SIZE, self.CHIP_SIZE, 3], np.uint8)
        return np.stack(chips).astype(np.uint8)

    def embed(self, images) -> np.ndarray:
        x = _check_images(images)
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            chips = self.chips(x[i:i + self.batch_size])
            out.append(self._chip_descriptors(chips))
        if not out:
            return np.zeros([0, self.embedding_dim], np.float32)
        return _unit_rows(np.concatenate(out))

    def _chip_descriptors(self, chips: np.ndarray) -> np.ndarray:
        """[N, 150, 150, 3] uint8 chips -> [N, 128] float32 descriptors (not normalised); each
        distinct chip not seen before goes through dlib's network once."""
        if self.num_jitters:
            return self._compute(list(chips))
        keys = [c.tobytes() for c in chips]
        found, missing = {}, {}
        for key, chip in zip(keys, chips):
            if key in found or key in missing:
                continue
            cached = self._descriptors.get(key)
            if cached is None:
                missing[key] = chip
            else:
                found[key] = cached
        if missing:
            computed = dict(zip(missing, self._compute(list(missing.values()))))
            found.update(computed)
            if len(self._descriptors) + len(computed) > self.CACHE_SIZE:
                self._descriptors.clear()
            self._descriptors.update(computed)
        return np.stack([found[key] for key in keys])

    def _compute(self, chips: list) -> np.ndarray:
        self.computed += len(chips)
        return self.recognizer.compute(np.stack(chips), self.num_jitters)

    def close(self) -> None:
        """Ends dlib's helper processes (they also end with the embedder or the program)."""
        self.recognizer.close()
