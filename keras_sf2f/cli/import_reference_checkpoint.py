r"""Imports a checkpoint of the official PyTorch SF2F code into a TF checkpoint of this project.

    python export/import_reference_checkpoint.py \
        --reference_checkpoint=best_L1_with_model.pt \
        --flagfile=configs/sf2f_64.cfg --output_dir=runs/sf2f_64_imported

The model flags must describe the checkpoint's configuration (encoder, fuser, decoder,
discriminators, --num_train_identities = the width of its identity classifier). A stage-1
checkpoint can seed a stage-2 (fuser) configuration with --allow_missing_fuser. The command
first prints what the file holds (stage, fuser, resolution, identity-classifier width).

A generator-only checkpoint (the form checkpoints are shared in: scripts/strip_checkpoint.py of
the official PyTorch code keeps args, model_state and model_kwargs) imports for evaluation and
export; its discriminators are not imported, which the command says, reference_import.json
records ("generator_only", "fresh_discriminators") and training from the import repeats.

Writes to --output_dir: the TF checkpoint (objects generator, image_discriminator_<res>,
identity_classifier_<res>), flags.cfg (the model configuration, a flagfile) and
reference_import.json
(provenance). See keras_sf2f/models/reference_import.py for the layout. Needs PyTorch
(requirements-test.txt) to read the file.
"""

import sys

from absl import app, logging

from keras_sf2f.cli import run_absl_tool
from keras_sf2f.config import options
from keras_sf2f.flags import ToolFlags
from keras_sf2f.models import builder, reference_import
from keras_sf2f.models.state_dict import StateDictError

FLAGS = ToolFlags("import_reference_checkpoint")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.reference_checkpoint:
        raise app.UsageError("--reference_checkpoint is required")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required")
    config = FLAGS.config(builder.ModelConfig)
    flags_text = ("# The model configuration of this imported reference checkpoint.\n"
                  + "\n".join(options.flag_lines(config)) + "\n")
    try:
        info = reference_import.run_import(
            FLAGS.reference_checkpoint, config, FLAGS.output_dir, flags_text,
            allow_missing_fuser=FLAGS.allow_missing_fuser)
    except (StateDictError, FileNotFoundError, FileExistsError, ImportError) as e:
        # Expected user errors: one clear message, no traceback.
        sys.stderr.write(f"error: {e}\n")
        return 1
    print(f"found: {reference_import.format_found(info['found'])}")
    if info["generator_only"]:
        fresh = ", ".join(info["fresh_discriminators"]) or "none configured"
        print(f"generator only: the discriminators ({fresh}) are not in the file and were not "
              f"imported; evaluation and export need none, and training from "
              f"{FLAGS.output_dir} starts them from a fresh initialisation")
    if info["skipped_keys"]:
        logging.warning("kept the fresh initialisation of %d tensors absent from the "
                        "checkpoint: %s", len(info["skipped_keys"]),
                        ", ".join(info["skipped_keys"]))
    logging.info("wrote %s", info["tf_checkpoint"])
    print(info["tf_checkpoint"])
    return 0


def run():
    """sf2f-import-reference-checkpoint and export/import_reference_checkpoint.py."""
    run_absl_tool(__name__)
