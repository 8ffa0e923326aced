"""Runs the tool keras_sf2f/cli/prepare_data.py (documented there), also installed as
`sf2f-prepare-data`. Needs keras_sf2f installed: `pip install -e .`, which scripts/setup_env.sh
does.
"""

from keras_sf2f.cli.prepare_data import run

if __name__ == "__main__":
    run()
