r"""Converts facenet-pytorch InceptionResnetV1 weights into a Keras FaceNet file.

No face-network weights can be downloaded here; if you have facenet-pytorch's VGGFace2 state
dict (``20180402-114759-vggface2.pt``, 8,631-way logits included), convert it once:

  python export/import_facenet_weights.py \
      --state_dict=20180402-114759-vggface2.pt --output=facenet_vggface2.keras

* ``--output`` ending in ``.keras``: the whole model (config + weights); reload with
  ``keras.models.load_model(path)`` after ``import keras_sf2f.models.facenet``.
* ``--output`` ending in ``.weights.h5``: weights only; reload with
  ``FaceNet(num_classes=8631)``, ``model.build((None, 140, 140, 3))``, ``model.load_weights(path)``.
* SF2F's own download is split in two files (features, logits): pass both,
  ``--state_dict=features.pt,logits.pt``.
* ``--noinclude_logits`` keeps only the embedding network (23,482,624 parameters).

Needs PyTorch (``pip install torch``, CPU build) only for reading the ``.pt`` file, which is
opened with ``torch.load(weights_only=True)`` (tensors only, no pickled code).
"""

from __future__ import annotations

from absl import app, logging

from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags

FLAGS = ToolFlags("import_facenet_weights")


def main(argv):
    del argv
    from keras_sf2f.models.facenet import trainable_parameter_count  # noqa: PLC0415
    from keras_sf2f.models.facenet_import import import_facenet, save_facenet  # noqa: PLC0415
    from keras_sf2f.models.state_dict import StateDictError  # noqa: PLC0415

    if not FLAGS.state_dict:
        raise app.UsageError("--state_dict is required: the facenet-pytorch .pt file(s)")
    if not FLAGS.output:
        raise app.UsageError("--output is required: *.keras or *.weights.h5")
    output = FLAGS.output
    if not (output.endswith(".keras") or output.endswith(".weights.h5")):
        raise app.UsageError("--output must end in .keras or .weights.h5")
    try:
        model = import_facenet(FLAGS.state_dict, include_logits=FLAGS.include_logits,
                               input_size=FLAGS.input_size)
    except (FileNotFoundError, ImportError, StateDictError) as e:
        logging.error("%s", e)
        return 1
    save_facenet(model, output)
    logging.info("wrote %s: FaceNet(%s), %d trainable parameters", output,
                 ", ".join(f"{k}={v}" for k, v in model.get_config().items()
                           if k in ("num_classes", "embedding_dim", "width_multiplier",
                                    "repeats")),
                 trainable_parameter_count(model))
    return 0


def run():
    """sf2f-import-facenet-weights and export/import_facenet_weights.py."""
    run_absl_tool(__name__)
