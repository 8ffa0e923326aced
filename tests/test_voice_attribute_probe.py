"""benchmarks/voice_attribute_probe.py: the encoder trained on true attributes hears what the
speech carries, and not what it does not."""

import json

import numpy as np

import pytest

from conftest import load_script
from keras_sf2f.data import records
from keras_sf2f.data.corpus import draw_face, identity_attributes
from keras_sf2f.data.prepare import DatasetWriter
from keras_sf2f.data.procedural import face_pngs, identity_name

RANGES = {"train": [0, 48], "val": [48, 64]}


def _corpus(directory, quality: bool = False):
    """A procedural-layout dataset whose log-mels carry the identity's gender in every frame
    (bands 0-9 at +-gender) and nothing about its age; with ``quality``, voice-quality
    channels whose first one carries the age."""
    rng = np.random.default_rng(0)
    names = {split: [identity_name(i) for i in range(*r)] for split, r in RANGES.items()}
    info = {"kind": "procedural", "seed": 0, "ranges": RANGES,
            "spec": {"face_quality": "aligned"}}
    writer = DatasetWriter(str(directory), names, utterance_shards=1, source=info,
                           voice_quality=quality)
    for split, (lo, hi) in RANGES.items():
        for i in range(lo, hi):
            attributes = identity_attributes(0, i)
            for u in range(2):
                mel = rng.normal(size=(520, 40)).astype(np.float32)
                mel[:, :10] += 1.5 * attributes.gender
                channels = None
                if quality:
                    channels = rng.normal(size=(520, 4)).astype(np.float32)
                    channels[:, 0] += (attributes.age - 44.0) / 10.0
                writer.add_utterance(identity_name(i), f"u{u}", mel, voice_quality=channels)
            writer.add_face(identity_name(i), "f0",
                            face_pngs(draw_face(0, i, 0, 128), records.IMAGE_SIZES))
    writer.close()
    return str(directory)


@pytest.mark.slow  # trains the probe's encoder
def test_probe_hears_the_planted_attribute_only(tmp_path):
    probe = load_script("benchmarks/voice_attribute_probe.py")
    data = _corpus(tmp_path / "data")
    out = tmp_path / "probe"
    result = probe.main([f"--data_dir={data}", f"--output={out}", "--steps=150",
                         "--batch_size=16", "--encoder_channels=16,16,16,16",
                         "--embedding_dim=16"])
    written = json.loads((out / "voice_probe.json").read_text())
    assert written["val"] == result["val"]
    assert set(result["val"]) == set(probe.SHARED)
    # Gender is in every frame: read well on identities the encoder never saw.
    assert result["val"]["gender"]["r"] > 0.8
    # Age is nowhere in the speech: no better than a weak chance correlation.
    assert result["val"]["age"]["r2"] < 0.3


@pytest.mark.slow  # trains the probe's encoder
def test_probe_hears_the_voice_quality_channels_when_asked(tmp_path):
    probe = load_script("benchmarks/voice_attribute_probe.py")
    data = _corpus(tmp_path / "data", quality=True)
    args = [f"--data_dir={data}", "--steps=150", "--batch_size=16",
            "--encoder_channels=16,16,16,16", "--embedding_dim=16"]
    heard = probe.main(args + [f"--output={tmp_path / 'a'}", "--voice_quality_channels"])
    assert heard["val"]["age"]["r"] > 0.8 and heard["val"]["gender"]["r"] > 0.8
    # The same data without the channels: the log-mels alone carry no age.
    blind = probe.main(args + [f"--output={tmp_path / 'b'}"])
    assert blind["val"]["age"]["r2"] < 0.3
    # Asked of data prepared without them: one error line naming the flag.
    with pytest.raises(SystemExit, match="--voice_quality_channels"):
        probe.main([f"--data_dir={_corpus(tmp_path / 'plain')}", "--voice_quality_channels",
                    f"--output={tmp_path / 'c'}"])
