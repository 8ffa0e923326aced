"""VoxCeleb preparation in worker processes and sharded across machines: a tree prepared in
two shards and merged gives exactly what one unsharded run gives (records byte for byte,
labels, skips); 1 and 2 workers give the same records; a missing or incomplete shard, and
shards made with other options or from another state of the tree, are refused by name."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import test_prepare
from keras_sf2f.data import prepare, records, table
from test_prepare import _face, _speech, _write

# test_prepare's tree, as a fixture of this module too.
vox_root = test_prepare.vox_root
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tree(vox_root, tmp_path_factory):
    """test_prepare's tree (broken files, silence, an identity without faces, one without
    speech, FLAC, 48 kHz float) plus an M4A (when ffmpeg is there) and enough broken files
    in identities of both shards that more reasons are skipped than dataset.json keeps."""
    root = str(tmp_path_factory.mktemp("tree") / "VoxCeleb")
    shutil.copytree(vox_root, root)
    frank = os.path.join(root, "raw_wav", "vox2", "dev", "id00012")
    if shutil.which("ffmpeg"):
        wav = os.path.join(str(tmp_path_factory.mktemp("m4a")), "frank.wav")
        sf.write(wav, _speech(12, 1), 16000, subtype="PCM_16")
        os.makedirs(os.path.join(frank, "clipY"))
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", wav, "-c:a", "aac", "-b:a", "64k",
                        os.path.join(frank, "clipY", "00001.m4a")], check=True)
    for folder, count in ((os.path.join(root, "raw_wav", "vox1", "dev", "id10001"), 4),
                          (frank, 3),
                          (os.path.join(root, "raw_wav", "vox1", "test", "id10005"), 2)):
        for k in range(count):
            _write(os.path.join(folder, "broken", f"{k:05d}.wav"), data=b"")
    return root


def _prepare(root, out, **kwargs):
    return prepare.prepare_voxceleb(root, out, utterance_shards=2, face_shards=1, **kwargs)


def _json(path):
    with open(path) as f:
        return json.load(f)


def _dataset(out):
    info = _json(os.path.join(out, records.DATASET_FILE))
    info.pop("created")
    return info


@pytest.fixture(scope="module")
def unsharded(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("unsharded"))
    _prepare(tree, out)
    return out


def _parsed(out, split):
    t = table.load_split(out, split, require_utterances=False, require_faces=False)
    return {"names": t.names, "utterance_ids": t.utterance_ids, "image_ids": t.image_ids,
            "sources": t.utterance_sources, "frames": t.frames.numpy(),
            "utt_length": t.utt_length.numpy(), "id_utt_count": t.id_utt_count.numpy(),
            "id_face_count": t.id_face_count.numpy(),
            "png": {s: t.face_png[s].numpy().tolist() for s in records.IMAGE_SIZES}}


def test_two_shards_merged_equal_one_unsharded_run(tree, unsharded, tmp_path):
    out = str(tmp_path / "sharded")
    infos = [_prepare(tree, out, shard_index=i, num_shards=2) for i in (1, 0)]
    assert [i["shard"]["complete"] for i in infos] == [1, 2]
    # Each shard wrote only its own directory, and is a prepared directory of its own.
    assert sorted(os.listdir(out)) == [prepare.SHARDS_DIR]
    for i in range(2):
        shard = prepare.shard_dir(out, i, 2)
        assert records.verify_data_dir(shard)["problems"] == []
    shard0 = _json(os.path.join(prepare.shard_dir(out, 0, 2), prepare.SHARD_MANIFEST))
    assert shard0["identities"] == ["vox1/Alice_A", "vox1/Carol_C", "vox1/Eve_E"]

    info = prepare.merge_voxceleb_shards(out)
    assert info["merged_shards"] == 2
    assert not os.path.exists(os.path.join(out, prepare.SHARDS_DIR))  # removed when merged

    expected = _dataset(unsharded)
    # More reasons than dataset.json keeps, from both shards: the merge keeps the first ten
    # in the unsharded run's order.
    assert sum(expected["skipped"]["counts"].values()) > prepare.SKIP_EXAMPLES
    assert _dataset(out) == expected  # counts, skips, settings and every shard's sha256
    for name in (records.SPLITS_FILE, "identity_attributes.json"):
        assert _json(os.path.join(out, name)) == _json(os.path.join(unsharded, name))
    for split in ("train", "test"):
        a, b = _parsed(unsharded, split), _parsed(out, split)
        np.testing.assert_array_equal(a.pop("frames"), b.pop("frames"))
        for key in ("utt_length", "id_utt_count", "id_face_count"):
            np.testing.assert_array_equal(a.pop(key), b.pop(key))
        assert a == b
    train = _parsed(out, "train")
    assert train["names"] == ["vox1/Alice_A", "vox1/Bob_B", "vox2/Frank_F"]
    if shutil.which("ffmpeg"):
        assert "raw_wav/vox2/dev/id00012/clipY/00001.m4a" in train["sources"]


@pytest.mark.slow  # starts worker processes (TensorFlow in each)
def test_one_and_two_workers_write_the_same_records(tree, unsharded, tmp_path):
    out = str(tmp_path / "two_workers")
    _prepare(tree, out, num_workers=2)
    assert _dataset(out) == _dataset(unsharded)


def test_missing_incomplete_and_inconsistent_shards_are_refused(tree, unsharded, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(prepare.ShardError, match="no shards to merge"):
        prepare.merge_voxceleb_shards(out)
    _prepare(tree, out, shard_index=0, num_shards=2)
    with pytest.raises(prepare.ShardError, match=r"shard 1 of 2 is missing .*"
                                                 r"--shard_index=1 --num_shards=2"):
        prepare.merge_voxceleb_shards(out)

    # Shard 1 with other options; then killed during a re-run (no completion mark yet).
    _prepare(tree, out, shard_index=1, num_shards=2, min_frames=50)
    with pytest.raises(prepare.ShardError,
                       match=r"shard 1 was prepared with other options than shard 0: "
                             r"min_frames=50 \(shard 0: 100\)"):
        prepare.merge_voxceleb_shards(out)
    os.remove(os.path.join(prepare.shard_dir(out, 1, 2), prepare.SHARD_MANIFEST))
    with pytest.raises(prepare.ShardError, match="shard 1 of 2 is incomplete"):
        prepare.merge_voxceleb_shards(out)

    # Shard 1 from another state of the tree: Dan got faces, so the split assignment moved.
    changed = str(tmp_path / "changed")
    shutil.copytree(tree, changed)
    _face(os.path.join(changed, "vox1", "masked_faces", "Dan_D", "0001.jpg"), 4)
    _prepare(changed, out, shard_index=1, num_shards=2)
    with pytest.raises(prepare.ShardError, match="shard 1 saw another split assignment"):
        prepare.merge_voxceleb_shards(out)

    # A shard file cut short is caught before anything is written.
    _prepare(tree, out, shard_index=1, num_shards=2)
    victim = records.shard_paths(prepare.shard_dir(out, 1, 2), "train", "utterances")[0]
    stray = os.path.join(prepare.shard_dir(out, 1, 2), "left-over.txt")
    _write(stray, text="from the run before")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 10)
    with pytest.raises(prepare.ShardError, match=r"train-utterances-00000-of-00001.tfrecord: "
                                                 r"\d+ bytes, shard 1 wrote \d+"):
        prepare.merge_voxceleb_shards(out)
    assert not os.path.exists(os.path.join(out, records.DATASET_FILE))

    # A re-run of the shard starts from nothing (the stray file goes too); the merge is then
    # the unsharded run's.
    _prepare(tree, out, shard_index=1, num_shards=2)
    assert not os.path.exists(stray)
    prepare.merge_voxceleb_shards(out, keep_shards=True)
    assert _dataset(out) == _dataset(unsharded)
    assert os.path.isfile(os.path.join(prepare.shard_dir(out, 1, 2), prepare.SHARD_MANIFEST))


def test_command_line_refuses_with_the_reason(tmp_path):
    os.makedirs(prepare.shard_dir(str(tmp_path), 0, 3))
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "trainers", "prepare_data.py"), "--merge_shards",
         f"--data_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    for needle in ("shard 0 of 3 is incomplete", "shard 1 of 3 is missing",
                   "shard 2 of 3 is missing", "--shard_index=2 --num_shards=3"):
        assert needle in result.stderr


def test_voice_quality_channels_from_raw_audio_sharded_or_not(tree, unsharded, tmp_path):
    """``voice_quality_channels``: the same log-mels, plus the channels of the same speech,
    whether prepared in one run or in two shards merged; mel pickles cannot have them."""
    one = str(tmp_path / "one")
    _prepare(tree, one, voice_quality_channels=True)
    sharded = str(tmp_path / "sharded")
    for i in (0, 1):
        _prepare(tree, sharded, shard_index=i, num_shards=2, voice_quality_channels=True)
    prepare.merge_voxceleb_shards(sharded)
    assert _dataset(sharded) == _dataset(one)
    assert _dataset(one)["voice_quality_channels"] == ["harmonicity", "cepstral_peak",
                                                        "log_pitch", "log_energy"]
    plain = table.load_split(unsharded, "train")
    for out in (one, sharded):
        both = table.load_split(out, "train", voice_quality=True)
        assert both.channels == 44 and both.utterance_ids == plain.utterance_ids
        np.testing.assert_array_equal(both.frames.numpy()[:, :40], plain.frames.numpy())
        assert np.abs(both.frames.numpy()[:, 40:]).max() > 0.5
    with pytest.raises(ValueError, match="mel pickles"):
        prepare.prepare_voxceleb(tree, str(tmp_path / "pickles"), audio_source="mel_pickles",
                                 voice_quality_channels=True)
