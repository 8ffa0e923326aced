"""SF2F's training losses (those of the PyTorch reference) as pure functions of tensors.

Convention: every loss returns a **per-example** vector ``[B]`` (the mean over that example's
pixels, patch logits or features), computed in float32 whatever the input dtype. The mean of
the vector over the batch is the reference's value (its means run over the whole batch, and
every example has the same number of elements), and the trainer averages over the *global*
batch with :func:`average_over_global_batch` (``tf.nn.compute_average_loss``), so losses and
gradients do not depend on how the batch is split across replicas.

* :func:`bce_with_logits` -- ``mean(max(x,0) - x*t + log(1 + exp(-|x|)))`` over all logits of
  an example (the reference's stable BCE-with-logits; patch maps included);
* :func:`generator_gan_loss` / :func:`discriminator_gan_loss` -- the non-saturating 'gan'
  objectives: ``bce(s_fake, 1)`` and ``bce(s_real, 1) + bce(s_fake, 0)``;
* :func:`identity_cross_entropy` -- softmax cross-entropy of identity logits (AC loss);
* :func:`l1_pixel_loss` -- mean absolute difference in the ImageNet-normalised image space;
* :func:`image_gradient_l1_loss` -- the same on neighbouring pixels' differences (not in the
  reference: the demo's ``--gradient_l1_weight`` lever);
* :func:`downsample_nearest` -- the reference's ``F.interpolate(scale_factor=0.5, 'nearest')``
  targets for lower output resolutions: ``x[:, ::f, ::f]``;
* :func:`face_features` / :func:`perceptual_loss` / :func:`facenet_perceptual_loss` -- the
  FaceNet perceptual loss: both images through denormalise + clamp, FaceNet's
  standardisation, the VGG face-box crop and the 140x140 align-corners resize, then
  ``sum_k w_k * mean|f_k(fake) - f_k(real)|`` over ``repeat_1, repeat_2, repeat_3`` and the
  embedding with ``w = (1/16, 1/8, 1/4, 1)``; real features under ``stop_gradient``;
* :func:`binary_accuracy` / :func:`identity_accuracy` -- discriminator accuracies (monitoring).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from keras_sf2f.models.face_preprocessing import facenet_inputs_from_generator_images

# The reference's weights of the hidden states repeat_1, repeat_2, repeat_3 and the embedding.
PERCEPTUAL_LAYER_WEIGHTS = (1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0, 1.0)


def _per_example_mean(x) -> tf.Tensor:
    """[B, ...] -> [B]: mean over every axis but the first (float32)."""
    x = tf.cast(x, tf.float32)
    if x.shape.rank == 1:
        return x
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def bce_with_logits(logits, target: float) -> tf.Tensor:
    """Binary cross-entropy with logits against a constant target, per example: ``[B, ...] ->
    [B]``, ``mean(max(x, 0) - x*t + log(1 + exp(-|x|)))`` over the example's logits."""
    x = tf.cast(logits, tf.float32)
    t = tf.constant(float(target), tf.float32)
    loss = tf.maximum(x, 0.0) - x * t + tf.math.log1p(tf.exp(-tf.abs(x)))
    return _per_example_mean(loss)


def generator_gan_loss(fake_logits) -> tf.Tensor:
    """Non-saturating generator loss ``bce(D(fake), 1)``, per example."""
    return bce_with_logits(fake_logits, 1.0)


def discriminator_gan_loss(real_logits, fake_logits) -> tf.Tensor:
    """``bce(D(real), 1) + bce(D(fake), 0)``, per example (the reference's sum of two means)."""
    return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)


def identity_cross_entropy(logits, labels) -> tf.Tensor:
    """Softmax cross-entropy of identity logits ``[B, N]`` against integer labels ``[B]``."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int64), logits=tf.cast(logits, tf.float32))


def l1_pixel_loss(predicted, target) -> tf.Tensor:
    """``mean|predicted - target|`` per example (ImageNet-normalised space)."""
    return _per_example_mean(tf.abs(tf.cast(predicted, tf.float32) -
                                    tf.cast(target, tf.float32)))


def image_gradient_l1_loss(predicted, target) -> tf.Tensor:
    """``mean|d predicted - d target|`` per example over the horizontal and vertical forward
    differences of neighbouring pixels (the gradient difference loss of Mathieu et al.,
    2016, with exponent 1). Under uncertainty L1 on pixels draws the per-pixel median, which
    keeps edges that sit in the same place in every face (eyes, brows, mouth) only as
    strongly as the median of their contrast; this term asks for the median *edge* instead,
    and it penalises texture (mottling) that no real face has at that place."""
    predicted = tf.cast(predicted, tf.float32)
    target = tf.cast(target, tf.float32)

    def differences(x):
        return x[:, 1:, :, :] - x[:, :-1, :, :], x[:, :, 1:, :] - x[:, :, :-1, :]

    (p_rows, p_cols), (t_rows, t_cols) = differences(predicted), differences(target)
    return (_per_example_mean(tf.abs(p_rows - t_rows))
            + _per_example_mean(tf.abs(p_cols - t_cols)))


def downsample_nearest(images, size: int) -> tf.Tensor:
    """Nearest-neighbour downsample of NHWC images to ``size`` px by taking every f-th row and
    column starting at 0 (PyTorch ``F.interpolate(scale_factor=1/f, mode='nearest')``)."""
    height = images.shape[1]
    if height is None:
        raise ValueError("downsample_nearest needs a static image size")
    if height == size:
        return images
    if height % size:
        raise ValueError(f"cannot nearest-downsample {height}px images to {size}px")
    factor = height // size
    return images[:, ::factor, ::factor, :]


def face_features(face_network, images, normalize_method: str = "imagenet") -> list:
    """The perceptual loss's features of generator-space images: the four hidden states
    ``[repeat_1, repeat_2, repeat_3, embedding]`` of ``face_network`` (a FaceNet, inference
    mode) after the reference pre-processing chain."""
    inputs = facenet_inputs_from_generator_images(tf.cast(images, tf.float32), normalize_method)
    return list(face_network(inputs, training=False, return_hidden_states=True))


def perceptual_loss(fake_features: Sequence, real_features: Sequence,
                    layer_weights: Sequence[float] = PERCEPTUAL_LAYER_WEIGHTS) -> tf.Tensor:
    """``sum_k w_k * mean|fake_k - real_k|`` per example; real features get ``stop_gradient``.
    Layers with weight <= 0 are skipped."""
    if not len(fake_features) == len(real_features) == len(layer_weights):
        raise ValueError(f"need one weight per feature: {len(fake_features)} fake, "
                         f"{len(real_features)} real features, {len(layer_weights)} weights")
    total = None
    for weight, fake, real in zip(layer_weights, fake_features, real_features):
        if weight <= 0:
            continue
        real = tf.stop_gradient(tf.cast(real, tf.float32))
        term = float(weight) * _per_example_mean(tf.abs(tf.cast(fake, tf.float32) - real))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("every perceptual layer weight is <= 0")
    return total


def facenet_perceptual_loss(face_network, fake_images, real_images,
                            layer_weights: Sequence[float] = PERCEPTUAL_LAYER_WEIGHTS,
                            normalize_method: str = "imagenet",
                            real_features: Sequence | None = None) -> tf.Tensor:
    """FaceNet perceptual loss between generated and real generator-space images,
    per example. ``real_features``: ``face_features`` of ``real_images`` when the caller has
    them already (then the real faces do not go through the network again)."""
    if real_features is None:
        real_features = face_features(face_network, tf.stop_gradient(real_images),
                                      normalize_method)
    real = [tf.stop_gradient(f) for f in real_features]
    fake = face_features(face_network, fake_images, normalize_method)
    return perceptual_loss(fake, real, layer_weights)


def binary_accuracy(logits, target: float) -> tf.Tensor:
    """Fraction of an example's logits on the ``target`` side of 0 (target 1: logit > 0)."""
    x = tf.cast(logits, tf.float32)
    hit = x > 0.0 if target >= 0.5 else x <= 0.0
    return _per_example_mean(tf.cast(hit, tf.float32))


def identity_accuracy(logits, labels) -> tf.Tensor:
    """1.0 where the arg-max identity is the label, per example."""
    predicted = tf.argmax(tf.cast(logits, tf.float32), axis=-1, output_type=tf.int64)
    return tf.cast(tf.equal(predicted, tf.cast(labels, tf.int64)), tf.float32)


def average_over_global_batch(per_example, global_batch_size: int) -> tf.Tensor:
    """Sum of ``per_example`` divided by the global batch size; summing the replicas' results
    gives the global-batch mean. The arithmetic of ``tf.nn.compute_average_loss``, without its
    graph-side checks of the (Python) batch size: those Assert ops and their string constants
    are host-only ops in every step (checked here once instead)."""
    if int(global_batch_size) < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    return tf.math.divide_no_nan(tf.reduce_sum(tf.cast(per_example, tf.float32)),
                                 tf.constant(float(global_batch_size), tf.float32))
