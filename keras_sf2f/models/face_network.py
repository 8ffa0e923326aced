"""The face network's files: writing and reading the project's face-identity network.

Training's perceptual loss (``keras_sf2f.training``) and the evaluation's embedder
(``keras_sf2f.evaluation.embedders``) both load the face network, so loading lives here, below
both; ``keras_sf2f.training.face_identity`` trains the network and writes it with
:func:`save_face_network`.

Files: ``face_identity.weights.h5`` (Keras weights of the FaceNet) and ``face_identity.json``
(architecture arguments, input size and pre-processing, training settings, held-out results).
:func:`load_face_network` reads exactly these; nothing is unpickled. A ``.keras`` file holding a
``FaceNet`` (e.g. VGGFace2 weights converted by export/import_facenet_weights.py) is read too.
"""

from __future__ import annotations

import json
import os

import keras

from keras_sf2f import files
from keras_sf2f.models import face_preprocessing
from keras_sf2f.models.facenet import FaceNet

WEIGHTS_FILE = "face_identity.weights.h5"
INFO_FILE = "face_identity.json"
FORMAT = "keras_sf2f.face_identity/1"


def build_face_network(architecture: dict) -> FaceNet:
    """A built FaceNet (no logits head) from the JSON's ``architecture`` arguments."""
    model = FaceNet(num_classes=None, **architecture)
    model.build((None, face_preprocessing.FACENET_INPUT_SIZE,
                 face_preprocessing.FACENET_INPUT_SIZE, 3))
    return model


def save_face_network(model: FaceNet, info: dict, output_dir: str) -> str:
    """Writes ``face_identity.weights.h5`` and ``face_identity.json``; returns the JSON path."""
    os.makedirs(output_dir, exist_ok=True)
    weights = os.path.join(output_dir, WEIGHTS_FILE)
    # Keras refuses a weights file name that does not end in .weights.h5.
    with files.atomic_path(weights, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    info = dict(info, format=FORMAT, weights_file=WEIGHTS_FILE)
    path = os.path.join(output_dir, INFO_FILE)
    files.write_json(path, info)
    return path


def _resolve(path: str) -> str:
    """The JSON path from a directory, the JSON or the weights file."""
    if os.path.isdir(path):
        json_path = os.path.join(path, INFO_FILE)
    elif path.endswith(".weights.h5"):
        json_path = path[:-len(".weights.h5")] + ".json"
    else:
        json_path = path
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"no face-identity network description at {json_path} "
                                f"(expected {INFO_FILE} next to {WEIGHTS_FILE}, written by "
                                f"trainers/train_face_identity.py)")
    return json_path


def load_face_network(path: str) -> tuple:
    """Loads a network written by ``save_face_network``: ``(FaceNet, info dict)``.

    ``path`` is the output directory, its ``face_identity.json`` or its
    ``face_identity.weights.h5``. The model is built for 140x140 inputs in FaceNet's
    standardised space (``info['input']`` says how to get there from generator images).

    A ``.keras`` file holding a ``FaceNet`` (e.g. VGGFace2 weights converted by
    export/import_facenet_weights.py) is accepted too: it is loaded with Keras' safe mode
    (no Python code from the file) and described by a minimal ``info`` with the reference's
    input chain and ``image_size`` None.
    """
    if str(path).endswith(".keras"):
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        if not isinstance(model, FaceNet):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a FaceNet")
        info = {"format": "keras", "path": os.path.abspath(path), "image_size": None,
                "architecture": {"embedding_dim": model.embedding_dim,
                                 "width_multiplier": model.width_multiplier,
                                 "repeats": list(model.repeats),
                                 "dropout_rate": model.dropout_rate},
                "input": {"normalize_method": "imagenet", "crop": "vgg_box",
                          "size": face_preprocessing.FACENET_INPUT_SIZE,
                          "chain": "face_preprocessing.facenet_inputs_from_generator_images"}}
        return model, info
    json_path = _resolve(path)
    with open(json_path) as f:
        info = json.load(f)
    if info.get("format") != FORMAT:
        raise ValueError(f"{json_path}: not a keras-sf2f face-identity network description "
                         f"(format {info.get('format')!r}, expected {FORMAT!r})")
    weights = os.path.join(os.path.dirname(os.path.abspath(json_path)), info["weights_file"])
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{json_path} names weights {weights}, which do not exist")
    model = build_face_network(info["architecture"])
    model.load_weights(weights)
    return model, info
