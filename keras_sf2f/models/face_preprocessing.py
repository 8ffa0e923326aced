"""The reference's pre-processing of generator-space images for FaceNet, in stock TF ops.

SF2F feeds both generated and real faces to FaceNet through the same chain, for the
perceptual loss and for the evaluation embeddings:

1. ``image_ranges.normalized_to_pixels``: undo the ImageNet normalisation, ``clip((x * std +
   mean) * 255, 0, 255)`` -- differentiable except at the clip, where the gradient is zero as
   in PyTorch's ``clamp``;
2. ``fixed_image_standardization``: ``(x - 127.5) / 128``;
3. ``crop_vgg_box``: the average VGGFace2 face box (left, top, right, bottom) = (0.235, 0.195,
   0.765, 0.915) of the image, with Python ``int()``-truncated pixel bounds, both ends
   inclusive: 64x64 -> rows 12..58, cols 15..48 (47x34); 128x128 -> rows 24..117, cols 30..97
   (94x68);
4. ``resize_bilinear_align_corners`` to 140x140: PyTorch's ``nn.UpsamplingBilinear2d``, i.e.
   bilinear with ``align_corners=True`` (the aspect ratio is not preserved).

``facenet_inputs_from_generator_images`` chains them. Everything is NHWC, works eagerly, under
``tf.function`` and inside a SavedModel (the resize is TF's own ``ResizeBilinear`` kernel with
``align_corners=True``, which has a registered gradient).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from keras_sf2f.image_ranges import normalized_to_pixels

# (left, top, right, bottom) as fractions of the image width / height (reference VGG_BOX).
VGG_BOX = (0.235, 0.195, 0.765, 0.915)
FACENET_INPUT_SIZE = 140


def fixed_image_standardization(pixels):
    """FaceNet's input standardisation, ``(pixels - 127.5) / 128``."""
    pixels = tf.convert_to_tensor(pixels)
    return (pixels - tf.constant(127.5, pixels.dtype)) / tf.constant(128.0, pixels.dtype)


def vgg_box_bounds(height: int, width: int, box: Sequence[float] = VGG_BOX):
    """Inclusive pixel bounds ``(top, bottom, left, right)`` of ``box`` in an image of the given
    size, truncated with ``int()`` like the reference."""
    left, top, right, bottom = box
    return int(top * height), int(bottom * height), int(left * width), int(right * width)


def crop_vgg_box(images, box: Sequence[float] = VGG_BOX):
    """Crops the VGG face box out of NHWC images: rows ``top..bottom``, cols ``left..right``
    inclusive (the reference's ``imgs[:, :, top:bottom+1, left:right+1]``)."""
    images = tf.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    if height is not None and width is not None:
        top, bottom, left, right = vgg_box_bounds(int(height), int(width), box)
        return images[:, top:bottom + 1, left:right + 1, :]
    # Unknown spatial size at trace time: the same truncation in graph ops (all values >= 0,
    # so a float->int cast truncates exactly like int()).
    shape = tf.shape(images)
    h = tf.cast(shape[1], tf.float64)
    w = tf.cast(shape[2], tf.float64)
    left, top, right, bottom = (tf.constant(v, tf.float64) for v in box)
    top_i = tf.cast(top * h, tf.int32)
    bottom_i = tf.cast(bottom * h, tf.int32)
    left_i = tf.cast(left * w, tf.int32)
    right_i = tf.cast(right * w, tf.int32)
    return images[:, top_i:bottom_i + 1, left_i:right_i + 1, :]


def resize_bilinear_align_corners(images, size):
    """Bilinear resize with ``align_corners=True`` (PyTorch ``nn.UpsamplingBilinear2d`` /
    ``F.interpolate(mode='bilinear', align_corners=True)``): output pixel i samples input
    coordinate ``i * (in - 1) / (out - 1)``.

    ``size`` is an int or (height, width). Returns the input dtype (the kernel computes in
    float32).
    """
    images = tf.convert_to_tensor(images)
    if isinstance(size, int):
        size = (size, size)
    size = tf.constant([int(size[0]), int(size[1])], tf.int32)
    out = tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=True,
                                    half_pixel_centers=False)
    return tf.cast(out, images.dtype) if out.dtype != images.dtype else out


def facenet_inputs_from_generator_images(images, normalize_method: str = "imagenet",
                                         crop: bool = True,
                                         size: int = FACENET_INPUT_SIZE):
    """Generator-space (normalised) NHWC faces -> FaceNet inputs (B, size, size, 3): denormalise,
    standardise, crop the VGG box (unless ``crop=False``), resize with align_corners."""
    x = fixed_image_standardization(normalized_to_pixels(images, normalize_method))
    if crop:
        x = crop_vgg_box(x)
    return resize_bilinear_align_corners(x, size)
