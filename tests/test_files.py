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


def test_atomic_path_for_writers_that_take_a_name(tmp_path):
    path = str(tmp_path / "shard.tfrecord")
    with open(files.partial_path(path), "w") as f:
        f.write("left over by a killed run")
    with files.atomic_path(path) as tmp:
        assert tmp == path + ".partial" and not os.path.exists(tmp)   # stale partial removed
        with open(tmp, "wb") as f:
            f.write(b"records")
        assert not os.path.exists(path)   # nothing under the final name before the end
    assert open(path, "rb").read() == b"records"
    # A writer that insists on an extension (Keras's .weights.h5) gets it after .partial.
    weights = str(tmp_path / "net.weights.h5")
    with files.atomic_path(weights, suffix=".weights.h5") as tmp:
        assert tmp == weights + ".partial.weights.h5"
        open(tmp, "wb").close()
    assert sorted(os.listdir(tmp_path)) == ["net.weights.h5", "shard.tfrecord"]


def test_atomic_path_failure_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "model.tflite")
    files.write_text(path, "good")
    with pytest.raises(RuntimeError, match="sha256"):
        with files.atomic_path(path) as tmp:
            files.write_text(tmp, "bad download")
            raise RuntimeError("sha256 mismatch")
    assert open(path).read() == "good"
    assert os.listdir(tmp_path) == ["model.tflite"]


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)


def test_atomic_directory_replaces_a_directory_whole(tmp_path):
    final = str(tmp_path / "export" / "vox1")
    with files.atomic_directory(final) as staging:
        assert staging == final + ".partial" and os.listdir(staging) == []
        os.makedirs(os.path.join(staging, "a"))
        files.write_text(os.path.join(staging, "a", "x.png"), "1")
    assert _tree(final) == [os.path.join("a", "x.png")]
    with files.atomic_directory(final) as staging:
        files.write_text(os.path.join(staging, "y.png"), "2")
        assert _tree(final) == [os.path.join("a", "x.png")]   # old one until the swap
    assert _tree(final) == ["y.png"]
    assert os.listdir(tmp_path / "export") == ["vox1"]        # no staging, no .old left


def test_atomic_directory_failure_and_interrupted_swap(tmp_path):
    final = str(tmp_path / "vox1")
    with files.atomic_directory(final) as staging:
        files.write_text(os.path.join(staging, "keep.png"), "old")
    with pytest.raises(ValueError):
        with files.atomic_directory(final) as staging:
            files.write_text(os.path.join(staging, "half.png"), "new")
            raise ValueError("no image at 224 px")
    assert _tree(final) == ["keep.png"] and os.listdir(tmp_path) == ["vox1"]
    # A crash between the two renames: only <final>.old exists; the next call puts it back
    # first, so a failure then still leaves the previous export in place.
    os.replace(final, final + ".old")
    with pytest.raises(ValueError):
        with files.atomic_directory(final):
            raise ValueError("again")
    assert _tree(final) == ["keep.png"] and os.listdir(tmp_path) == ["vox1"]
