"""Runs the tool keras_sf2f/cli/describe_model.py (documented there), also installed as
`sf2f-describe-model`. Needs keras_sf2f installed: `pip install -e .`, which
scripts/setup_env.sh does.
"""

from keras_sf2f.cli.describe_model import run

if __name__ == "__main__":
    run()
