"""Human filtering of curated faces, and the export of the final dataset.

    python trainers/review_faces.py --curated_dir=OUT [--review_port=8765]

serves the review page on http://127.0.0.1:8765/ : per identity, keep 1 to 7 of the
candidates the machine stage accepted (click or keys 1-9; Enter / arrows to move). Choices are
saved as they are made (OUT/manifest.sqlite) and survive restarts. "Export" on the page, or

    python trainers/review_faces.py --curated_dir=OUT --export_only

writes <dataset_dir>/<subset>/{masked,origin}_faces/<Name>/ (default OUT/dataset/vox1/),
the layout prepare_data.py --data_source=voxceleb reads; identities with no kept image are
dropped.
"""

import sys

from absl import app, logging

from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags

FLAGS = ToolFlags("review_faces")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.curated_dir:
        raise app.UsageError("--curated_dir (the output_dir of curate_faces.py) is required")
    if FLAGS.review_min_kept > FLAGS.review_max_kept:
        raise app.UsageError("--review_min_kept must not exceed --review_max_kept")
    logging.set_verbosity(logging.INFO)
    from keras_sf2f.curation import review_server  # noqa: PLC0415
    settings = review_server.ReviewSettings(
        curated_dir=FLAGS.curated_dir, dataset_dir=FLAGS.dataset_dir,
        subset=FLAGS.dataset_subset, image_size=FLAGS.dataset_image_size,
        min_kept=FLAGS.review_min_kept, max_kept=FLAGS.review_max_kept)
    try:
        review = review_server.ReviewApp(settings)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if FLAGS.export_only:
        summary = review.export()
        print(f"Exported {summary['images']} images of {summary['identities']} identities to "
              f"{summary['path']} ({len(summary['dropped_identities'])} identities dropped: "
              f"no kept image)")
        return 0
    server = review_server.ReviewServer(review, FLAGS.review_host, FLAGS.review_port)
    print(f"Review page: {server.url}  (Ctrl+C to stop; choices are saved as you make them)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        review.close()
    return 0


def run():
    """sf2f-review-faces and trainers/review_faces.py."""
    run_absl_tool(__name__)
