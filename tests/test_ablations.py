"""trainers/ablations.py end to end on a tiny prepared dataset, then resumption, the evaluation
entry point on two of its checkpoints, and the pure helpers (variant selection, flagfile
reading, the in-the-wild preparation arguments, the orderings' verdicts, the demo voice2face
configuration).

The dataset (aligned faces, and the same voices with "in-the-wild" faces), the face network
(a 1/16-width FaceNet, untrained) and tiny models (8-channel encoders, 32-d embedding, 2-layer
discriminators) are made here, so the command's time goes to its training runs, each 2 steps
(1 for the fuser), two at a time. Their cost is start-up and tracing, 25-30 CPU-seconds per run
whatever the model size, so the end-to-end run trains six variants (one of each kind of change)
and a pure test checks every variant's command through the flag parser.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_sf2f.data import records
from keras_sf2f.data.corpus import CorpusSpec
from keras_sf2f.data.procedural import face_pngs
from keras_sf2f.evaluation import ablations
from keras_sf2f.evaluation.ablations import catalog, tables

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_VAL, NUM_TEST, NUM_FACEID = 6, 3, 3, 4
STEPS, FUSER_STEPS = 2, 1
# Trained end to end (one of each kind of change, plus sf2f as what sf2f_fuser starts from);
# test_every_variant_command_changes_only_what_it_names covers all ten commands.
ASKED = ("sf2f_fuser", "voice2face", "baseline_decoder", "low_quality_faces")
TRAINED = ("sf2f",) + ASKED

BASE = f"""
--encoder=inception
--encoder_channels=8,8,8,8
--embedding_dim=32
--noencoder_add_noise
--fuser=none
--decoder=upconv_64
--image_size=64
--image_discriminator_arch_64=C4-4-2,C4-8-2
--identity_classifier_arch_64=C4-4-2,C4-8-2
--num_train_identities={NUM_TRAIN}
--batch_size=3
--l1_weight=10
--gan_weight=1
--ac_weight=0.05
--perceptual_weight=100
--eval_batch_size=8
--num_image_identities=2
--summary_every_steps=1
--log_every_seconds=0
"""
FUSER = "--fuser=attention\n--train_fuser_only\n--learning_rate=1e-4\n--train_steps=60\n" \
        "--fuser_windows=3\n"
VOICE2FACE = f"""
--encoder=cnn
--encoder_channels=8,8,8,8
--embedding_dim=32
--encoder_add_noise
--fuser=none
--decoder=deconv_64
--deconv_decoder_channels=16,8,8,4,4
--image_size=64
--image_discriminator_arch_64=
--identity_classifier_arch_64=C4-4-2-1,C4-8-2-1
--discriminator_normalization_64=none
--discriminator_activation_64=leakyrelu-0.2
--num_train_identities={NUM_TRAIN}
--batch_size=3
--l1_weight=100
--gan_weight=0
--ac_weight=1
--perceptual_weight=0
--eval_batch_size=8
--log_every_seconds=0
"""


def _write_data(path, wild: bool):
    """Mel offsets and face colours follow the identity; the wild copy has the same speech
    and shifted, noisy faces on a textured background."""
    from keras_sf2f.data.prepare import DatasetWriter

    names = {"train": [f"tr{i}" for i in range(NUM_TRAIN)],
             "val": [f"va{i}" for i in range(NUM_VAL)],
             "test": [f"te{i}" for i in range(NUM_TEST)],
             "faceid": [f"fi{i}" for i in range(NUM_FACEID)]}
    speech = np.random.default_rng(0)
    faces = np.random.default_rng(1 if wild else 2)
    writer = DatasetWriter(str(path), names, utterance_shards=1)
    for split, split_names in names.items():
        for i, name in enumerate(split_names):
            if split != "faceid":
                for u in range(2):
                    writer.add_utterance(name, f"{name}_u{u}", speech.normal(
                        size=(260, 40)).astype(np.float32) + 0.3 * i)
            for k in range(2):
                image = np.full([128, 128, 3], (20 * i + 10, 120 + 40 * k, 60), np.uint8)
                top = 40 + (int(faces.integers(-15, 15)) if wild else 0)
                image[top:top + 50, 40:90] = (200 - 15 * i, 80, 30 * k)
                if wild:
                    noise = faces.normal(0, 25, size=image.shape)
                    image = np.clip(image + noise, 0, 255).astype(np.uint8)
                writer.add_face(name, f"{name}_f{k}", face_pngs(image, records.IMAGE_SIZES))
    writer.close()


def _write_face_network(path):
    from keras_sf2f.training.face_identity import build_face_network, save_face_network

    architecture = {"embedding_dim": 16, "width_multiplier": 0.0625, "repeats": [1, 1, 1],
                    "dropout_rate": 0.0}
    save_face_network(build_face_network(architecture),
                      {"architecture": architecture, "image_size": 64,
                       "input": {"normalize_method": "imagenet"}}, str(path))


def _command(root, *extra):
    return [sys.executable, os.path.join(REPO_ROOT, "trainers", "ablations.py"),
            f"--output_dir={root / 'ablations'}", f"--data_dir={root / 'data'}",
            f"--face_network={root / 'face_net'}", f"--wild_data_dir={root / 'wild'}",
            f"--ablation_config={root / 'base.cfg'}",
            f"--ablation_fuser_config={root / 'fuser.cfg'}",
            f"--ablation_voice2face_config={root / 'v2f.cfg'}",
            f"--train_steps={STEPS}", f"--fuser_steps={FUSER_STEPS}", "--eval_runs=2",
            "--noeval_dlib", "--ablation_jobs=2", f"--variants={','.join(ASKED)}", *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OPENBLAS_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablations")
    (root / "base.cfg").write_text(BASE)
    (root / "fuser.cfg").write_text(FUSER)
    (root / "v2f.cfg").write_text(VOICE2FACE)
    _write_data(root / "data", wild=False)
    _write_data(root / "wild", wild=True)
    _write_face_network(root / "face_net")
    first = subprocess.run(_command(root), capture_output=True, text=True, env=_env(),
                           timeout=600)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    second = subprocess.run(_command(root), capture_output=True, text=True, env=_env(),
                            timeout=300)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    return root, first.stdout, second.stdout


def _train_config(argv):
    """The validated training configuration that train.py's flags make of ``argv``."""
    from keras_sf2f.flags import ToolFlags
    from keras_sf2f.training.config import TrainConfig

    flag_values = ToolFlags("train")
    try:
        flag_values(["train", *argv])
        return flag_values.config(TrainConfig).validate()
    finally:
        flag_values.unparse_flags()


def _flags(root, name):
    """A variant's effective configuration (its flags.cfg read as training reads it), with the
    model options beside the training ones."""
    from keras_sf2f.flags import ToolFlags
    from keras_sf2f.training.config import TrainConfig

    flag_values = ToolFlags("train")
    flag_values(["train", f"--flagfile={root / 'ablations' / 'variants' / name / 'model'}"
                          f"/flags.cfg"])
    values = flag_values.config(TrainConfig).to_dict()
    return {**values.pop("model"), **values}


def test_each_row_trained_the_variant_it_names(ablation_run):
    root, _, _ = ablation_run
    variants_dir = root / "ablations" / "variants"
    # sf2f was not asked for: it came in as what sf2f_fuser starts from.
    assert sorted(os.listdir(variants_dir)) == sorted(TRAINED)
    flags = {name: _flags(root, name) for name in TRAINED}
    full = flags["sf2f"]
    assert (full["l1_weight"], full["gan_weight"], full["ac_weight"],
            full["perceptual_weight"]) == (10, 1, 0.05, 100)
    assert (full["encoder"], full["decoder"], full["fuser"]) == ("inception", "upconv_64", "none")
    assert full["data_dir"] == str(root / "data")
    expected = {
        "baseline_decoder": {"decoder": "deconv_64",
                             "deconv_decoder_channels": [64, 32, 16, 8, 4]},
        "low_quality_faces": {"data_dir": str(root / "wild")},
    }
    for name, changes in expected.items():
        differing = {k for k in full if flags[name].get(k) != full[k]}
        # One change each, apart from where the model directory is.
        assert differing == set(changes) | {"model_dir"}, name
        for key, value in changes.items():
            assert flags[name][key] == value, (name, key)
    v2f = flags["voice2face"]
    assert (v2f["encoder"], v2f["decoder"], v2f["gan_weight"], v2f["perceptual_weight"],
            v2f["encoder_add_noise"]) == ("cnn", "deconv_64", 0, 0, True)
    fused = flags["sf2f_fuser"]
    assert fused["fuser"] == "attention" and fused["train_fuser_only"]
    assert fused["init_checkpoint"] == str(variants_dir / "sf2f" / "model")
    assert fused["train_steps"] == FUSER_STEPS and full["train_steps"] == STEPS
    for name in TRAINED:
        with open(variants_dir / name / "variant.json") as f:
            record = json.load(f)
        assert record["status"] == "done"
        assert record["trained_step"] == (FUSER_STEPS if name == "sf2f_fuser" else STEPS)
        assert (variants_dir / name / "report" / "report.md").is_file()
        # Evaluation scalars beside the run's own validation summaries.
        assert os.listdir(variants_dir / name / "model" / "eval" / name)
        assert os.listdir(variants_dir / name / "model" / "val")


def test_tables_have_a_row_per_variant_with_its_flags(ablation_run):
    root, _, _ = ablation_run
    out = root / "ablations"
    with open(out / "ablations.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == set(TRAINED)
    protocols = {r["protocol"] for r in rows}
    assert protocols == {"crops_1.25s", "crops_5s", "fuser_all_windows"}
    assert {r["embedder"] for r in rows} == {"face_identity_net"}
    for r in rows:
        with open(out / "variants" / r["variant"] / "variant.json") as f:
            record = json.load(f)
        assert r["train_args"] == " ".join(record["train_args"])
        assert r["overrides"] == " ".join(record["overrides"])
        assert r["runs"] == ("1" if r["protocol"] == "fuser_all_windows" else "2")
        assert 0.0 <= float(r["recall@1_mean"]) <= 1.0
        assert r["recall@10_mean"] == ""  # K=10 exceeds the 3 test identities
    decoder = [r for r in rows if r["variant"] == "baseline_decoder"]
    overrides = "--decoder=deconv_64 --deconv_decoder_channels=64,32,16,8,4"
    assert decoder and all(r["overrides"] == overrides and r["train_args"].endswith(overrides)
                           for r in decoder)
    md = (out / "ablations.md").read_text()
    assert "## Table 2 (ablations) -- embedder `face_identity_net`" in md
    assert "## Table 3 (SF2F vs voice2face) -- embedder `face_identity_net`" in md
    for label in ("lower-quality training faces (in the wild) (`low_quality_faces`) | 1.25 s",
                  "baseline decoder (deconvolution) (`baseline_decoder`) | 5 s",
                  "SF2F (full) (`sf2f`) | 5 s", "SF2F (full) (`sf2f`) | no | 1.25 s",
                  "SF2F + fuser (`sf2f_fuser`) | yes | 5 s", "voice2face (`voice2face`) | no"):
        assert label in md
    assert "`no_l1`" not in md  # not asked for, not run, not pretended
    for name in ("figure1_1.25s.png", "figure1_5s.png", "figure1_all_windows.png"):
        assert (out / name).is_file() and f"]({name})" in md
    # Orderings at the largest K the 3 test identities allow, and on cosine similarity.
    orderings = md.split("## The paper's orderings on these runs")[1]
    assert "### recall@1 -- embedder `face_identity_net`" in orderings
    assert "### cosine_similarity -- embedder `face_identity_net`" in orderings
    assert "| removing/replacing for `baseline_decoder` hurts |" in orderings
    assert "| the fuser helps (sf2f_fuser above sf2f) |" in orderings


def test_rerun_skips_finished_variants(ablation_run):
    _, first, second = ablation_run
    assert first.count("] training ") == len(TRAINED)
    assert "training " not in second and "evaluating " not in second
    for name in TRAINED:
        assert f"{name}: done before, skipped" in second


def test_tables_only_rewrites_the_tables_from_finished_variants(ablation_run, tmp_path):
    """--ablation_tables_only trains and evaluates nothing: the tables come from the variants
    finished so far, an unfinished one is marked 'not run', and a run with none is an
    error that says so. (In place: a variant's record names its own directory.)"""
    root, _, _ = ablation_run
    out_dir = root / "ablations"
    unfinished = TRAINED[-1]
    record = out_dir / "variants" / unfinished / "variant.json"
    aside = tmp_path / "variant.json"
    shutil.move(record, aside)
    os.remove(out_dir / "ablations.md")
    command = _command(root, "--ablation_tables_only")
    try:
        out = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "training " not in out.stdout and "evaluating " not in out.stdout
        assert f"marked 'not run': {unfinished}" in out.stdout
        table = (out_dir / "ablations.md").read_text()
        assert re.search(rf"\| `{unfinished}` \|[^\n]*\| not run \|", table), table[-2000:]
        for name in TRAINED[:-1]:
            assert f"[report](variants/{name}/report/report.md)" in table
    finally:
        shutil.move(aside, record)
    # Every variant finished again: the tables are whole again, from the same records.
    out = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0 and "not run" not in out.stdout, out.stdout[-2000:]
    assert f"[report](variants/{unfinished}/report/report.md)" in (
        out_dir / "ablations.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    command = [a for a in command if not a.startswith("--output_dir=")] + [
        f"--output_dir={empty}"]
    out = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 1 and "no finished variant" in out.stderr, out.stderr[-2000:]


def test_every_variant_command_changes_only_what_it_names(tmp_path):
    """Every variant of the default plan (the demo flagfiles), through absl's parser: the
    training configuration each command produces differs from full SF2F's exactly by the
    variant's change. (The end-to-end test above trains a subset to stay fast.)"""
    configs = os.path.join(REPO_ROOT, "configs")
    plan = ablations.Plan(output_dir=str(tmp_path / "out"), data_dir="/d", face_network="/f",
                          base_config=os.path.join(configs, "demo.cfg"),
                          fuser_config=os.path.join(configs, "demo_fuser.cfg"),
                          voice2face_config=os.path.join(configs, "demo_voice2face.cfg"),
                          train_steps=300)
    runner = ablations.Ablations(plan)
    assert [v.name for v in runner.variants] == list(ablations.VARIANT_NAMES)
    trained = {v.name: _train_config(runner.train_args(v)).to_dict()
               for v in runner.variants}

    def changes(name):
        full = dict(trained["sf2f"], **{f"model.{k}": x for k, x in
                                        trained["sf2f"]["model"].items()})
        mine = dict(trained[name], **{f"model.{k}": x for k, x in
                                      trained[name]["model"].items()})
        return {k: mine[k] for k in full if k not in ("model", "model_dir") and
                mine[k] != full[k]}

    assert trained["sf2f"]["train_steps"] == 300 and trained["sf2f"]["data_dir"] == "/d"
    assert changes("no_l1") == {"l1_weight": 0.0}
    assert changes("no_gan") == {"gan_weight": 0.0}
    assert changes("no_ac") == {"ac_weight": 0.0}
    assert changes("no_perceptual") == {"perceptual_weight": 0.0}
    assert changes("baseline_encoder") == {"model.encoder": "cnn"}
    assert changes("baseline_decoder") == {"model.decoder": "deconv_64",
                                           "model.deconv_decoder_channels":
                                           [256, 128, 64, 32, 16]}
    assert changes("low_quality_faces") == {"data_dir": plan.wild_data_dir}
    assert changes("generator_ema") == {"generator_ema_decay": 0.99}
    assert changes("adversarial_delay") == {"adversarial_start_step": 300,
                                            "adversarial_ramp_steps": 100}
    assert {k: trained["sf2f"][k] for k in ("l1_weight", "gan_weight", "ac_weight",
                                            "perceptual_weight", "gradient_l1_weight")} == {
        "l1_weight": 10.0, "gan_weight": 1.0, "ac_weight": 0.05, "perceptual_weight": 100.0,
        "gradient_l1_weight": 0.0}
    # The demo: 2 x 300 steps each of decoder and voice pre-training, then 2 x 300
    # generator steps.
    # The demo flagfile decays the last half of its generator steps: so does every stage-1
    # row, at its own length (sf2f: from step 150 of 300).
    assert trained["sf2f"]["lr_decay_start_step"] == 150
    assert changes("demo_recipe") == {"gan_weight": 0.0, "ac_weight": 0.0,
                                      "perceptual_weight": 10.0, "gradient_l1_weight": 10.0,
                                      "train_steps": 1800, "lr_decay_start_step": 1500,
                                      "eval_every_steps": 1800, "voice_pretrain_steps": 600,
                                      "decoder_pretrain_steps": 600}
    assert changes("demo_no_pretrain") == {"gan_weight": 0.0, "ac_weight": 0.0,
                                           "perceptual_weight": 10.0,
                                           "gradient_l1_weight": 10.0, "train_steps": 600,
                                           "lr_decay_start_step": 300,
                                           "eval_every_steps": 600}
    # The tables' list of runs names each row's change, also those that are not a flag.
    text = {v.name: v.change_text() for v in runner.variants}
    assert text["sf2f"] == "(base flagfile)" and text["no_l1"] == "--l1_weight=0"
    assert text["demo_no_pretrain"] == "(no decoder or voice pre-training)"
    assert text["demo_recipe"] == "(base flagfile)"
    fused = changes("sf2f_fuser")
    assert {k: fused.get(k) for k in ("model.fuser", "train_fuser_only", "train_steps",
                                      "init_checkpoint")} == {
        "model.fuser": "attention", "train_fuser_only": True, "train_steps": 60,
        "init_checkpoint": runner.model_dir("sf2f")}
    # Everything else that differs is set by the fuser flagfile or is the step-derived
    # schedule (validation and checkpoint at the end of the 60 steps).
    fuser_flags = set(ablations.read_flagfile(plan.fuser_config))
    assert {k.removeprefix("model.") for k in fused} <= fuser_flags | {
        "train_steps", "eval_every_steps", "checkpoint_every_steps", "init_checkpoint"}
    v2f = changes("voice2face")
    assert v2f["model.encoder"] == "cnn" and v2f["model.decoder"] == "deconv_64"
    assert v2f["gan_weight"] == 0.0 and v2f["perceptual_weight"] == 0.0
    assert "train_steps" not in v2f  # same schedule as the SF2F rows


@pytest.mark.parametrize("decoder_steps", [None, 2400])
def test_demo_recipe_rows_change_only_what_they_name(tmp_path, decoder_steps):
    """--ablation_recipe=demo: every SF2F row is the demo flagfile's own recipe at its length
    (its decoder and voice pre-training and generator steps, also when the flagfile's
    proportions change: decoder_steps) changed by one thing; the paper's GAN and AC terms are
    rows that add them; --ablation_seed reaches every training."""
    configs = os.path.join(REPO_ROOT, "configs")
    base_config = os.path.join(configs, "demo.cfg")
    if decoder_steps is not None:
        demo = ablations.read_flagfile(base_config)
        total = (int(demo["train_steps"]) - int(demo["decoder_pretrain_steps"])
                 + decoder_steps)
        (tmp_path / "longer.cfg").write_text(
            f"--flagfile={base_config}\n--decoder_pretrain_steps={decoder_steps}\n"
            f"--train_steps={total}\n")
        base_config = str(tmp_path / "longer.cfg")
    plan = ablations.Plan(output_dir=str(tmp_path / "out"), data_dir="/d", face_network="/f",
                          base_config=base_config,
                          fuser_config=os.path.join(configs, "demo_fuser.cfg"),
                          voice2face_config=os.path.join(configs, "demo_voice2face.cfg"),
                          recipe="demo", train_seed=7)
    demo = ablations.read_flagfile(plan.base_config)
    generator_steps = (int(demo["train_steps"]) - int(demo["voice_pretrain_steps"])
                       - int(demo["decoder_pretrain_steps"]))
    assert plan.train_steps == generator_steps
    runner = ablations.Ablations(plan)
    assert [v.name for v in runner.variants] == list(catalog.DEMO_VARIANT_NAMES)
    trained = {v.name: _train_config(runner.train_args(v)).to_dict()
               for v in runner.variants}
    sf2f = trained["sf2f"]
    # Full SF2F is the demo flagfile as it is, seed aside.
    for key in ("l1_weight", "gan_weight", "ac_weight", "perceptual_weight",
                "gradient_l1_weight", "train_steps",
                "voice_pretrain_steps", "decoder_pretrain_steps", "learning_rate"):
        assert str(sf2f[key]) == demo[key] or float(sf2f[key]) == float(demo[key]), key
    assert {v["seed"] for v in trained.values()} == {7}
    # The demo's own decay point in the row that is the demo, and the same share of the
    # generator steps in every other stage-1 row.
    assert sf2f["lr_decay_start_step"] == int(demo["lr_decay_start_step"])
    share = plan.lr_decay_share
    assert 0 < share <= 1
    for v in runner.variants:
        if not v.stage2_of and v.config == "base" and v.name != "no_lr_decay":
            steps = trained[v.name]["train_steps"]
            generator = runner.phase_steps(v)[2]
            assert trained[v.name]["lr_decay_start_step"] == steps - round(generator * share)

    def changes(name):
        return {k: x for k, x in trained[name].items()
                if k not in ("model", "model_dir") and x != sf2f[k]} | {
            f"model.{k}": x for k, x in trained[name]["model"].items()
            if x != sf2f["model"][k]}

    assert changes("no_l1") == {"l1_weight": 0.0}
    assert changes("no_perceptual") == {"perceptual_weight": 0.0}
    assert changes("no_gradient_l1") == {"gradient_l1_weight": 0.0}
    assert changes("no_lr_decay") == {"lr_decay_start_step": -1}
    assert changes("with_gan") == {"gan_weight": 1.0}
    assert changes("with_ac") == {"ac_weight": 0.05}
    assert changes("baseline_encoder") == {"model.encoder": "cnn"}
    assert changes("low_quality_faces") == {"data_dir": plan.wild_data_dir}
    assert changes("generator_ema") == {"generator_ema_decay": 0.99}
    assert changes("voice_quality") == {"model.voice_quality_channels": True}
    without_decoder = int(demo["train_steps"]) - int(demo["decoder_pretrain_steps"])
    decaying = round(generator_steps * share)
    assert changes("no_decoder_pretrain") == {"decoder_pretrain_steps": 0,
                                              "train_steps": without_decoder,
                                              "lr_decay_start_step": without_decoder - decaying,
                                              "eval_every_steps": without_decoder}
    assert changes("no_pretrain") == {"voice_pretrain_steps": 0, "decoder_pretrain_steps": 0,
                                      "train_steps": generator_steps,
                                      "lr_decay_start_step": generator_steps - decaying,
                                      "eval_every_steps": generator_steps}
    # The tables' list of runs names each row's change, also those that are not a flag.
    text = {v.name: v.change_text() for v in runner.variants}
    assert text["sf2f"] == "(base flagfile)" and text["no_l1"] == "--l1_weight=0"
    assert text["no_pretrain"] == "(no decoder or voice pre-training)"
    assert text["no_decoder_pretrain"] == "(no decoder pre-training)"
    assert text["low_quality_faces"] == "(in-the-wild training faces)"
    assert text["sf2f_fuser"] == "(fuser flagfile, init from sf2f)"
    # The tables' opening says how long each row pre-trains, from the flagfile.
    decoder = int(demo["decoder_pretrain_steps"])
    assert tables._pretraining_text(plan) == (
        f" after {decoder} decoder and {int(demo['voice_pretrain_steps'])} voice pre-training "
        f"steps (the base flagfile's proportions; the rows named for a pre-training leave it "
        f"out)")
    fused = changes("sf2f_fuser")
    assert fused["model.fuser"] == "attention" and fused["voice_pretrain_steps"] == 0
    assert fused["decoder_pretrain_steps"] == 0
    assert "gan_weight" not in fused and "perceptual_weight" not in fused
    with pytest.raises(ablations.AblationError, match="unknown ablation recipe"):
        ablations.Plan(output_dir="o", data_dir="d", face_network="f",
                       base_config=plan.base_config, fuser_config=plan.fuser_config,
                       voice2face_config=plan.voice2face_config, recipe="paper")


def test_evaluate_entry_point_with_baseline_and_reference_galleries(ablation_run):
    root, _, _ = ablation_run
    variants_dir = root / "ablations" / "variants"
    common = [sys.executable, os.path.join(REPO_ROOT, "trainers", "evaluate.py"),
              f"--flagfile={root / 'base.cfg'}", f"--data_dir={root / 'data'}",
              f"--checkpoint_dir={variants_dir / 'sf2f' / 'model'}",
              f"--face_network={root / 'face_net'}", "--eval_runs=1", "--noeval_dlib",
              "--noeval_untrained_baseline",
              f"--baseline_checkpoint_dir={variants_dir / 'voice2face' / 'model'}"]
    refused = subprocess.run(common + [f"--report_dir={root / 'refused'}",
                                       "--reference_galleries"],
                             capture_output=True, text=True, env=_env(), timeout=300)
    assert refused.returncode == 1
    assert f"only {NUM_TEST}" in refused.stderr and not (root / "refused" / "report.md").exists()
    report_dir = root / "report"
    done = subprocess.run(common + [f"--report_dir={report_dir}"], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(report_dir / "metrics.json") as f:
        assert set(json.load(f)["results"]) == {"SF2F", "voice2face"}
    report = (report_dir / "report.md").read_text()
    assert "ground truth | SF2F | voice2face" in report
    assert "(step 2)" in report
    runs = {os.path.join(a, b) for a in os.listdir(report_dir / "tensorboard")
            for b in os.listdir(report_dir / "tensorboard" / a)}
    assert runs == {os.path.join(m, p) for m in ("SF2F", "voice2face")
                    for p in ("crops_1.25s", "crops_5s", "fuser_all_windows")}


# -- pure helpers -------------------------------------------------------------------------------

def test_voice_quality_row_gets_data_with_the_channels(tmp_path):
    """Data prepared for the voice-quality row carries the channels; given data without them
    leaves that row out with the reason, and the other rows run."""
    from keras_sf2f.evaluation.ablations import inputs

    face_net = tmp_path / "face_net"
    face_net.mkdir()
    (face_net / "face_identity.json").write_text("{}")
    chosen = catalog.select(catalog.variants(128, "demo"), ["sf2f", "voice_quality"])
    calls = []

    def run_tool(script, args, log_path, what):
        calls.append((script, args))
        os.makedirs(args[1].split("=", 1)[1])
        with open(os.path.join(args[1].split("=", 1)[1], "dataset.json"), "w") as f:
            json.dump({"voice_quality_channels": ["harmonicity"] if "--voice_quality_channels"
                       in args else []}, f)

    def plan(data):
        return ablations.Plan(output_dir=str(tmp_path / "out"), data_dir=str(data),
                              face_network=str(face_net),
                              base_config=os.path.join(REPO_ROOT, "configs", "demo.cfg"),
                              fuser_config=os.path.join(REPO_ROOT, "configs", "demo_fuser.cfg"),
                              voice2face_config=os.path.join(REPO_ROOT, "configs",
                                                             "demo_voice2face.cfg"),
                              recipe="demo")
    failed = inputs.ensure_inputs(plan(tmp_path / "fresh"), chosen, run_tool, print)
    assert failed == {} and calls[0][0] == "trainers/prepare_data.py"
    assert "--voice_quality_channels" in calls[0][1]
    assert inputs.has_voice_quality(str(tmp_path / "fresh"))
    # Without the row the data is prepared as before.
    inputs.ensure_inputs(plan(tmp_path / "plain"), chosen[:1], run_tool, print)
    assert "--voice_quality_channels" not in calls[1][1]
    failed = inputs.ensure_inputs(plan(tmp_path / "plain"), chosen, run_tool, print)
    assert list(failed) == ["voice_quality"] and "--voice_quality_channels" in failed[
        "voice_quality"]
    assert len(calls) == 2  # existing data is not prepared again


def test_selection_adds_what_a_variant_starts_from():
    all_variants = ablations.variants(128)
    assert [v.name for v in ablations.select(all_variants, ["sf2f_fuser"])] == [
        "sf2f", "sf2f_fuser"]
    assert [v.name for v in ablations.select(all_variants, ["no_gan", "no_l1"])] == [
        "no_l1", "no_gan"]
    assert len(ablations.select(all_variants, [])) == len(ablations.VARIANT_NAMES)
    with pytest.raises(ablations.AblationError, match="unknown variant.*bogus"):
        ablations.select(all_variants, ["bogus"])


def test_baseline_decoder_scales_the_reference_channels():
    # The reference's deconvolution decoder for its 512-d embedding.
    assert catalog._baseline_decoder_channels(512) == "1024,512,256,128,64"
    by_name = {v.name: v for v in ablations.variants(128)}
    assert "--deconv_decoder_channels=256,128,64,32,16" in by_name["baseline_decoder"].overrides


def test_read_flagfile_follows_nesting_and_booleans(tmp_path):
    (tmp_path / "inner.cfg").write_text("--embedding_dim=64\n--train_steps=5\n# comment\n")
    (tmp_path / "outer.cfg").write_text("--flagfile=inner.cfg\n--train_steps=9\n"
                                        "--noencoder_add_noise\n--train_fuser_only\n")
    values = ablations.read_flagfile(str(tmp_path / "outer.cfg"))
    assert values == {"embedding_dim": "64", "train_steps": "9", "encoder_add_noise": "false",
                      "train_fuser_only": "true"}
    (tmp_path / "loop.cfg").write_text("--flagfile=loop.cfg\n")
    with pytest.raises(ablations.AblationError, match="includes itself"):
        ablations.read_flagfile(str(tmp_path / "loop.cfg"))


def test_wild_preparation_reproduces_the_corpus_spec():
    import dataclasses
    spec = dataclasses.asdict(CorpusSpec(seed=3, num_identities=40, num_faceid_identities=8))
    args = ablations.wild_prepare_args({"source": {"kind": "procedural", "spec": spec}},
                                       "base.cfg", "/w")
    assert args[:2] == ["--flagfile=base.cfg", "--data_dir=/w"]
    assert {"--corpus_seed=3", "--corpus_identities=40", "--faceid_identities=8",
            "--utterances_per_identity=5", "--face_quality=in_the_wild"} <= set(args)
    assert not any(a.startswith("--extra_train_identities") for a in args)
    spec["extra_train_identities"] = 12
    assert "--extra_train_identities=12" in ablations.wild_prepare_args(
        {"source": {"kind": "procedural", "spec": spec}}, "base.cfg", "/w")
    spec["image_size"] = 64
    with pytest.raises(ablations.AblationError, match="image_size=64"):
        ablations.wild_prepare_args({"source": {"kind": "procedural", "spec": spec}}, "b", "/w")
    with pytest.raises(ablations.AblationError, match="--wild_data_dir"):
        ablations.wild_prepare_args({"source": {"kind": "voxceleb"}}, "b", "/w")


def _cell(mean, std, runs=5):
    return {"mean": mean, "variance": std ** 2, "runs": runs}


def test_orderings_verdicts():
    def model(r125, r5, std=0.01):
        return {p: {"e": {"recall@10": _cell(v, std)}} for p, v in
                (("crops_1.25s", r125), ("crops_5s", r5))}

    results = {"sf2f": model(0.40, 0.45), "no_l1": model(0.30, 0.30),
               "no_gan": model(0.40, 0.46), "sf2f_fuser": model(0.50, 0.55),
               "voice2face": model(0.45, 0.50)}
    verdicts = {claim: verdict for claim, verdict, _ in ablations.orderings(results, "e")}
    assert verdicts["removing/replacing for `no_l1` hurts"] == "holds"
    assert verdicts["removing/replacing for `no_gan` hurts"] == "within noise"
    assert verdicts["`sf2f` above voice2face"] == "reversed"
    assert verdicts["`sf2f_fuser` above voice2face"] == "holds"
    assert verdicts["the fuser helps (sf2f_fuser above sf2f)"] == "holds"
    assert verdicts["5 s above 1.25 s for `sf2f`"] == "holds"
    assert verdicts["the paper's side of every Table-2 row (1.25 s)"].startswith("mixed")
    # The demo recipe's rows that add a paper term: the paper predicts the row above sf2f.
    demo = ablations.variants(128, "demo")
    results.update(with_gan=model(0.30, 0.30), with_ac=model(0.41, 0.60))
    verdicts = {claim: verdict for claim, verdict, _ in
                ablations.orderings(results, "e", chosen=demo)}
    assert verdicts["adding for `with_gan` helps"] == "reversed"
    assert verdicts["adding for `with_ac` helps"] == "mixed: within noise, holds"
    assert verdicts["removing/replacing for `no_l1` hurts"] == "holds"
    assert "removing/replacing for `no_gan` hurts" not in verdicts  # not a demo-recipe row


def test_demo_voice2face_config_matches_the_demo_scale():
    configs = {name: _train_config([
        f"--flagfile={os.path.join(REPO_ROOT, 'configs', name)}.cfg", "--model_dir=m",
        "--data_dir=d", "--face_network=f"]) for name in ("demo", "demo_voice2face")}
    sf2f, v2f = configs["demo"], configs["demo_voice2face"]
    assert (v2f.model.encoder, v2f.model.decoder, v2f.model.encoder_add_noise) == (
        "cnn", "deconv_64", True)
    assert (v2f.gan_weight, v2f.perceptual_weight, v2f.l1_weight, v2f.ac_weight) == (
        0, 0, 100, 1)
    # Same width, batch, schedule and identity count as the demo SF2F it is compared with.
    for field in ("encoder_channels", "embedding_dim", "num_train_identities"):
        assert getattr(v2f.model, field) == getattr(sf2f.model, field), field
    for field in ("batch_size", "learning_rate", "generator_ema_decay"):
        assert getattr(v2f, field) == getattr(sf2f, field), field
    # As many generator steps (the demo's decoder and voice pre-training come before its
    # own).
    assert v2f.train_steps == sf2f.train_steps - sf2f.pretrain_steps
    assert v2f.voice_pretrain_steps == 0
    assert v2f.model.deconv_decoder_channels == tuple(
        int(c) for c in catalog._baseline_decoder_channels(sf2f.model.embedding_dim).split(","))
