"""Image value ranges: the one place that says how a face is scaled in each space it lives in.

Four spaces, each function named ``<from>_to_<to>``:

* **pixels**: RGB in [0, 255], uint8 (decoded PNGs) or float (the FaceNet chain's
  ``clip((x * std + mean) * 255)``, augmentation);
* **normalized**: the generator's space, ``(pixels / 255 - mean) / std`` with the reference's
  ``image_normalize_method`` ('imagenet', the default, or 'standard': mean = std = 0.5);
  real faces come out of the data pipelines in it and the generator draws in it;
* **unit**: RGB in [0, 1] float (the serving signatures' ``image``, TensorBoard pictures);
* **uint8**: what is written to PNG, shown or handed to dlib.

One rounding rule for every float -> uint8 conversion: clip to the range, then round half up
(``floor(x + 0.5)``). Before this module the evaluation pictures rounded half up and the
embedders (dlib chips, detection, attribute reader) and the serving PNG rounded half to even;
the two differ only at exact ``.5`` ties, which the evaluation report's pictures and the
results page compare against, so half up is the rule kept. The float computations are the
previous ones op for op (TF, float32), so every value that is not such a tie is unchanged,
and ``unit_to_uint8(normalized_to_unit(x))`` equals ``normalized_to_uint8(x)`` exactly (both
are ``floor(fl(v * 255) + 0.5)`` of the same clipped ``v``).

The TF functions work eagerly, under ``tf.function`` and inside a SavedModel (stock ops
only); the ``*_np`` functions take and return NumPy arrays for the evaluation and report
code. Top-level so that every sub-package (data, models, training, evaluation, serving,
curation) can import it without an import cycle. TensorFlow is imported inside the functions
that use it, so NumPy-only callers (the curation tools, uint8 detection inputs, TensorBoard
picture labelling) do not pay its start-up.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "STANDARD_MEAN", "STANDARD_STD",
           "NORMALIZATION_CONSTANTS", "normalization_constants", "pixels_to_normalized",
           "normalized_to_pixels", "normalized_to_unit", "unit_to_uint8", "pixels_to_uint8",
           "normalized_to_uint8_np", "unit_to_uint8_np", "pixels_to_uint8_np",
           "uint8_to_unit_np"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STANDARD_MEAN = (0.5, 0.5, 0.5)
STANDARD_STD = (0.5, 0.5, 0.5)
NORMALIZATION_CONSTANTS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "standard": (STANDARD_MEAN, STANDARD_STD),
}


def normalization_constants(normalize_method: str = "imagenet"):
    """``(mean, std)`` per RGB channel of ``normalize_method`` ('imagenet' or 'standard')."""
    try:
        return NORMALIZATION_CONSTANTS[normalize_method]
    except KeyError:
        raise ValueError(f"normalize_method must be one of {sorted(NORMALIZATION_CONSTANTS)}, "
                         f"got {normalize_method!r}") from None


def _tf():
    import tensorflow as tf  # noqa: PLC0415 - see the module docstring
    return tf


def _mean_std(normalize_method: str, dtype):
    tf = _tf()
    mean, std = normalization_constants(normalize_method)
    return tf.constant(mean, dtype), tf.constant(std, dtype)


# -- TensorFlow -----------------------------------------------------------------------------

def pixels_to_normalized(pixels, normalize_method: str = "imagenet"):
    """uint8 or [0, 255] float RGB -> the generator's space (float32),
    ``(pixels / 255 - mean) / std``."""
    tf = _tf()
    x = tf.cast(pixels, tf.float32) / 255.0
    mean, std = _mean_std(normalize_method, tf.float32)
    return (x - mean) / std


def normalized_to_pixels(images, normalize_method: str = "imagenet"):
    """Generator-space images -> float pixels in [0, 255], ``clip((x * std + mean) * 255)``,
    in the input's dtype (the reference's ``imagenet_deprocess`` before its uint8 cast).

    Differentiable except at the clip, where the gradient is zero as in PyTorch's ``clamp``:
    the FaceNet perceptual loss back-propagates through it.
    """
    tf = _tf()
    images = tf.convert_to_tensor(images)
    mean, std = _mean_std(normalize_method, images.dtype)
    pixels = (images * std + mean) * tf.constant(255.0, images.dtype)
    return tf.clip_by_value(pixels, tf.constant(0.0, images.dtype),
                            tf.constant(255.0, images.dtype))


def normalized_to_unit(images, normalize_method: str = "imagenet"):
    """Generator-space images -> RGB in [0, 1], ``clip(x * std + mean, 0, 1)``, in the input's
    dtype: the serving signatures' ``image`` output and the training pictures."""
    tf = _tf()
    images = tf.convert_to_tensor(images)
    mean, std = _mean_std(normalize_method, images.dtype)
    return tf.clip_by_value(images * std + mean, tf.constant(0.0, images.dtype),
                            tf.constant(1.0, images.dtype))


def pixels_to_uint8(pixels):
    """Float pixels (nominally [0, 255]) -> uint8: clip, round half up."""
    tf = _tf()
    pixels = tf.convert_to_tensor(pixels)
    clipped = tf.clip_by_value(pixels, tf.constant(0.0, pixels.dtype),
                               tf.constant(255.0, pixels.dtype))
    return tf.cast(tf.floor(clipped + tf.constant(0.5, pixels.dtype)), tf.uint8)


def unit_to_uint8(images):
    """[0, 1] RGB -> uint8: clip, scale by 255, round half up (the serving PNG)."""
    tf = _tf()
    images = tf.convert_to_tensor(images)
    clipped = tf.clip_by_value(images, tf.constant(0.0, images.dtype),
                               tf.constant(1.0, images.dtype))
    return pixels_to_uint8(clipped * tf.constant(255.0, images.dtype))


# -- NumPy ----------------------------------------------------------------------------------

def pixels_to_uint8_np(pixels) -> np.ndarray:
    """NumPy float pixels (nominally [0, 255]) -> uint8: clip, round half up."""
    x = np.asarray(pixels)
    if not np.issubdtype(x.dtype, np.floating):  # already whole numbers: nothing to round
        return np.clip(x, 0, 255).astype(np.uint8)
    # Computed in the input's precision: float32 arrays give what float32 TF code gave.
    return np.floor(np.clip(x, 0, 255) + x.dtype.type(0.5)).astype(np.uint8)


def unit_to_uint8_np(images) -> np.ndarray:
    """NumPy [0, 1] RGB -> uint8: clip, scale by 255, round half up."""
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return pixels_to_uint8_np(np.clip(x, 0, 1) * x.dtype.type(255))


def normalized_to_uint8_np(images, normalize_method: str = "imagenet") -> np.ndarray:
    """Generator-space images (array-like, computed in float32) -> uint8 RGB: the reference's
    ``imagenet_deprocess_batch`` with the module's rounding rule."""
    tf = _tf()
    pixels = normalized_to_pixels(tf.constant(np.asarray(images, np.float32)),
                                  normalize_method)
    return pixels_to_uint8_np(pixels.numpy())


def uint8_to_unit_np(pixels, dtype=np.float32) -> np.ndarray:
    """uint8 (or [0, 255]) RGB -> ``dtype`` (float32 by default) in [0, 1], ``pixels / 255``."""
    dtype = np.dtype(dtype)
    return np.asarray(pixels).astype(dtype) / dtype.type(255.0)
