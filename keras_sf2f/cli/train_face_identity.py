r"""Trains the project's face-identity network (FaceNet small) on a prepared data directory.

    python trainers/train_face_identity.py --data_dir=/tmp/demo_data --output_dir=/tmp/face_net
    python trainers/train_face_identity.py --data_dir=DIR --output_dir=DIR \
        --face_net_steps=600 --face_net_image_size=128

Uses the data's ``faceid`` split (identities disjoint from every voice-face identity), writes
``face_identity.weights.h5`` and ``face_identity.json`` (architecture, input chain, training
settings, held-out 1-NN identity accuracy on the faceid split's held-out faces and on the
val/test voice-face identities) to --output_dir, and prints progress with an ETA. Point
training's --face_network at --output_dir. See keras_sf2f/training/face_identity.py.
"""

from absl import app, logging

from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags
from keras_sf2f.training.face_identity_config import FaceIdentityConfig

FLAGS = ToolFlags("train_face_identity")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.data_dir or not FLAGS.output_dir:
        raise app.UsageError("--data_dir and --output_dir are required")
    config = FLAGS.config(FaceIdentityConfig)  # validated while the flags were parsed
    from keras_sf2f.data.table import DataError  # noqa: PLC0415
    from keras_sf2f.training.face_identity import train_face_identity  # noqa: PLC0415
    try:
        _, info = train_face_identity(FLAGS.data_dir, FLAGS.output_dir, config,
                                      log=logging.info)
    except DataError as e:
        logging.error("%s", e)
        return 1
    print(f"face-identity network ({info['trainable_parameters']:,} parameters, "
          f"{info['image_size']} px faces) written to {FLAGS.output_dir}")
    for split, r in info["heldout"].items():
        print(f"  held-out 1-NN identity accuracy, {split:>6}: {r['accuracy']:.3f} "
              f"(chance {r['chance']:.3f}, {r['identities']} identities)")
    print(f"  training time {info['training']['train_seconds']:.0f} s")
    return 0


def run():
    """sf2f-train-face-identity and trainers/train_face_identity.py."""
    run_absl_tool(__name__)
