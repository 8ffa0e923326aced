r"""What the voice encoder can hear: the demo's encoder trained directly on the true attributes.

    .venv/bin/python benchmarks/voice_attribute_probe.py --data_dir=runs/demo/data \
        [--encoder_channels=64,96,128,192] [--embedding_dim=128] [--steps=1200] \
        [--learning_rate=2e-3] \
        [--seconds=5] [--target=attributes|face_embedding --face_network=DIR] \
        [--output=voice_probe]

The mirror image of ``attribute_decoder_probe.py``. The procedural corpus knows every
identity's latent attributes; this probe skips the face: the voice encoder of the demo
(``VoiceEncoder``, the same class, channels and embedding width training uses) gets one Dense
head onto the standardised shared attributes (gender, age, size, weight, accent, breathiness)
and is trained with a squared error on them from the training split's stage-1 crops (the same
crop lengths, batch and Adam settings as stage 1). It then reads the validation identities from
one 5 s crop each and reports, per attribute, R^2 and Pearson r against the truth. With
``--target=face_embedding --face_network=DIR`` the head regresses the face-identity network's
mean embedding of the identity's faces instead (cosine loss; no attributes needed, so it would
work on real data too) and the probe reports recall@1/5/10 of the validation identities.

What it separates: if an attribute is not recovered here, with direct supervision, the
speech-to-face model cannot recover it either through a decoder and image losses, and the
limit is the voice (its features, or the number of training identities), not the objective.
If it is recovered here but the face model's embedding does not carry it, the objective is
what loses it. Validation split only.

Writes ``<output>/voice_probe.json`` (arguments, CPU, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sf2f import files  # noqa: E402
from keras_sf2f.machine import cpu_model  # noqa: E402

SHARED = ("gender", "age", "size", "weight", "accent", "breathiness")


def split_attributes(data_dir: str, split: str, table):
    """Shared attributes ``[identities, 6]`` (float32) of a prepared procedural split."""
    import numpy as np  # noqa: PLC0415

    from keras_sf2f.data.corpus import identity_attributes  # noqa: PLC0415
    from keras_sf2f.evaluation import oracle  # noqa: PLC0415

    info = oracle.procedural_identities(data_dir, split, table.names)
    if info is None:
        raise SystemExit(f"error: {data_dir} is not a procedural corpus: the probe needs the "
                         f"identities' latent attributes")
    return np.stack([identity_attributes(info["seed"], i).vector(SHARED)
                     for i in info["identities"]]).astype(np.float32)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", required=True, help="Prepared procedural corpus.")
    p.add_argument("--encoder_channels", default="64,96,128,192",
                   help="Inception encoder channels (the demo's).")
    p.add_argument("--embedding_dim", type=int, default=128, help="Encoder output width.")
    p.add_argument("--steps", type=int, default=1200, help="Training steps.")
    p.add_argument("--batch_size", type=int, default=32, help="Identities per batch.")
    p.add_argument("--learning_rate", type=float, default=2e-3, help="Adam learning rate.")
    p.add_argument("--seconds", type=float, default=5.0, help="Validation crop length.")
    p.add_argument("--crop_frames_min", type=int, default=None,
                   help="Shortest training crop, frames of 10 ms (train.py's flag; default: "
                        "stage 1's, 100).")
    p.add_argument("--crop_frames_max", type=int, default=None,
                   help="Longest training crop, frames (train.py's flag; default: stage 1's, "
                        "150).")
    p.add_argument("--seed", type=int, default=0, help="Initialisation and data order.")
    p.add_argument("--output", default="voice_probe", help="Output directory.")
    p.add_argument("--face_network", default=None,
                   help="With --target=face_embedding: the face-identity network whose "
                        "embedding of the identity's faces (mean, unit norm) is the target.")
    p.add_argument("--target", default="attributes", choices=("attributes", "face_embedding"),
                   help="What the encoder is trained to predict.")
    p.add_argument("--voice_quality_channels", action="store_true",
                   help="Also feed the records' four voice-quality channels (data prepared "
                        "with --voice_quality_channels).")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import numpy as np  # noqa: PLC0415
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_sf2f.data import pipelines, table as table_lib  # noqa: PLC0415
    from keras_sf2f.evaluation import embedders, metrics  # noqa: PLC0415
    from keras_sf2f.models.voice_encoder import VoiceEncoder  # noqa: PLC0415

    keras.utils.set_random_seed(args.seed)
    try:
        train = table_lib.load_split(args.data_dir, "train",
                                     voice_quality=args.voice_quality_channels)
        val = table_lib.load_split(args.data_dir, "val", voice_quality=args.voice_quality_channels)
    except table_lib.DataError as e:
        raise SystemExit(f"error: {e}") from None
    y_train = split_attributes(args.data_dir, "train", train)
    y_val = split_attributes(args.data_dir, "val", val)
    mean, std = y_train.mean(0), y_train.std(0) + 1e-6
    targets = tf.constant((y_train - mean) / std)
    if args.target == "face_embedding":
        if not args.face_network:
            raise SystemExit("error: --target=face_embedding needs --face_network")
        embedder = embedders.FaceNetEmbedder.from_path(args.face_network,
                                                       name="face_identity_net")

        def identity_embeddings(t):
            faces = np.stack([pipelines.decode_face(png, 64).numpy()
                              for png in t.face_png[64].numpy()])
            labels = np.repeat(np.arange(t.num_identities), t.id_face_count.numpy())
            return metrics.ground_truth_embeddings(embedder.embed(faces), labels,
                                                   t.num_identities).astype(np.float32)
        targets = tf.constant(identity_embeddings(train))
        val_embeddings = identity_embeddings(val)

    channels = tuple(int(c) for c in args.encoder_channels.split(","))
    encoder = VoiceEncoder(mode="inception", channels=channels, embedding_dim=args.embedding_dim,
                           input_channels=train.channels, add_noise=False)
    head = keras.layers.Dense(int(targets.shape[1]))
    encoder.build((None, None, train.channels))
    head.build((None, args.embedding_dim))
    variables = encoder.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.Adam(args.learning_rate)

    @tf.function(reduce_retracing=True)
    def step(mels, ids):
        with tf.GradientTape() as tape:
            emb = tf.reshape(encoder(mels, training=True), [tf.shape(mels)[0], -1])
            guess, truth = head(emb), tf.gather(targets, ids)
            if args.target == "face_embedding":  # cosine distance to the identity's embedding
                loss = 1.0 - tf.reduce_mean(tf.reduce_sum(
                    tf.math.l2_normalize(guess, -1) * truth, -1))
            else:
                loss = tf.reduce_mean(tf.square(guess - truth))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    t0 = time.time()
    crops = {"min_frames": args.crop_frames_min, "max_frames": args.crop_frames_max}
    try:
        ds = pipelines.stage1_dataset(train, batch_size=args.batch_size, image_size=64,
                                      seed=args.seed, num_steps=args.steps,
                                      **{k: v for k, v in crops.items() if v is not None})
    except ValueError as e:  # crop lengths out of order or not positive
        raise SystemExit(f"error: --crop_frames_min/--crop_frames_max: {e}") from None
    curve = []
    for i, (_, mels, ids) in enumerate(ds):
        loss = float(step(mels, ids))
        if i % 100 == 0 or i == args.steps - 1:
            curve.append((i, loss))
            print(f"step {i} loss {loss:.3f} ({time.time() - t0:.0f} s)", flush=True)

    frames = int(round(args.seconds * 100))
    preds = []
    for mels, _, _ in pipelines.evaluation_crops(val, frames=frames, crops_per_identity=1,
                                                 seed=0):
        emb = tf.reshape(encoder(mels, training=False), [tf.shape(mels)[0], -1])
        preds.append(head(emb).numpy()[0])
    preds = np.stack(preds)
    figures = {}
    if args.target == "face_embedding":
        # Retrieval of the validation identities' mean face embeddings from the voice alone:
        # what a voice encoder regressing the face network's embedding reaches, no decoder.
        figures["face_identity_net"] = metrics.recall_at_k(preds, val_embeddings, ks=(1, 5, 10))
    for j, name in enumerate(SHARED if args.target == "attributes" else ()):
        truth, guess = y_val[:, j], preds[:, j] * std[j] + mean[j]
        r2 = 1.0 - np.sum((truth - guess) ** 2) / np.sum((truth - truth.mean()) ** 2)
        figures[name] = {"r2": float(r2), "r": float(np.corrcoef(truth, guess)[0, 1])}
    result = {"args": vars(args), "cpu": cpu_model(), "seconds": time.time() - t0,
              "curve": curve, "val": figures}
    os.makedirs(args.output, exist_ok=True)
    with files.atomic_write(os.path.join(args.output, "voice_probe.json")) as f:
        json.dump(result, f, indent=1)
    print(json.dumps(figures, indent=1))
    return result


if __name__ == "__main__":
    main()
