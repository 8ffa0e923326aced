"""Runs the tool keras_sf2f/cli/import_facenet_weights.py (documented there), also installed as
`sf2f-import-facenet-weights`. Needs keras_sf2f installed: `pip install -e .`, which
scripts/setup_env.sh does.
"""

from keras_sf2f.cli.import_facenet_weights import run

if __name__ == "__main__":
    run()
