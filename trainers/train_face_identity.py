"""Runs the tool keras_sf2f/cli/train_face_identity.py (documented there), also installed as
`sf2f-train-face-identity`. Needs keras_sf2f installed: `pip install -e .`, which
scripts/setup_env.sh does.
"""

from keras_sf2f.cli.train_face_identity import run

if __name__ == "__main__":
    run()
