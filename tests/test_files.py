"""keras_sf2f.files: whole-or-nothing writes and checksums."""

import hashlib
import json
import os

import pytest

from keras_sf2f import files


def test_write_json_and_text_replace_whole_files(tmp_path):
    path = str(tmp_path / "a.json")
    files.write_json(path, {"b": 1, "a": [1, 2]})
    with open(path) as f:
        text = f.read()
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    files.write_text(path, "new")
    assert open(path).read() == "new"
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = str(tmp_path / "report.md")
    files.write_text(path, "old report")
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_write(path) as f:
            f.write("half of a new rep")
            raise RuntimeError("disk full")
    assert open(path).read() == "old report"
    assert os.listdir(tmp_path) == ["report.md"]


def test_binary_writes_and_sha256(tmp_path):
    path = str(tmp_path / "blob.bin")
    data = os.urandom(3 * (1 << 20) + 5)   # spans several read blocks
    with files.atomic_write(path, "wb") as f:
        f.write(data)
    assert files.sha256(path) == hashlib.sha256(data).hexdigest()


def test_append_and_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        with files.atomic_write(str(tmp_path / "x"), "a"):
            pass
