"""An attribute reader: what do the generated faces show of the identity's known attributes?

Recall says whether a face is nearer its own identity than others; it does not say *what* the
face got right. The procedural corpus knows every identity's latent attributes
(``keras_sf2f/data/corpus/attributes.py``), so the evaluation trains a small reader, a CNN
that maps a face to those attributes, and asks how well its readings of the generated faces
follow the identities' true attributes.

Training data: the face-only ``faceid`` identities' photos (identities no voice-face model
ever sees, the same ones the face-identity network is trained on) with their attributes from
``identity_attributes(seed, identity)``; never a voice-face identity. A faceid name maps to
its corpus identity through the identity range recorded in ``dataset.json``
(``oracle.procedural_identities``). The photos are augmented with blurred copies (down to 16
and 32 px and back up) so that a blurry but faithful generated face is read like a sharp one:
the question is what the face shows, not how sharp it is.

Figures, per run over the N identities of the evaluated split (one face each):

* ``attribute_r_<attribute>``: Pearson correlation between the reader's prediction on the
  generated face and the identity's true attribute (0 when the predictions do not vary, e.g. a
  collapsed generator: a constant carries no information; "do not vary" means a spread below
  ``MIN_SPREAD``, 1 %, of the attribute's spread among the reader's training identities,
  which is what faces differing only by pixel rounding give);
* ``attribute_gender_accuracy``: fraction of identities whose predicted gender factor has the
  true sign (chance about 0.5 on the corpus's balanced split);
* ``attribute_r_shared_mean`` / ``attribute_r_face_only_mean``: means of ``r`` over the
  voice-linked attributes and over the face-only controls.

Every key starts with ``attribute_`` so that the figures are easy to find among the others in
``metrics.json`` (``face_figures``) and TensorBoard (``Validation_faces/``).

Read on the ground-truth photos the figures are the reader's ceiling; on the voice-attribute
oracle's voice-only faces they are the most a voice can give; the face-only attributes are the control: no voice
carries them, so a voice model (and the oracle, which takes them from another identity) should
sit near 0 there. With N = 50 an r below about 0.28 is not distinguishable from 0 at the 5 %
level, which is why the report calls an attribute *carried* from r >= 0.3.

VoxCeleb data has no latent attributes; its meta CSVs have a Gender column (m/f), recorded at
preparation in ``identity_attributes.json`` (``keras_sf2f/data/prepare.py``; for data prepared
earlier it is read from the meta CSVs under the ``root`` recorded in ``dataset.json``). There
the reader learns gender only, from the ``faceid`` split's photos when the data has one, else
from the training split's photos (identities disjoint from the evaluated split, but seen by
the generator's training; the report says so).
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["SHARED", "FACE_ONLY", "APPEARANCE", "READ_ATTRIBUTES", "CARRIED_R", "WEAK_R",
           "MIN_SPREAD",
           "AttributeReader", "reader_for_split", "procedural_attributes", "voxceleb_genders",
           "attribute_group", "IDENTITY_ATTRIBUTES_FILE"]

#: Voice-linked latent attributes (attributes.SHARED_FIELDS).
SHARED = ("gender", "age", "size", "weight", "accent", "breathiness")
#: Face-only latent attributes: the control (attributes.FACE_ONLY_FIELDS).
FACE_ONLY = ("eye_spacing", "hair_volume", "nose_width")
#: Appearance details derived from shared factors plus the identity's own randomness.
APPEARANCE = ("skin_tone", "hair_length", "greyness", "beard", "baldness", "brow_thickness")
READ_ATTRIBUTES = SHARED + FACE_ONLY + APPEARANCE
#: r from which the report says a face "carries" an attribute (module docstring), and below
#: which (down to WEAK_R) it says "weakly".
CARRIED_R = 0.3
WEAK_R = 0.15
#: Written by keras_sf2f/data/prepare.py for VoxCeleb: {"gender": {identity name: +1 | -1}}.
IDENTITY_ATTRIBUTES_FILE = "identity_attributes.json"
#: Readings whose spread over the identities is below this fraction of the attribute's spread
#: among the reader's training identities count as constant (r = 0). Measured on the demo
#: corpus: a face copied 50 times with 1 % of its pixels moved by one level spreads the
#: readings by 0.04-0.17 % of the attribute's spread; real faces mixed 90 % towards the mean
#: face still spread them by 4-17 % (and are read at r 0.3-0.97).
MIN_SPREAD = 0.01
#: The reader's input side; larger faces are downsampled (area) to it.
READER_SIZE = 64


def attribute_group(name: str) -> str:
    if name in SHARED:
        return "voice-linked"
    if name in FACE_ONLY:
        return "face-only (control)"
    return "appearance"


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf  # noqa: PLC0415
    x = np.asarray(images, np.float32)
    if x.shape[1:3] == (size, size):
        return x
    return tf.image.resize(x, (size, size), method="area").numpy()


def _blurred(images: np.ndarray, side: int) -> np.ndarray:
    """Down to ``side`` px (antialiased) and back up (bilinear): the softness of a generated
    face that got the layout right and the detail wrong."""
    import tensorflow as tf  # noqa: PLC0415
    size = images.shape[1]
    small = tf.image.resize(images, (side, side), method="area")
    return tf.image.resize(small, (size, size), method="bilinear").numpy()


def _quantised(images) -> np.ndarray:
    """Generator-space float32 images of the uint8 pictures ``images`` are (or become)."""
    from keras_sf2f.evaluation.detection import to_uint8_images  # noqa: PLC0415
    from keras_sf2f.image_ranges import pixels_to_normalized  # noqa: PLC0415
    return pixels_to_normalized(to_uint8_images(images)).numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    # A constant prediction (e.g. a collapsed generator) carries no information: 0, not NaN.
    # "Constant" up to float noise: identical inputs at different batch positions can come
    # out of the CPU kernels a few ulps apart, which would otherwise correlate at random.
    scale = max(1.0, float(np.abs(a).max(initial=0.0)))
    if a.std() <= 1e-6 * scale or b.std() == 0.0:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


class AttributeReader:
    """A small CNN from a generator-space face to standardised attributes.

    Use ``AttributeReader.train``; ``predict`` returns attributes in their own units.
    """

    def __init__(self, names, model, mean, std):
        self.names = tuple(names)
        self.model = model
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)

    @staticmethod
    def build(num_outputs: int):
        import keras  # noqa: PLC0415
        from keras import layers  # noqa: PLC0415
        # Four stride-2 convolutions to a 4x4 map and a dense head: position matters (hair
        # reaching the shoulders, a beard below the mouth), so no global pooling. ~130k
        # parameters, a few seconds per epoch of 7,500 faces on 2 cores.
        inputs = keras.Input((READER_SIZE, READER_SIZE, 3))
        x = inputs
        for filters in (16, 32, 64, 64):
            x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.Flatten()(x)
        x = layers.Dense(64, activation="relu")(x)
        outputs = layers.Dense(num_outputs)(x)
        return keras.Model(inputs, outputs, name="attribute_reader")

    @classmethod
    def train(cls, faces: np.ndarray, targets: dict, *, seed: int = 0, epochs: int = 6,
              batch_size: int = 64, learning_rate: float = 2e-3) -> "AttributeReader":
        """Trains on generator-space ``faces`` ``[F, H, W, 3]`` and ``targets`` ``{name: [F]}``.

        Every face is seen sharp and blurred to 16 and 32 px, ``epochs`` times, with Adam on the
        mean squared error of standardised targets (each attribute weighs the same).
        """
        import keras  # noqa: PLC0415

        from keras_sf2f.models.builder import seeded_initialisation  # noqa: PLC0415
        names = tuple(targets)
        if not names:
            raise ValueError("no attributes to learn")
        y = np.stack([np.asarray(targets[n], np.float64) for n in names], axis=1)
        if len(y) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(y)} target rows")
        mean, std = y.mean(0), np.maximum(y.std(0), 1e-6)
        x = _resize(faces, READER_SIZE)
        x = np.concatenate([x, _blurred(x, 32), _blurred(x, 16)])
        z = np.tile((y - mean) / std, (3, 1)).astype(np.float32)
        # Seeded for a reproducible reader, without moving the evaluation's other streams.
        with seeded_initialisation(seed):
            model = cls.build(len(names))
            model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
            model.fit(x, z, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
        return cls(names, model, mean, std)

    def predict(self, images) -> dict:
        """``{name: [B]}`` predictions, in the attributes' own units, from uint8 or
        generator-space images. Float images are read as the 8-bit pictures they become
        (rounded like every saved face): sub-quantum differences between the outputs of a
        collapsed generator are invisible and must not read as information."""
        x = _resize(_quantised(images), READER_SIZE)
        # Direct calls, not Model.predict: predict builds a data pipeline per call, which
        # costs more than the forward pass on the 50 faces of a run.
        z = np.concatenate([np.asarray(self.model(x[i:i + 256], training=False))
                            for i in range(0, len(x), 256)] or [np.zeros((0, len(self.names)))]
                           ).astype(np.float64)
        y = z * self.std + self.mean
        return {n: y[:, i] for i, n in enumerate(self.names)}

    def figures(self, images, targets: dict) -> dict:
        """The module docstring's figures of one face per identity against ``targets``
        (``{name: [N]}`` true attributes of the same identities)."""
        pred = self.predict(images)
        out = {}
        for i, name in enumerate(self.names):
            if name in targets:
                # Readings that barely vary are pixel rounding, not a visible attribute: a
                # generator whose faces differ only by a few +-1 levels moves the reading by
                # ~0.1 % of the attribute's spread, and r of such noise is anything.
                visible = pred[name].std() >= MIN_SPREAD * self.std[i]
                out[f"attribute_r_{name}"] = _pearson(pred[name], targets[name]) if visible else 0.0
        if "gender" in pred and "gender" in targets:
            out["attribute_gender_accuracy"] = float(np.mean(np.sign(pred["gender"])
                                                   == np.sign(targets["gender"])))
        for group, members in (("shared", SHARED), ("face_only", FACE_ONLY)):
            rs = [out[f"attribute_r_{n}"] for n in members if f"attribute_r_{n}" in out]
            if len(rs) > 1:
                out[f"attribute_r_{group}_mean"] = float(np.mean(rs))
        return out


def procedural_attributes(seed: int, identities, names=READ_ATTRIBUTES) -> dict:
    """``{name: [len(identities)]}`` latent attributes of corpus identities."""
    from keras_sf2f.data.corpus.attributes import identity_attributes  # noqa: PLC0415
    rows = [identity_attributes(seed, int(i)) for i in identities]
    return {n: np.array([float(getattr(a, n)) for a in rows]) for n in names}


def voxceleb_genders(data_dir: str) -> dict | None:
    """``{identity name: +1.0 (m) | -1.0 (f)}`` for prepared VoxCeleb data, from
    ``identity_attributes.json`` or, for data prepared before that file existed, from the meta
    CSVs under the root recorded in ``dataset.json``; ``None`` when neither is available."""
    path = os.path.join(data_dir, IDENTITY_ATTRIBUTES_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            genders = json.load(f).get("gender")
        return {k: float(v) for k, v in genders.items()} if genders else None
    info_path = os.path.join(data_dir, "dataset.json")
    if not os.path.isfile(info_path):
        return None
    with open(info_path) as f:
        source = json.load(f).get("source", {})
    root = source.get("root")
    if source.get("kind") != "voxceleb" or not root or not os.path.isdir(root):
        return None
    from keras_sf2f.data.prepare import voxceleb_genders as read  # noqa: PLC0415
    return read(root) or None


def _faces(data_dir: str, split: str):
    """``(faces [F, 64, 64, 3] generator space, labels [F], names)`` of a split."""
    from keras_sf2f.data import pipelines, table  # noqa: PLC0415
    t = table.load_split(data_dir, split, require_utterances=False)
    faces, labels = zip(*pipelines.faces_dataset(t, image_size=READER_SIZE)
                        .as_numpy_iterator())
    return np.stack(faces), np.asarray(labels), list(t.names)


def reader_for_split(data_dir: str, split: str, names, *, seed: int = 0,
                     epochs: int = 6) -> tuple:
    """``(reader, targets, note)``: a reader trained for this data and the evaluated split's
    true attributes ``{name: [N]}`` in label order; ``(None, None, note)`` when the data has
    no attributes. ``note`` says what the reader was trained on (or why there is none)."""
    from keras_sf2f.data import records  # noqa: PLC0415
    from keras_sf2f.evaluation import oracle  # noqa: PLC0415
    splits = records.read_json(os.path.join(data_dir, records.SPLITS_FILE))
    info = oracle.procedural_identities(data_dir, split, names)
    if info is not None:
        if "faceid" not in splits:
            return None, None, "No attribute reader: the corpus has no faceid split."
        faces, labels, faceid_names = _faces(data_dir, "faceid")
        faceid = oracle.procedural_identities(data_dir, "faceid", faceid_names)
        per_identity = procedural_attributes(faceid["seed"], faceid["identities"])
        reader = AttributeReader.train(faces, {n: v[labels] for n, v in per_identity.items()},
                                       seed=seed, epochs=epochs)
        targets = procedural_attributes(info["seed"], info["identities"])
        return reader, targets, (
            f"Attribute reader: trained on the {len(faceid_names)} face-only (faceid) "
            f"identities' {len(faces)} photos and their latent attributes, never on a "
            f"voice-face identity ({epochs} epochs, sharp and blurred copies; "
            f"keras_sf2f/evaluation/attribute_reader.py).")
    genders = voxceleb_genders(data_dir)
    if not genders:
        return None, None, ("No attribute reader: the data has no latent attributes and no "
                            "recorded gender (VoxCeleb meta CSV).")
    missing = [n for n in names if n not in genders]
    if missing:
        return None, None, (f"No attribute reader: {len(missing)} identities of split "
                            f"{split!r} have no recorded gender (e.g. {missing[0]}).")
    source = "faceid" if "faceid" in splits else "train"
    faces, labels, train_names = _faces(data_dir, source)
    known = np.array([n in genders for n in train_names])
    keep = known[labels]
    gender = np.array([genders.get(n, 0.0) for n in train_names])
    if keep.sum() < 4 or len(set(gender[known])) < 2:
        return None, None, (f"No attribute reader: the {source} split has too few photos "
                            f"with a recorded gender of both kinds.")
    reader = AttributeReader.train(faces[keep], {"gender": gender[labels[keep]]}, seed=seed,
                                   epochs=epochs)
    targets = {"gender": np.array([genders[n] for n in names])}
    where = ("the face-only (faceid) identities" if source == "faceid" else
             "the training split's identities (no faceid split: identities disjoint from "
             "the evaluated split, but seen by the generator's training)")
    return reader, targets, (
        f"Attribute reader: gender only (meta CSV Gender column, +1 m / -1 f), trained on "
        f"{int(keep.sum())} photos of {where}.")
