"""export/import_facenet_weights.py writes its output whole or not at all: the .keras or
.weights.h5 file appears only once complete, and a save that fails part-way leaves the previous
file (or none) and no temporary file. Uses a tiny FaceNet in place of an imported state dict,
so no PyTorch is needed."""

import os

import numpy as np
import pytest

import keras

from keras_sf2f.cli import import_facenet_weights as cli
from keras_sf2f.models import facenet_import
from keras_sf2f.models.facenet import FaceNet

TINY = dict(num_classes=3, embedding_dim=8, width_multiplier=0.0625, repeats=(1, 1, 1))


@pytest.fixture(scope="module")
def tiny_model():
    model = FaceNet(**TINY)
    model.build((None, 140, 140, 3))
    return model


def _run_tool(monkeypatch, model, output):
    """The tool's main() with ``model`` standing in for the imported state dict."""
    monkeypatch.setattr(facenet_import, "import_facenet", lambda *args, **kwargs: model)
    cli.FLAGS.unparse_flags()
    try:
        cli.FLAGS(["import_facenet_weights", "--state_dict=stand_in.pt", f"--output={output}"])
        return cli.main([])
    finally:
        cli.FLAGS.unparse_flags()


@pytest.mark.parametrize("name", ["facenet.keras", "facenet.weights.h5"])
def test_the_output_is_complete_and_nothing_else_is_left(monkeypatch, tiny_model, tmp_path,
                                                         name):
    output = tmp_path / "out" / name
    assert _run_tool(monkeypatch, tiny_model, output) == 0
    assert os.listdir(output.parent) == [name]
    x = np.random.RandomState(0).randn(1, 140, 140, 3).astype("float32")
    if name.endswith(".keras"):
        reloaded = keras.models.load_model(str(output))
    else:
        reloaded = FaceNet(**TINY)
        reloaded.build((None, 140, 140, 3))
        reloaded.load_weights(str(output))
    np.testing.assert_array_equal(reloaded.features(x)["logits"],
                                  tiny_model.features(x)["logits"])


@pytest.mark.parametrize("name, method", [("facenet.keras", "save"),
                                          ("facenet.weights.h5", "save_weights")])
def test_a_failed_save_leaves_no_half_written_file(monkeypatch, tiny_model, tmp_path, name,
                                                   method):
    def crash(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half of a model")
        raise OSError("disk full")

    output = tmp_path / name
    monkeypatch.setattr(tiny_model, method, crash)
    with pytest.raises(OSError, match="disk full"):
        _run_tool(monkeypatch, tiny_model, output)
    assert os.listdir(tmp_path) == []
    # A previous file stays as it was.
    output.write_bytes(b"the previous model")
    with pytest.raises(OSError, match="disk full"):
        _run_tool(monkeypatch, tiny_model, output)
    assert os.listdir(tmp_path) == [name] and output.read_bytes() == b"the previous model"


def test_save_facenet_refuses_other_names(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"\.keras or \.weights\.h5"):
        facenet_import.save_facenet(tiny_model, str(tmp_path / "facenet.h5"))
    assert os.listdir(tmp_path) == []
