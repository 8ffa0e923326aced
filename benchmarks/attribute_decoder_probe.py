"""What the face decoder and a loss recipe can draw when the voice is perfectly understood.

    .venv/bin/python benchmarks/attribute_decoder_probe.py --data_dir=runs/demo/data \
        --face_network=runs/demo/face_net --perceptual_weight=10 --steps=600 \
        [--embedding_dim=128] [--learning_rate=2e-3] [--l1_weight=10] \
        [--perceptual_layer_weights=0.0625,0.125,0.25,1.0] [--output=probe]

The procedural corpus knows every identity's latent attributes. This probe skips the voice:
the decoder of the demo (``FaceDecoder``, the same class and width training uses) is fed the
identity's true shared attributes (gender, age, size, weight, accent, breathiness: what a voice
can carry at best; standardised, through one Dense layer to the embedding) and trained with L1
and, when asked, the FaceNet perceptual loss of training (``training/losses.py``), batch 32,
Adam. It then draws the validation identities and measures the pixel L1 to their first face and
the face detection rate (dlib HOG on 256 px upscales, ``evaluation/detection.py``), and recall@10
of identity retrieval with dlib's recogniser (and the face-identity network when given).

It separates the two halves of the demo's problem: a recipe that cannot draw detectable faces
from the true attributes will not draw them from a voice, and a steps / width / loss-weight
choice can be screened here in 1-4 minutes instead of a 9-minute training run. Its figures are
an upper bound for the voice model with the same decoder, steps and losses; they choose nothing
on the test split (validation only).

Writes ``<output>/probe.json`` (arguments, CPU, curve and final figures) and
``<output>/faces.png`` (first row ground truth, second row drawn, 10 validation identities,
nearest-neighbour upscaled to 128 px).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sf2f import files  # noqa: E402
from keras_sf2f.machine import cpu_model  # noqa: E402

SHARED = ("gender", "age", "size", "weight", "accent", "breathiness")


def split_arrays(data_dir: str, split: str):
    """(standardisable shared attributes [N, 6], faces [F, 64, 64, 3] generator space,
    face labels [F]) of a prepared procedural corpus split."""
    import numpy as np  # noqa: PLC0415

    from keras_sf2f.data import pipelines, table  # noqa: PLC0415
    from keras_sf2f.data.corpus import identity_attributes  # noqa: PLC0415
    from keras_sf2f.evaluation import oracle  # noqa: PLC0415

    t = table.load_split(data_dir, split, require_utterances=False)
    info = oracle.procedural_identities(data_dir, split, t.names)
    if info is None:
        raise SystemExit(f"error: {data_dir} is not a procedural corpus: the probe needs the "
                         f"identities' latent attributes")
    attributes = np.stack([identity_attributes(info["seed"], i).vector(SHARED)
                           for i in info["identities"]]).astype(np.float32)
    faces = np.stack([pipelines.decode_face(png, 64).numpy() for png in t.face_png[64].numpy()])
    labels = np.repeat(np.arange(t.num_identities), t.id_face_count.numpy())
    return attributes, faces, labels


def identity_recall(drawn, faces, labels, face_network=None, k: int = 10) -> dict:
    """Recall@k of the drawn faces against the split's ground truth (each identity's mean face
    embedding, re-normalised, as the evaluation computes it), for dlib's recogniser and, when
    given, the face-identity network: ``{"val_<embedder>_recall@<k>": r}``. What the demo's
    recall could reach with this decoder if the voice were understood perfectly."""
    from keras_sf2f.evaluation import embedders, metrics  # noqa: PLC0415

    k = min(k, len(drawn))  # a gallery smaller than k (tiny test corpora) ranks all of it
    chosen = [embedders.DlibEmbedder()] if embedders.dlib_available() else []
    if face_network:
        chosen.append(embedders.FaceNetEmbedder.from_path(face_network, name="face_identity_net"))
    out = {}
    for e in chosen:
        truth = metrics.ground_truth_embeddings(e.embed(faces), labels, len(drawn))
        out[f"val_{e.name}_recall@{k}"] = metrics.recall_at_k(e.embed(drawn), truth,
                                                              ks=(k,))[f"recall@{k}"]
    return out


def run(args) -> dict:
    import numpy as np  # noqa: PLC0415
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from keras_sf2f.evaluation import detection  # noqa: PLC0415
    from keras_sf2f.image_ranges import normalized_to_uint8_np  # noqa: PLC0415
    from keras_sf2f.models.face_decoder import FaceDecoder  # noqa: PLC0415
    from keras_sf2f.training import face_identity, losses  # noqa: PLC0415

    keras.utils.set_random_seed(args.seed)
    train_attr, train_faces, train_labels = split_arrays(args.data_dir, "train")
    val_attr, val_faces, val_labels = split_arrays(args.data_dir, "val")
    mean, std = train_attr.mean(0), train_attr.std(0) + 1e-6
    train_attr, val_attr = (train_attr - mean) / std, (val_attr - mean) / std
    val_first = np.searchsorted(val_labels, np.arange(len(val_attr)))
    val_targets = val_faces[val_first]

    project = keras.layers.Dense(args.embedding_dim, name="attributes_to_embedding")
    decoder = FaceDecoder(embedding_dim=args.embedding_dim, image_size=64)
    optimizer = keras.optimizers.Adam(args.learning_rate, 0.9, 0.999, 1e-8)
    layer_weights = [float(w) for w in args.perceptual_layer_weights.split(",")]
    face_network = None
    if args.perceptual_weight > 0:
        face_network, _ = face_identity.load_face_network(args.face_network)

    @tf.function
    def train_step(attributes, faces):
        with tf.GradientTape() as tape:
            drawn = decoder(project(attributes), training=True)
            loss = args.l1_weight * tf.reduce_mean(tf.abs(drawn - faces))
            if face_network is not None:
                loss += args.perceptual_weight * tf.reduce_mean(
                    losses.facenet_perceptual_loss(face_network, drawn, faces, layer_weights))
        variables = project.trainable_variables + decoder.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def draw_val():
        return decoder(project(tf.constant(val_attr)), training=False).numpy()

    rng = np.random.default_rng(args.seed)
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        pick = rng.integers(len(train_faces), size=args.batch_size)
        loss = float(train_step(tf.constant(train_attr[train_labels[pick]]),
                                tf.constant(train_faces[pick])))
        if step % args.report_every == 0 or step == args.steps:
            pixel_l1 = float(np.abs(draw_val() - val_targets).mean())
            curve.append({"step": step, "train_loss": loss, "val_pixel_l1": pixel_l1,
                          "seconds": round(time.time() - start, 1)})
            print(json.dumps(curve[-1]), flush=True)

    drawn = draw_val()
    recall = identity_recall(drawn, val_faces, val_labels, args.face_network)
    mean_face_l1 = float(np.abs(train_faces.mean(0, keepdims=True) - val_targets).mean())
    result = {
        "args": vars(args), "cpu": cpu_model(), "curve": curve,
        "val_pixel_l1": curve[-1]["val_pixel_l1"], "mean_face_val_pixel_l1": mean_face_l1,
        "val_detection_rate": detection.detection_rate(drawn),
        "ground_truth_detection_rate": detection.detection_rate(val_targets),
        **recall,
    }
    os.makedirs(args.output, exist_ok=True)
    files.write_json(os.path.join(args.output, "probe.json"), result)
    rows = [np.concatenate(list(normalized_to_uint8_np(x[:10])), axis=1)
            for x in (val_targets, drawn)]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(
        os.path.join(args.output, "faces.png"))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="Prepared procedural corpus.")
    p.add_argument("--face_network", help="Face-identity network (for the perceptual loss).")
    p.add_argument("--output", default="runs/attribute_decoder_probe", help="Output folder.")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--embedding_dim", type=int, default=128,
                   help="Decoder width as in training (128: the demo's).")
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--l1_weight", type=float, default=10.0)
    p.add_argument("--perceptual_weight", type=float, default=0.0)
    p.add_argument("--perceptual_layer_weights", default="0.0625,0.125,0.25,1.0")
    p.add_argument("--report_every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.perceptual_weight > 0 and not args.face_network:
        p.error("--perceptual_weight > 0 needs --face_network")
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("val_", "mean_", "ground"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
