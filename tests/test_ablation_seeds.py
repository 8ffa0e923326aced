"""benchmarks/ablation_seeds.py: ablation outputs of several training seeds combined, each
seed's orderings judged on its own runs."""

import json
import os

import pytest
from conftest import REPO_ROOT, load_script

ablation_seeds = load_script("benchmarks/ablation_seeds.py")


def _variant(root, name, seed, r125, r5, status="done", std=0.01):
    d = root / "variants" / name
    (d / "report").mkdir(parents=True)
    (d / "model").mkdir()
    (d / "model" / "flags.cfg").write_text(f"--seed={seed}\n--train_steps=2400\n")
    (d / "variant.json").write_text(json.dumps({"status": status, "train_args": []}))
    cell = lambda v: {"recall@10": {"mean": v, "variance": std ** 2, "runs": 5}}  # noqa: E731
    (d / "report" / "metrics.json").write_text(json.dumps({"results": {name: {
        "crops_1.25s": {"e": cell(r125)}, "crops_5s": {"e": cell(r5)}}}}))


def test_two_seeds_give_per_seed_values_means_and_verdicts(tmp_path, capsys):
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    _variant(s0, "sf2f", 0, 0.50, 0.60)
    _variant(s0, "no_l1", 0, 0.30, 0.30)
    _variant(s0, "with_gan", 0, 0.20, 0.20)
    _variant(s0, "no_perceptual", 0, 0.20, 0.30)
    _variant(s0, "baseline_encoder", 0, 0.9, 0.9, status="running")  # unfinished: left out
    _variant(s1, "sf2f", 1, 0.40, 0.50)
    _variant(s1, "no_l1", 1, 0.41, 0.50)
    _variant(s1, "no_perceptual", 1, 0.30, 0.30)
    out = tmp_path / "seeds.md"
    assert ablation_seeds.main(["--recipe=demo", f"--output={out}", str(s0), str(s1)]) == 0
    text = out.read_text()
    assert "| seed 0 | seed 1 | mean |" in text
    assert "(`sf2f`) | 5 s | 0.600 | 0.500 | 0.550 |" in text
    assert "(`with_gan`) | 5 s | 0.200 | - | 0.200 |" in text
    assert "baseline_encoder" not in text
    # Removing L1 hurts on seed 0, not beyond noise on seed 1; adding the GAN is reversed on
    # seed 0 and not run on seed 1.
    assert "| removing/replacing for `no_l1` hurts | holds | within noise |" in text
    assert "| adding for `with_gan` helps | reversed | - |" in text
    # Each row minus sf2f of the same seed; mean ± standard error over the seeds with both.
    assert "(`no_perceptual`) | 1.25 s | -0.300 | -0.100 | -0.200 ± 0.100 | below on every " \
           "seed |" in text
    assert "(`no_perceptual`) | 5 s | -0.300 | -0.200 | -0.250 ± 0.050 | below on every " \
           "seed |" in text
    assert "(`no_l1`) | 5 s | -0.300 | +0.000 | -0.150 ± 0.150 | mixed |" in text
    assert "(`with_gan`) | 5 s | -0.400 | - | -0.400 | one seed |" in text
    assert "(`sf2f`) | 5 s | +" not in text  # the reference row has no difference line


def test_refuses_what_is_not_one_seeds_ablation_output(tmp_path, capsys):
    assert ablation_seeds.main([str(tmp_path)]) == 1
    assert "no variants/" in capsys.readouterr().err
    _variant(tmp_path, "sf2f", 0, 0.5, 0.6)
    _variant(tmp_path, "no_l1", 1, 0.5, 0.6)
    assert ablation_seeds.main([str(tmp_path)]) == 1
    assert "mixes training seeds" in capsys.readouterr().err


SNAPSHOT = os.path.join(REPO_ROOT, "docs", "ablations", "demo_recipe_gradient_l1")


def test_a_kept_snapshot_reads_as_its_seeds_run():
    # The committed ablations.csv, as trainers/ablations.py wrote it: its cells and its seed.
    seed, results = ablation_seeds.load_run(SNAPSHOT)
    assert seed == "0"
    assert "oracle" not in results
    cell = results["sf2f"]["crops_5s"]["face_identity_net"]["recall@10"]
    assert cell["mean"] == pytest.approx(0.76)
    assert cell["variance"] == pytest.approx(0.021909 ** 2)
    assert cell["runs"] == 5
    assert ablation_seeds.load_run(os.path.join(SNAPSHOT, "ablations.csv"))[1] == results


def test_a_snapshot_combines_with_a_run_directory(tmp_path):
    s1 = tmp_path / "s1"
    _variant(s1, "sf2f", 1, 0.40, 0.50)
    _variant(s1, "no_perceptual", 1, 0.20, 0.20)
    out = tmp_path / "seeds.md"
    assert ablation_seeds.main(["--recipe=demo", f"--output={out}", SNAPSHOT, str(s1)]) == 0
    text = out.read_text()
    assert "| seed 0 | seed 1 | mean |" in text
    # Seed 0's face_identity_net recall@10 of sf2f at 5 s is 0.760 in the snapshot.
    assert "(`sf2f`) | 5 s | 0.760 | - | 0.760 |" in text
    assert "(`sf2f`) | 5 s | - | 0.500 | 0.500 |" in text  # seed 1's embedder "e"


def test_refuses_a_csv_that_is_not_an_ablations_table_or_mixes_seeds(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert ablation_seeds.main([str(other)]) == 1
    assert "missing columns: embedder, protocol, runs, train_args, variant" in (
        capsys.readouterr().err)
    with open(os.path.join(SNAPSHOT, "ablations.csv")) as f:
        lines = f.read().splitlines()
    mixed = tmp_path / "mixed" / "ablations.csv"
    mixed.parent.mkdir()
    mixed.write_text("\n".join(lines[:2] + [lines[2].replace("--seed=0", "--seed=3")]) + "\n")
    assert ablation_seeds.main([str(mixed.parent)]) == 1
    assert "mixes training seeds ['0', '3']" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines[:2] + [lines[2].replace(",5,4800,", ",five,4800,")]) + "\n")
    assert ablation_seeds.main([str(broken)]) == 1
    assert f"{broken}, line 3: invalid literal for int()" in capsys.readouterr().err


def test_a_snapshots_orderings_are_those_its_run_wrote_from_metrics_json():
    # The runner judged the orderings from each variant's metrics.json and wrote them into
    # ablations.md; the CSV's rounded standard deviations must give the same verdicts and
    # differences.
    with open(os.path.join(SNAPSHOT, "ablations.md")) as f:
        page = f.read()
    _, results = ablation_seeds.load_run(SNAPSHOT)
    chosen = ablation_seeds.variants(128, "demo")
    checked = 0
    for embedder in ("face_identity_net", "dlib_resnet", "dlib_aligned"):
        heading = f"### recall@10 -- embedder `{embedder}`\n"
        section = page.split(heading, 1)[1].split("\n\n", 1)[0]
        written = [line for line in section.splitlines() if line.startswith("| ")][1:]
        measured = [f"| {c} | {v} | {d} |" for c, v, d in ablation_seeds.orderings(
            results, embedder, "recall@10", chosen)]
        assert measured == written
        checked += len(written)
    assert checked > 30
