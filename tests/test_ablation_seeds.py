"""benchmarks/ablation_seeds.py: ablation outputs of several training seeds combined, each
seed's orderings judged on its own runs."""

import json

from conftest import load_script

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
    _variant(s0, "baseline_encoder", 0, 0.9, 0.9, status="running")  # unfinished: left out
    _variant(s1, "sf2f", 1, 0.40, 0.50)
    _variant(s1, "no_l1", 1, 0.41, 0.50)
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


def test_refuses_what_is_not_one_seeds_ablation_output(tmp_path, capsys):
    assert ablation_seeds.main([str(tmp_path)]) == 1
    assert "no variants/" in capsys.readouterr().err
    _variant(tmp_path, "sf2f", 0, 0.5, 0.6)
    _variant(tmp_path, "no_l1", 1, 0.5, 0.6)
    assert ablation_seeds.main([str(tmp_path)]) == 1
    assert "mixes training seeds" in capsys.readouterr().err
