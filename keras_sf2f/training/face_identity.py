"""The project's own face-identity network.

SF2F's perceptual loss and its evaluation need a face network. The reference uses FaceNet with
VGGFace2 weights, which cannot be downloaded here; for the embedded corpus the project trains
the small FaceNet variant (``FaceNet.small``: width x0.25, 1/2/1 residual blocks, 128-d
embedding) as an identity classifier on the prepared data's ``faceid`` split, whose identities
are disjoint from every voice-face identity (as VGGFace2 is disjoint from VoxCeleb).

What the network sees. Every training face is taken at the generator's resolution (64 or 128),
in the generator's ImageNet-normalised space, and goes through exactly the chain the
perceptual loss and the evaluation apply (``face_preprocessing.facenet_inputs_from_generator_
images``: denormalise, ``(x - 127.5) / 128``, VGG-box crop, 140x140 align-corners resize).
Light augmentation happens before that chain, on pixels: a random shift of up to
``max_shift`` of the image side (nearest-edge fill) and random brightness/contrast; all random
numbers are stateless functions of (seed, step), so a run is reproducible.

Objective. A normalised-softmax (cosine) classifier over the training identities on top of the
L2-normalised embedding: ``logits = s * (cos(e, w_c) - m * [c = y])`` with scale ``s`` and an
additive margin ``m`` (CosFace-style). The classifier weights are not part of the saved network:
only the FaceNet (trunk + ``last_linear`` + ``last_bn``) is, as the reference discards
FaceNet's logits too. A cosine classifier makes the embedding's *cosine* geometry the one that
separates identities, which is what the evaluation (cosine similarity, retrieval) measures.

Held-out check. Each faceid identity's last face (in image-id order) is never trained on; it
is the query in a 1-nearest-neighbour identification against the mean embedding of the
identity's other faces (the seed's ground-truth embedding). The same check runs on the
voice-face ``val``/``test`` splits, identities the network never saw: that is what evaluation
relies on.

Files: ``face_identity.weights.h5`` (Keras weights of the FaceNet) and ``face_identity.json``
(architecture arguments, input size and pre-processing, training settings, held-out results),
written and read by ``keras_sf2f.models.face_network`` (``load_face_network``, which training's
perceptual loss and the evaluation's embedder share).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

import keras

from keras_sf2f.data import table as table_lib
from keras_sf2f.evaluation import metrics
from keras_sf2f.evaluation.embedders import FaceNetEmbedder
from keras_sf2f.image_ranges import pixels_to_normalized
from keras_sf2f.models import face_preprocessing
from keras_sf2f.models.face_network import (FORMAT, INFO_FILE, WEIGHTS_FILE, build_face_network,
                                            load_face_network, save_face_network)
from keras_sf2f.models.facenet import FaceNet, trainable_parameter_count
from keras_sf2f.progress import Progress, format_duration
# The settings are declared in a module without TensorFlow, from which the tool's flags are
# derived; they are part of this module's interface all the same.
from keras_sf2f.training.face_identity_config import FaceIdentityConfig

__all__ = [
    "TRAIN_SPLIT", "CHECK_SPLITS", "FaceIdentityConfig", "FaceSet", "load_faces",
    "last_face_mask", "heldout_identification", "generator_space", "augment_pixels",
    "CosineSoftmaxHead", "evaluate_network", "train_face_identity",
    # The network's files, from keras_sf2f.models.face_network (also reachable here, where
    # the network is trained).
    "FORMAT", "INFO_FILE", "WEIGHTS_FILE", "build_face_network", "load_face_network",
    "save_face_network",
]

TRAIN_SPLIT = "faceid"
CHECK_SPLITS = ("val", "test")
# The generator's image normalisation: training faces are put in it before the input chain,
# and face_identity.json records it, by which the network's users read generator images. Not
# an option: a network trained in another space would misread every generated face.
NORMALIZE_METHOD = "imagenet"


# ------------------------------------------------------------------------------------------
# Faces in memory

@dataclasses.dataclass
class FaceSet:
    images: np.ndarray   # uint8 [F, S, S, 3], grouped by identity, image-id order inside
    labels: np.ndarray   # int64 [F]
    names: list          # identity names; label i is names[i]

    @property
    def num_identities(self) -> int:
        return len(self.names)


def load_faces(data_dir: str, split: str, image_size: int) -> FaceSet:
    """Every face of ``split`` at ``image_size`` as uint8 RGB, in the split table's order."""
    t = table_lib.load_split(data_dir, split, require_utterances=False)
    pngs = t.face_png[image_size].numpy()
    counts = t.id_face_count.numpy()
    labels = np.repeat(np.arange(t.num_identities, dtype=np.int64), counts)
    images = np.stack([tf.io.decode_png(p, channels=3).numpy() for p in pngs]) if len(pngs) \
        else np.zeros([0, image_size, image_size, 3], np.uint8)
    if images.shape[1:] != (image_size, image_size, 3):
        raise table_lib.DataError(f"{data_dir}: {split} faces at {image_size} px have shape "
                                  f"{images.shape[1:]}")
    return FaceSet(images, labels, list(t.names))


def last_face_mask(labels: np.ndarray) -> np.ndarray:
    """True for the last face of every identity that has at least two faces (the held-out
    query); identities with a single face have no query and keep it for training."""
    labels = np.asarray(labels)
    mask = np.zeros(labels.shape, bool)
    for n in np.unique(labels):
        idx = np.flatnonzero(labels == n)
        if idx.size >= 2:
            mask[idx[-1]] = True
    return mask


def heldout_identification(embeddings, labels) -> dict:
    """1-NN identity accuracy of each identity's last face against the (re-normalised) mean
    embedding of its other faces, by cosine similarity over all such identities.

    Returns ``accuracy``, ``chance`` (1 / identities), ``identities``, ``recall@5``
    (when there are >= 5 identities) and ``mean_true_cosine`` / ``mean_other_cosine``
    (cosine of a query to its own / to the other identities' means).
    Identities with fewer than two faces are left out.
    """
    emb = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels, np.int64)
    query_mask = last_face_mask(labels)
    ids = labels[query_mask]
    if ids.size < 2:
        raise ValueError("held-out identification needs >= 2 identities with >= 2 faces")
    remap = {int(n): i for i, n in enumerate(ids)}
    gallery_rows = np.flatnonzero(~query_mask & np.isin(labels, ids))
    gallery = metrics.ground_truth_embeddings(
        emb[gallery_rows], np.asarray([remap[int(n)] for n in labels[gallery_rows]]), ids.size)
    queries = emb[query_mask]
    ks = (1, 5) if ids.size >= 5 else (1,)
    rec = metrics.recall_at_k(queries, gallery, ks=ks)
    s = metrics.cosine_similarity_matrix(queries, gallery)
    own = np.diag(s)
    out = {"accuracy": rec["recall@1"], "chance": 1.0 / ids.size, "identities": int(ids.size),
           "mean_true_cosine": float(own.mean()),
           "mean_other_cosine": float((s.sum() - own.sum()) / (ids.size * (ids.size - 1)))}
    if "recall@5" in rec:
        out["recall@5"] = rec["recall@5"]
    return out


# ------------------------------------------------------------------------------------------
# Input chain

def generator_space(pixels: tf.Tensor, normalize_method: str = "imagenet") -> tf.Tensor:
    """uint8 or [0, 255] float RGB -> the generator's normalised space (``normalize_method``
    must be the one the chain after it denormalises with)."""
    return pixels_to_normalized(pixels, normalize_method)


def augment_pixels(pixels: tf.Tensor, seed: tf.Tensor, *, max_shift: float, brightness: float,
                   contrast: float) -> tf.Tensor:
    """Stateless light augmentation of float [B, S, S, 3] pixels in [0, 255]: an integer
    shift of up to ``max_shift * S`` px per axis (nearest-edge fill), contrast scaling around
    the image mean by ``1 +- contrast`` and a brightness offset of ``+- brightness * 255``."""
    b = tf.shape(pixels)[0]
    size = tf.cast(tf.shape(pixels)[1], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    x = pixels
    if max_shift > 0:
        limit = tf.floor(max_shift * size)
        shift = tf.round(tf.random.stateless_uniform([b, 2], seeds[0], -1.0, 1.0) * limit)
        ones, zeros = tf.ones([b]), tf.zeros([b])
        # output(y, x) = input(y + dy, x + dx): a translation by (-dx, -dy).
        transforms = tf.stack([ones, zeros, shift[:, 0], zeros, ones, shift[:, 1], zeros, zeros],
                              axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
            fill_value=0.0, interpolation="NEAREST", fill_mode="NEAREST")
    if contrast > 0:
        c = 1.0 + tf.random.stateless_uniform([b, 1, 1, 1], seeds[1], -contrast, contrast)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * c + mean
    if brightness > 0:
        x = x + 255.0 * tf.random.stateless_uniform([b, 1, 1, 1], seeds[2], -brightness,
                                                    brightness)
    return tf.clip_by_value(x, 0.0, 255.0)


# ------------------------------------------------------------------------------------------
# Classifier head (training only; not saved with the network)

class CosineSoftmaxHead(keras.layers.Layer):
    """``s * (cos(e, w_c) - m * onehot(y))``: normalised-softmax logits with an additive
    margin on the true class (only when labels are given, i.e. in training)."""

    def __init__(self, num_classes: int, scale: float = 16.0, margin: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.margin = float(margin)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(int(input_shape[-1]),
                                                            self.num_classes),
                                      initializer="glorot_normal", trainable=True)
        self.built = True

    def call(self, embeddings, labels=None):
        w = self.kernel / tf.maximum(tf.norm(self.kernel, axis=0, keepdims=True), 1e-12)
        e = embeddings / tf.maximum(tf.norm(embeddings, axis=1, keepdims=True), 1e-12)
        cos = tf.matmul(e, w)
        if labels is not None and self.margin:
            cos = cos - self.margin * tf.one_hot(labels, self.num_classes, dtype=cos.dtype)
        return self.scale * cos


class _WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak: float, warmup: int, total: int):
        self.peak, self.warmup, self.total = float(peak), int(warmup), int(total)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / max(self.warmup, 1)
        progress = tf.clip_by_value((step - self.warmup) / max(self.total - self.warmup, 1),
                                    0.0, 1.0)
        cos = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup, warm, cos)

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total}


# ------------------------------------------------------------------------------------------
# Training

def evaluate_network(model_or_embedder, faces: FaceSet,
                     normalize_method: str = "imagenet") -> dict:
    """``heldout_identification`` of ``faces`` with the embeddings of a FaceNet or of any
    ``keras_sf2f.evaluation.embedders.FaceEmbedder`` (e.g. the dlib one)."""
    embedder = (FaceNetEmbedder(model_or_embedder, normalize_method=normalize_method,
                                batch_size=128)
                if isinstance(model_or_embedder, FaceNet) else model_or_embedder)
    # The embedder denormalises with its own method: normalise with the same one.
    method = getattr(embedder, "normalize_method", normalize_method)
    return heldout_identification(
        embedder.embed(generator_space(faces.images, method).numpy()), faces.labels)


def train_face_identity(data_dir: str, output_dir: str | None, config: FaceIdentityConfig,
                        log: Callable[[str], None] = print,
                        check_splits: Sequence[str] = CHECK_SPLITS) -> tuple:
    """Trains the face-identity network on ``data_dir``'s faceid split; returns
    ``(model, info)`` and, with ``output_dir``, writes the weights and the JSON there.

    ``check_splits``: further splits (default val and test, when the data has them) whose
    faces are used for the held-out identification check after training.
    """
    config.validate()
    t_start = time.monotonic()
    faces = load_faces(data_dir, TRAIN_SPLIT, config.image_size)
    if faces.num_identities < 2:
        raise table_lib.DataError(f"{data_dir}: the faceid split has {faces.num_identities} "
                                  f"identities; the face-identity network needs at least 2")
    heldout = last_face_mask(faces.labels)
    train_idx = np.flatnonzero(~heldout)
    num_train = int(train_idx.size)
    batch = min(int(config.batch_size), num_train)
    log(f"face identity network: {faces.num_identities} identities, {num_train} training "
        f"faces, {int(heldout.sum())} held out, {config.image_size} px, {config.steps} steps "
        f"of {batch}")

    keras.utils.set_random_seed(config.seed)
    model = build_face_network(config.architecture())
    head = CosineSoftmaxHead(faces.num_identities, config.logit_scale, config.margin,
                             name="identity_head")
    head.build((None, config.embedding_dim))
    warmup = min(int(config.warmup_steps), int(config.steps) // 4)
    schedule = _WarmupCosine(config.learning_rate, warmup, config.steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                       weight_decay=config.weight_decay)
    variables = model.trainable_variables + head.trainable_variables
    optimizer.build(variables)  # create the slots before tracing (else traced twice)

    with tf.device("/cpu:0"):
        train_images = tf.Variable(faces.images[train_idx], trainable=False,
                                   name="faceid_images")
    train_labels = tf.constant(faces.labels[train_idx])
    per_epoch = max(num_train // batch, 1)

    @tf.function(reduce_retracing=True)
    def train_step(step):
        epoch = step // per_epoch
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(num_train, dtype=tf.int64),
            seed=tf.stack([tf.constant(config.seed, tf.int64), epoch]))
        idx = perm[(step % per_epoch) * batch:(step % per_epoch) * batch + batch]
        pixels = tf.cast(tf.gather(train_images, idx), tf.float32)
        labels = tf.gather(train_labels, idx)
        if config.augment:
            pixels = augment_pixels(
                pixels, tf.stack([tf.constant(config.seed + 1, tf.int64), step]),
                max_shift=config.max_shift, brightness=config.brightness,
                contrast=config.contrast)
        inputs = face_preprocessing.facenet_inputs_from_generator_images(
            generator_space(pixels, NORMALIZE_METHOD), NORMALIZE_METHOD)
        with tf.GradientTape() as tape:
            embedding = model(inputs, training=True)
            logits = head(embedding, labels)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=logits))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        # Accuracy without the margin (the plain cosine classifier).
        correct = tf.equal(tf.argmax(head(embedding), axis=1), labels)
        return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

    progress = Progress(config.steps, "face identity network", unit="steps", write=log)
    losses, accs = [], []
    t_train = time.monotonic()
    for step in range(config.steps):
        loss, acc = train_step(tf.constant(step, tf.int64))
        losses.append(float(loss))
        accs.append(float(acc))
        window = slice(max(0, len(losses) - 20), None)
        progress.update(1, extra=f"loss {np.mean(losses[window]):.3f}, "
                                 f"train acc {np.mean(accs[window]):.2f}")
    train_seconds = time.monotonic() - t_train

    embedder = FaceNetEmbedder(model, normalize_method=NORMALIZE_METHOD, batch_size=128)
    results = {TRAIN_SPLIT: evaluate_network(embedder, faces)}
    for split in check_splits:
        try:
            other = load_faces(data_dir, split, config.image_size)
        except table_lib.DataError as e:
            log(f"held-out check: skipping split {split!r} ({e})")
            continue
        try:
            results[split] = evaluate_network(embedder, other)
        except ValueError as e:
            log(f"held-out check: skipping split {split!r} ({e})")
    for split, r in results.items():
        log(f"held-out 1-NN identity accuracy on {split}: {r['accuracy']:.3f} "
            f"({r['identities']} identities, chance {r['chance']:.3f})")

    window = max(1, min(20, len(losses) // 4))  # mean loss over the first / last steps
    first = float(np.mean(losses[:window]))
    last = float(np.mean(losses[-window:]))
    info = {
        "architecture": config.architecture(),
        "trainable_parameters": trainable_parameter_count(model),
        "image_size": int(config.image_size),
        "input": {"space": "generator images, ImageNet-normalised",
                  "normalize_method": NORMALIZE_METHOD, "crop": "vgg_box",
                  "size": face_preprocessing.FACENET_INPUT_SIZE,
                  "chain": "face_preprocessing.facenet_inputs_from_generator_images"},
        "training": {"steps": int(config.steps), "batch_size": batch,
                     "learning_rate": config.learning_rate, "warmup_steps": warmup,
                     "weight_decay": config.weight_decay, "logit_scale": config.logit_scale,
                     "margin": config.margin, "augment": bool(config.augment),
                     "seed": int(config.seed), "identities": faces.num_identities,
                     "training_faces": num_train, "loss_window": window, "loss_start": first,
                     "loss_end": last, "train_accuracy_end": float(np.mean(accs[-window:])),
                     "train_seconds": round(train_seconds, 1),
                     "total_seconds": round(time.monotonic() - t_start, 1)},
        "heldout": results,
        "data_dir": os.path.abspath(data_dir),
    }
    if output_dir:
        path = save_face_network(model, info, output_dir)
        log(f"wrote {path} and {WEIGHTS_FILE} (training {format_duration(train_seconds)})")
    return model, info
