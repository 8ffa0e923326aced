"""Machine stage of HQ-VoxCeleb-style face curation (filtering, alignment, white background).

    python trainers/curate_faces.py --input_dir=RAW --output_dir=OUT

RAW holds one folder of raw photos per identity. OUT gets manifest.sqlite (+ manifest.jsonl),
one record per input image (decision, reason, landmarks, scores, outputs), the aligned
candidates in OUT/aligned/<size>/{origin,masked}/<Name>/ and contact_sheet.png. Re-running
resumes. Then: python trainers/review_faces.py --curated_dir=OUT (human filtering + export).
The models come from scripts/fetch_curation_models.sh (run once at setup).
"""

import os
import sys

from absl import app, logging

from keras_sf2f.cli import run_absl_tool
from keras_sf2f.curation.config import CurationConfig
from keras_sf2f.flags import ToolFlags

FLAGS = ToolFlags("curate_faces")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.input_dir or not FLAGS.output_dir:
        raise app.UsageError("--input_dir (raw photos, one folder per identity) and "
                             "--output_dir (curated output) are required")
    if FLAGS.curation_shard_index >= FLAGS.curation_shards:
        raise app.UsageError("--curation_shard_index must be below --curation_shards")
    logging.set_verbosity(logging.INFO)
    from keras_sf2f.curation import pipeline  # noqa: PLC0415
    from keras_sf2f.curation.models import ModelFileError  # noqa: PLC0415
    config = FLAGS.config(CurationConfig)  # validated while the flags were parsed
    try:
        counts = pipeline.curate(FLAGS.input_dir, FLAGS.output_dir, config,
                                 num_shards=FLAGS.curation_shards,
                                 shard_index=FLAGS.curation_shard_index, log=logging.info)
    except (ModelFileError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = os.path.abspath(FLAGS.output_dir)
    print(f"Curated {counts['processed']} images ({counts['skipped']} already done) into {out}:")
    print(f"  identities: {counts['identities']}, accepted: {counts['accepted']}")
    for status in ("rejected", "error"):
        for reason, n in sorted(counts.get(status, {}).items()):
            print(f"  {status}: {reason}: {n}")
    print(f"  manifest: {os.path.join(out, 'manifest.sqlite')} (+ manifest.jsonl)")
    if counts.get("contact_sheet"):
        print(f"  look at: {counts['contact_sheet']}")
    print(f"Next: python trainers/review_faces.py --curated_dir={FLAGS.output_dir}")
    return 0


def run():
    """sf2f-curate-faces and trainers/curate_faces.py."""
    run_absl_tool(__name__)
