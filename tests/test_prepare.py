"""Preparation from a VoxCeleb + HQ-VoxCeleb tree in its published layout, and from the
reference's mel pickles: right counts, corrupt inputs skipped and reported, unsafe pickles
refused."""

import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from keras_sf2f.audio.features import normalize_log_mel
from keras_sf2f.data import corpus, prepare, records, table
from keras_sf2f.safe_pickle import UnsafePickleError, load_plain_pickle, load_reference_mel

VOX1 = [("id10001", "Alice_A"), ("id10002", "Bob_B"), ("id10003", "Carol_C"),
        ("id10004", "Dan_D"), ("id10005", "Eve_E")]
VOX2 = [("id00012", "Frank_F"), ("id00013", "Gina_G")]


def _speech(identity, item):
    return corpus.synthesize_utterance(0, identity, item)


def _write(path, data=None, text=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _face(path, identity):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(corpus.draw_face(0, identity, 0, size=128)).resize((200, 200)).save(path)


@pytest.fixture(scope="module")
def vox_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("VoxCeleb"))
    _write(os.path.join(root, "vox1", "vox1_meta.csv"),
           text="VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
           + "".join(f"{i}\t{n}\tm\tUSA\tdev\n" for i, n in VOX1))
    _write(os.path.join(root, "vox2", "full_vox2_meta.csv"),
           text="VoxCeleb2ID ,Name ,Gender ,Set \n"
           + "".join(f"{i} ,{n} ,f ,dev \n" for i, n in VOX2))
    _write(os.path.join(root, "split.json"), text=json.dumps({
        "vox1": {"train": ["Alice_A", "Bob_B", "Carol_C", "Dan_D"], "val": [], "test": ["Eve_E"]},
        "vox2": {"train": ["Frank_F"], "val": ["Gina_G"], "test": []}}))
    def wav(spk, clip, n):
        path = os.path.join(root, "raw_wav", "vox1", "dev", spk, clip, f"{n:05d}.wav")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    # Alice: two good 16-bit utterances, one at 48 kHz float.
    sf.write(wav("id10001", "clipA", 1), _speech(1, 0), 16000, subtype="PCM_16")
    sf.write(wav("id10001", "clipB", 1), _speech(1, 1), 16000, subtype="PCM_16")
    x48 = np.interp(np.arange(0, len(_speech(1, 2)), 1 / 3), np.arange(len(_speech(1, 2))),
                    _speech(1, 2)) / 32768.0
    sf.write(wav("id10001", "clipC", 1), x48.astype(np.float32), 48000, subtype="FLOAT")
    # Bob: one good utterance plus three broken files.
    sf.write(wav("id10002", "clipA", 1), _speech(2, 0), 16000, subtype="PCM_16")
    _write(wav("id10002", "clipA", 2), data=b"")
    _write(wav("id10002", "clipA", 3), data=os.urandom(3000))
    _write(wav("id10002", "clipB", 1), text="this is not audio at all\n" * 40)
    # Carol: only silence (nothing survives VAD) -> the identity is dropped.
    sf.write(wav("id10003", "clipA", 1), np.zeros(32000, np.int16), 16000, subtype="PCM_16")
    # Dan: speech but no face folder -> not available. Eve: test split.
    sf.write(wav("id10004", "clipA", 1), _speech(4, 0), 16000, subtype="PCM_16")
    os.makedirs(os.path.join(root, "raw_wav", "vox1", "test", "id10005", "c"), exist_ok=True)
    sf.write(os.path.join(root, "raw_wav", "vox1", "test", "id10005", "c", "00001.wav"),
             _speech(5, 0), 16000, subtype="PCM_24")
    # vox2: Frank has a FLAC (m4a needs ffmpeg, FLAC is what we can write), Gina has none.
    flac = os.path.join(root, "raw_wav", "vox2", "dev", "id00012", "clipZ", "00001.flac")
    os.makedirs(os.path.dirname(flac))
    sf.write(flac, _speech(12, 0), 16000, subtype="PCM_16")
    for identity, (_, name) in enumerate(VOX1[:3] + VOX1[4:], start=1):
        _face(os.path.join(root, "vox1", "masked_faces", name, "0001.jpg"), identity)
    _face(os.path.join(root, "vox1", "masked_faces", "Alice_A", "0002.png"), 9)
    _write(os.path.join(root, "vox1", "masked_faces", "Bob_B", "0002.jpg"), data=b"\xff\xd8junk")
    _face(os.path.join(root, "vox2", "masked_faces", "Frank_F", "01.jpg"), 12)
    _face(os.path.join(root, "vox2", "masked_faces", "Gina_G", "01.jpg"), 13)
    return root


def test_voxceleb_tree_prepares_with_right_counts(vox_root, tmp_path):
    out = str(tmp_path / "prepared")
    info = prepare.prepare_voxceleb(vox_root, out, utterance_shards=2, face_shards=1)
    splits = records.read_json(os.path.join(out, records.SPLITS_FILE))
    assert splits["train"] == ["vox1/Alice_A", "vox1/Bob_B", "vox2/Frank_F"]
    assert splits["test"] == ["vox1/Eve_E"]
    assert splits["val"] == []  # Gina has a face but no speech
    assert info["splits"]["train"]["utterances"] == 3 + 1 + 1
    assert info["splits"]["train"]["faces"] == 2 + 1 + 1
    skipped = info["skipped"]
    assert skipped["counts"] == {"utterance": 4, "face": 1, "identity": 1}
    reasons = "\n".join(skipped["first_reasons"])
    for needle in ("id10002/clipA/00002.wav", "id10002/clipA/00003.wav",
                   "id10002/clipB/00001.wav", "Bob_B/0002.jpg", "Carol_C: dropped",
                   "voice activity"):
        assert needle in reasons
    on_disk = json.load(open(os.path.join(out, records.DATASET_FILE)))
    assert on_disk["skipped"]["counts"] == skipped["counts"]

    train = table.load_split(out, "train")
    assert train.id_utt_count.numpy().tolist() == [3, 1, 1]
    # Each utterance's audio file, relative to the root, for the results page to play.
    assert train.utterance_sources == [
        "raw_wav/vox1/dev/id10001/clipA/00001.wav", "raw_wav/vox1/dev/id10001/clipB/00001.wav",
        "raw_wav/vox1/dev/id10001/clipC/00001.wav", "raw_wav/vox1/dev/id10002/clipA/00001.wav",
        "raw_wav/vox2/dev/id00012/clipZ/00001.flac"]
    assert on_disk["source"]["root"] == os.path.abspath(vox_root)
    assert train.id_face_count.numpy().tolist() == [2, 1, 1]
    frames = train.frames.numpy().astype(np.float32)
    assert np.isfinite(frames).all() and -8 < frames.mean() < 4  # normalised scale


def test_reference_mel_pickles(vox_root, tmp_path):
    root = str(tmp_path / "vox")
    # Same meta and faces, speech as the reference's pickles instead of audio.
    for sub in ("vox1", "vox2"):
        os.makedirs(os.path.join(root, sub))
        for name in os.listdir(os.path.join(vox_root, sub)):
            src = os.path.join(vox_root, sub, name)
            os.symlink(src, os.path.join(root, sub, name))
    rng = np.random.default_rng(0)
    raw = {}
    for name in ("Alice_A", "Bob_B"):
        folder = os.path.join(root, "vox1", "mel_spectrograms", name)
        os.makedirs(folder)
        for k in range(2):
            mel = rng.normal(10.9915, 3.1661, size=(40, 150 + k)).astype(np.float64)
            raw[name, k] = mel
            with open(os.path.join(folder, f"id_clip_{k:05d}.pickle"), "wb") as f:
                pickle.dump({"LogMel_Features": mel, "spkid": "id", "clipid": "clip",
                             "wavid": f"{k:05d}"}, f)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(os.path.join(root, "vox1", "mel_spectrograms", "Bob_B", "evil.pickle"), "wb") as f:
        pickle.dump({"LogMel_Features": Evil()}, f)
    info = prepare.prepare_voxceleb(root, str(tmp_path / "out"), audio_source="mel_pickles",
                                    utterance_shards=1, face_shards=1)
    assert not (tmp_path / "pwned").exists()
    assert info["splits"]["train"]["utterances"] == 4
    assert info["skipped"]["counts"]["utterance"] == 1
    assert "refusing to load global" in "".join(info["skipped"]["first_reasons"])
    train = table.load_split(str(tmp_path / "out"), "train")
    assert train.utterance_sources == [""] * 4  # pickles hold no audio
    first = train.frames.numpy()[:150].astype(np.float32)
    np.testing.assert_allclose(first, normalize_log_mel(raw["Alice_A", 0].T), atol=2e-3)


def test_safe_pickle_refuses_anything_but_plain_data(tmp_path):
    p = tmp_path / "x.pickle"
    with open(p, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(UnsafePickleError, match="expected a dict"):
        load_plain_pickle(str(p))
    with open(p, "wb") as f:
        pickle.dump({"a": np.array(["s"], dtype=object)}, f)
    with pytest.raises(UnsafePickleError, match="x.pickle"):
        load_plain_pickle(str(p))
    with open(p, "wb") as f:
        pickle.dump({"LogMel_Features": np.zeros((39, 5))}, f)
    with pytest.raises(UnsafePickleError, match=r"\(40, T\)"):
        load_reference_mel(str(p))
    p.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(UnsafePickleError, match="not a readable pickle"):
        load_plain_pickle(str(p))


def test_not_a_voxceleb_tree(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VoxCeleb tree"):
        prepare.prepare_voxceleb(str(tmp_path), str(tmp_path / "out"))


def test_reference_split_rule():
    meta = {("vox1", f"id{i}"): (f"N{i}", i) for i in range(20)}
    split = prepare.reference_split(meta)
    assert split["test"] == ["vox1/N8", "vox1/N18"]
    assert split["val"] == ["vox1/N9", "vox1/N19"]
    assert len(split["train"]) == 16


def test_sharded_writer_renames_on_close_and_leaves_nothing_on_failure(tmp_path):
    d = str(tmp_path)
    with records.ShardedWriter(d, "train", "faces", 2) as w:
        for i in range(3):
            w.write(b"record %d" % i)
        # Under their .partial names until the writer closes.
        assert sorted(os.listdir(d)) == [os.path.basename(p) + ".partial" for p in w.paths]
    assert sorted(os.listdir(d)) == [os.path.basename(p) for p in w.paths]
    assert w.shard_counts == [2, 1]
    with pytest.raises(RuntimeError):
        with records.ShardedWriter(d, "val", "faces", 2) as w:
            w.write(b"half")
            raise RuntimeError("disk full")
    assert not any(n.startswith("val-") for n in os.listdir(d))
    # DatasetWriter.abort's call: an exception type without a value.
    w = records.ShardedWriter(d, "test", "faces", 1)
    w.write(b"x")
    w.__exit__(RuntimeError, None, None)
    assert not any(n.startswith("test-") for n in os.listdir(d))


_SERIALIZE_BOTH = """
import hashlib
import numpy as np
from keras_sf2f.data import records
mel = np.linspace(-1, 1, 120 * records.NUM_MEL_BINS, dtype=np.float32).reshape(120, -1)
utterance = records.Utterance("id00001", 3, "id00001/u0", mel, "wav/id00001/u0.wav")
face = records.Face("id00001", 3, "id00001_f00", {s: bytes([s % 251]) * s
                                                  for s in records.IMAGE_SIZES})
print(hashlib.sha256(utterance.to_example() + face.to_example()).hexdigest())
"""


def test_records_are_the_same_bytes_in_every_process():
    """Protobuf orders a map by the process's string hashing unless told to sort it: without
    that, two preparations of the same corpus wrote the same records with other bytes, and
    their shard checksums disagreed."""
    import subprocess
    import sys
    digests = set()
    for hash_seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-c", _SERIALIZE_BOTH], env=env, check=True,
                              capture_output=True, text=True, timeout=300)
        digests.add(done.stdout.strip().splitlines()[-1])
    assert len(digests) == 1, digests
