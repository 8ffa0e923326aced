"""benchmarks/attribute_decoder_probe.py: the decoder fed true attributes learns, and says so."""

import json

import numpy as np

import pytest

from conftest import load_script
from keras_sf2f.data.corpus import draw_face
from keras_sf2f.data.prepare import DatasetWriter
from keras_sf2f.data.procedural import face_pngs, identity_name
from keras_sf2f.data import records

RANGES = {"train": [0, 24], "val": [24, 32]}


def _corpus(directory, source=True):
    names = {split: [identity_name(i) for i in range(*r)] for split, r in RANGES.items()}
    info = ({"kind": "procedural", "seed": 0, "ranges": RANGES,
             "spec": {"face_quality": "aligned"}} if source else None)
    writer = DatasetWriter(str(directory), names, utterance_shards=1, source=info)
    for split, (lo, hi) in RANGES.items():
        for i in range(lo, hi):
            for k in range(2):
                writer.add_face(identity_name(i), f"f{k}",
                                face_pngs(draw_face(0, i, k, 128), records.IMAGE_SIZES))
    writer.close()
    return str(directory)


@pytest.mark.slow  # trains the probe
def test_probe_learns_and_writes_its_figures(tmp_path):
    pytest.importorskip("dlib")
    probe = load_script("benchmarks/attribute_decoder_probe.py")
    data = _corpus(tmp_path / "data")
    out = tmp_path / "probe"
    assert probe.main([f"--data_dir={data}", f"--output={out}", "--steps=40",
                       "--report_every=10", "--batch_size=16"]) == 0
    result = json.loads((out / "probe.json").read_text())
    curve = [c["val_pixel_l1"] for c in result["curve"]]
    assert [c["step"] for c in result["curve"]] == [10, 20, 30, 40]
    # From a decoder that starts near zero (far from the white-background faces) 40 steps
    # must move the drawn faces towards the validation faces.
    assert curve[-1] < curve[0]
    assert result["val_pixel_l1"] == curve[-1]
    assert 0.0 <= result["val_detection_rate"] <= 1.0
    # The corpus's own faces are faces to dlib (about 9 in 10 on the real corpus).
    assert result["ground_truth_detection_rate"] >= 0.5
    assert (out / "faces.png").stat().st_size > 0
    assert 0.0 <= result["val_dlib_resnet_recall@8"] <= 1.0  # 8 identities: recall@min(10, 8)
    # The metric is wired to the right identities: each validation identity's own first photo
    # retrieves it at rank 1 far above chance (1/8), a shuffled assignment does not.
    faces, labels = probe.split_arrays(data, "val")[1:]
    first = np.searchsorted(labels, np.arange(8))
    own = probe.identity_recall(faces[first], faces, labels, k=1)["val_dlib_resnet_recall@1"]
    shuffled = probe.identity_recall(faces[np.roll(first, 1)], faces, labels,
                                     k=1)["val_dlib_resnet_recall@1"]
    assert own >= 0.75 and shuffled <= 0.25


def test_probe_refuses_data_without_attributes_and_perceptual_without_network(tmp_path):
    probe = load_script("benchmarks/attribute_decoder_probe.py")
    data = _corpus(tmp_path / "data", source=False)
    with pytest.raises(SystemExit, match="not a procedural corpus"):
        probe.main([f"--data_dir={data}", f"--output={tmp_path / 'p'}", "--steps=1"])
    with pytest.raises(SystemExit):
        probe.main([f"--data_dir={data}", "--perceptual_weight=10"])
