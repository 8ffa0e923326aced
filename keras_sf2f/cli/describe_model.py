"""Describes the models of a configuration: per-module parameter counts and shapes.

    python trainers/describe_model.py --flagfile=configs/sf2f_64.cfg          # human summary
    python trainers/describe_model.py --flagfile=configs/sf2f_64.cfg --json   # one JSON object

The JSON object maps generator (encoder + fuser + decoder), voice_encoder (without the fuser),
fuser (0 when absent), face_decoder and every discriminator (image_discriminator_<res>,
identity_classifier_<res>) to its parameter count (BatchNorm moving statistics excluded).
"""

import json

from absl import app

from keras_sf2f import flags as sf2f_flags
from keras_sf2f.cli import run_absl_tool
from keras_sf2f.models import builder

FLAGS = sf2f_flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = builder.ModelConfig.from_flags(FLAGS)
    models = builder.build_models(config)
    if FLAGS.json:
        print(json.dumps(builder.count_parameters(models)))
    else:
        print(builder.describe(models, config))


def run():
    """sf2f-describe-model and trainers/describe_model.py."""
    run_absl_tool(__name__)
