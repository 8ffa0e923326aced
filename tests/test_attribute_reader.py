"""The attribute reader: trained on face-only identities, it reads voice-linked attributes on
other identities' photos; it reads nothing in a constant face or in faces of the wrong
identities; VoxCeleb's meta-CSV gender is recorded at preparation (and found in older
preparations) and gives a gender-only reader.

A small procedural layout (faces only: 80 face-only identities, 3 photos each) keeps the
reader's training to a few seconds.
"""

import json
import os
import pickle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from keras_sf2f.data import prepare, records  # noqa: E402
from keras_sf2f.data.corpus import draw_face, identity_attributes  # noqa: E402
from keras_sf2f.data.prepare import DatasetWriter  # noqa: E402
from keras_sf2f.data.procedural import face_pngs, identity_name  # noqa: E402
from keras_sf2f.evaluation import attribute_reader as ar  # noqa: E402
from keras_sf2f.image_ranges import pixels_to_normalized  # noqa: E402


TEST = (0, 30)        # evaluated identities (voice-face range)
FACEID = (1000, 1060)  # face-only identities the reader learns from
PHOTOS = 2


def _generator_space(uint8):
    return pixels_to_normalized(tf.constant(uint8)).numpy()


@pytest.fixture(scope="module")
def procedural_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("attr_data"))
    names = {"test": [identity_name(i) for i in range(*TEST)],
             "faceid": [identity_name(i) for i in range(*FACEID)]}
    source = {"kind": "procedural", "seed": 0,
              "ranges": {"train": [100, 200], "val": [200, 210], "test": list(TEST),
                         "faceid": list(FACEID)},
              "spec": {"face_quality": "aligned"}}
    writer = DatasetWriter(d, names, utterance_shards=1, source=source)
    for i in range(*FACEID):
        for k in range(PHOTOS):
            writer.add_face(identity_name(i), f"f{k}",
                            face_pngs(draw_face(0, i, k, 128), records.IMAGE_SIZES))
    writer.close()
    return d


@pytest.fixture(scope="module")
def trained(procedural_dir):
    names = [identity_name(i) for i in range(*TEST)]
    return ar.reader_for_split(procedural_dir, "test", names, seed=0)


@pytest.fixture(scope="module")
def test_photos():
    return _generator_space(np.stack([draw_face(0, i, 0, 64) for i in range(*TEST)]))


def test_reader_is_trained_on_face_only_identities(procedural_dir, trained, monkeypatch):
    reader, targets, note = trained
    assert "60 face-only (faceid) identities' 120 photos" in note
    assert set(reader.names) == set(ar.READ_ATTRIBUTES)
    # Targets are the evaluated identities' own latent attributes, in label order.
    assert targets["gender"].tolist() == [identity_attributes(0, i).gender
                                          for i in range(*TEST)]
    # What the reader was fitted to: faceid identities only, never an evaluated one.
    seen = {}

    def spy(faces, targets, **kwargs):
        seen["faces"], seen["gender"] = faces, targets["gender"]
        raise RuntimeError("stop")

    monkeypatch.setattr(ar.AttributeReader, "train", staticmethod(spy))
    with pytest.raises(RuntimeError, match="stop"):
        ar.reader_for_split(procedural_dir, "test", [identity_name(i) for i in range(*TEST)])
    faceid_gender = [identity_attributes(0, i).gender for i in range(*FACEID)]
    assert seen["gender"].tolist() == np.repeat(faceid_gender, PHOTOS).tolist()
    assert len(seen["faces"]) == PHOTOS * (FACEID[1] - FACEID[0])


def test_reads_attributes_on_other_identities_photos(trained, test_photos):
    reader, targets, _ = trained
    f = reader.figures(test_photos, targets)
    # Colour and layout attributes are plain on the photos of identities it never saw.
    for name in ("gender", "skin_tone", "accent", "hair_length"):
        assert f[f"attribute_r_{name}"] > 0.6, (name, f)
    assert f["attribute_gender_accuracy"] >= 0.8
    assert f["attribute_r_shared_mean"] > 0.3
    # Same figures from uint8 input (the reader reads 8-bit pictures).
    uint8 = np.stack([draw_face(0, i, 0, 64) for i in range(*TEST)])
    assert reader.figures(uint8, targets) == pytest.approx(f)


def test_nothing_read_from_a_constant_face_or_the_wrong_identities(trained, test_photos):
    reader, targets, _ = trained
    constant = reader.figures(np.repeat(test_photos[:1], len(test_photos), 0), targets)
    assert all(constant[f"attribute_r_{n}"] == 0.0 for n in ar.READ_ATTRIBUTES)
    majority = max(np.mean(targets["gender"] > 0), np.mean(targets["gender"] < 0))
    assert constant["attribute_gender_accuracy"] in (pytest.approx(majority),
                                           pytest.approx(1 - majority))
    # Photos given to the wrong identities (a fixed derangement): the correlation with the
    # true attributes collapses.
    wrong = reader.figures(np.roll(test_photos, 7, axis=0), targets)
    right = reader.figures(test_photos, targets)
    assert abs(wrong["attribute_r_shared_mean"]) < 0.3 < right["attribute_r_shared_mean"]
    # Sub-quantum float differences are not information: +/- 0.2/255 of an 8-bit step.
    rng = np.random.default_rng(0)
    jitter = np.repeat(test_photos[:1], len(test_photos), 0) + rng.uniform(
        -0.2, 0.2, size=test_photos.shape).astype(np.float32) / 255 / 0.226
    assert reader.figures(jitter, targets)["attribute_r_gender"] == 0.0
    # A face copied for everyone with 1 % of its pixels one level off (what rounding does to a
    # collapsed generator's outputs): nothing is read either.
    base = np.repeat(np.round((test_photos[:1] * 0.226 + 0.45) * 255).clip(0, 255), 30, 0)
    flips = (rng.random(base.shape) < 0.01) * rng.choice([-1, 1], size=base.shape)
    rounded = np.clip(base + flips, 0, 255).astype(np.uint8)
    assert len({r.tobytes() for r in rounded}) == len(rounded)  # all 30 differ
    figures = reader.figures(rounded, targets)
    assert all(figures[f"attribute_r_{n}"] == 0.0 for n in ar.READ_ATTRIBUTES)


def test_no_reader_without_attributes(tmp_path):
    names = {"test": ["a", "b"]}
    writer = DatasetWriter(str(tmp_path), names, utterance_shards=1)
    for n in names["test"]:
        writer.add_face(n, "f0", face_pngs(draw_face(0, 1, 0, 128), records.IMAGE_SIZES))
    writer.close()
    reader, targets, note = ar.reader_for_split(str(tmp_path), "test", names["test"])
    assert reader is None and targets is None and "no latent attributes" in note


# -- VoxCeleb: gender from the meta CSV ------------------------------------------------------

# Corpus identities with a clear gender, drawn as the "celebrities'" photos.
def _by_gender(count, male):
    out, i = [], 0
    while len(out) < count:
        g = identity_attributes(0, i).gender
        if (g > 0.5) if male else (g < -0.5):
            out.append(i)
        i += 1
    return out


@pytest.fixture(scope="module")
def vox_prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vox_gender"))
    men, women = _by_gender(10, True), _by_gender(10, False)
    people = [(f"id1{k:04d}", f"M_{k}", "m", c) for k, c in enumerate(men)] + \
             [(f"id2{k:04d}", f"W_{k}", "f", c) for k, c in enumerate(women)]
    os.makedirs(os.path.join(root, "vox1"))
    with open(os.path.join(root, "vox1", "vox1_meta.csv"), "w") as f:
        f.write("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n")
        f.writelines(f"{i}\t{n}\t{g}\tUSA\tdev\n" for i, n, g, _ in people)
    test = ["M_0", "M_1", "W_0", "W_1"]
    with open(os.path.join(root, "split.json"), "w") as f:
        json.dump({"vox1": {"train": [n for _, n, _, _ in people if n not in test],
                            "val": [], "test": test}}, f)
    rng = np.random.default_rng(0)
    for _, name, _, corpus_id in people:
        mels = os.path.join(root, "vox1", "mel_spectrograms", name)
        os.makedirs(mels)
        with open(os.path.join(mels, "c_00001.pickle"), "wb") as f:
            pickle.dump({"LogMel_Features": rng.normal(10.99, 3.17, size=(40, 150))}, f)
        faces = os.path.join(root, "vox1", "masked_faces", name)
        os.makedirs(faces)
        for k in range(2):
            Image.fromarray(draw_face(0, corpus_id, k, 128)).save(
                os.path.join(faces, f"{k}.png"))
    out = str(tmp_path_factory.mktemp("vox_out"))
    prepare.prepare_voxceleb(root, out, audio_source="mel_pickles", utterance_shards=1,
                             face_shards=1)
    return root, out, {f"vox1/{n}": (1.0 if g == "m" else -1.0) for _, n, g, _ in people}


def test_voxceleb_gender_is_recorded_at_preparation(vox_prepared):
    root, out, expected = vox_prepared
    with open(os.path.join(out, ar.IDENTITY_ATTRIBUTES_FILE)) as f:
        recorded = json.load(f)["gender"]
    assert recorded == expected
    assert ar.voxceleb_genders(out) == expected
    assert prepare.voxceleb_genders(root) == expected


def test_voxceleb_gender_of_an_earlier_preparation_comes_from_the_meta_csv(vox_prepared,
                                                                          tmp_path):
    import shutil
    root, out, expected = vox_prepared
    old = str(tmp_path / "old")
    shutil.copytree(out, old)
    os.remove(os.path.join(old, ar.IDENTITY_ATTRIBUTES_FILE))
    assert ar.voxceleb_genders(old) == expected  # via dataset.json's recorded root
    info_path = os.path.join(old, records.DATASET_FILE)
    with open(info_path) as f:
        info = json.load(f)
    info["source"]["root"] = str(tmp_path / "gone")
    with open(info_path, "w") as f:
        json.dump(info, f)
    assert ar.voxceleb_genders(old) is None
    _, _, note = ar.reader_for_split(old, "test", ["vox1/M_0"])
    assert "no recorded gender" in note


def test_voxceleb_gender_reader(vox_prepared):
    _, out, expected = vox_prepared
    with open(os.path.join(out, records.SPLITS_FILE)) as f:
        names = json.load(f)["test"]
    reader, targets, note = ar.reader_for_split(out, "test", names, seed=0)
    assert reader.names == ("gender",)
    assert targets["gender"].tolist() == [expected[n] for n in names]
    assert "gender only" in note and "training split" in note  # no faceid split here
    faces, labels, _ = ar._faces(out, "test")
    f = reader.figures(faces[np.r_[True, np.diff(labels) != 0]], targets)
    assert set(f) == {"attribute_r_gender", "attribute_gender_accuracy"}
    assert -1.0 <= f["attribute_r_gender"] <= 1.0 and 0.0 <= f["attribute_gender_accuracy"] <= 1.0
