"""benchmarks/demo_seeds.py's aggregation of the runs' metrics.json and its --summarize_only
mode (the runs themselves are the main job, too heavy for the suite)."""

import json

import pytest

from conftest import load_script

demo_seeds = load_script("benchmarks/demo_seeds.py")


def test_numeric_leaves_take_the_mean_of_cells_and_plain_numbers():
    tree = {"results": {"crops_5s": {"dlib": {"recall@10": {"mean": 0.5, "variance": 0.01,
                                                            "runs": 10}}}},
            "detection": {"model": 0.9, "collapsed": False}, "name": "SF2F"}
    assert demo_seeds.numeric_leaves(tree) == {
        "results/crops_5s/dlib/recall@10": 0.5, "detection/model": 0.9,
        "detection/collapsed": 0.0}


def test_aggregate_gives_sample_std_over_seeds_that_have_the_figure():
    out = demo_seeds.aggregate({0: {"a": 0.2, "b": 1.0}, 1: {"a": 0.4}, 2: {"a": 0.6}})
    assert out["a"]["mean"] == pytest.approx(0.4)
    assert out["a"]["std"] == pytest.approx(0.2)  # sample std of 0.2, 0.4, 0.6
    assert out["b"] == {"mean": 1.0, "std": 0.0, "n": 1, "values": [1.0]}


def test_markdown_shows_headline_figures_with_the_machine():
    summary = {"seeds": [0, 1], "date": "2026-12-03",
               "machine": {"cpu": {"model": "AMD EPYC", "features": ["avx2"]}, "cpus": 2,
                           "versions": {"tensorflow": "2.21.0"}},
               "seconds": {0: 1300, 1: 1320},
               "figures": demo_seeds.aggregate({0: {"x/recall@10": 0.5, "x/pixel_l1": 3.0},
                                                1: {"x/recall@10": 0.7, "x/pixel_l1": 2.0}})}
    text = demo_seeds.markdown(summary)
    assert "AMD EPYC (avx2)" in text and "tensorflow 2.21.0" in text
    assert "| `x/recall@10` | 0.600 ± 0.141 | 0.500, 0.700 |" in text
    assert "pixel_l1" not in text  # not a headline figure


def test_summarize_only_reads_finished_seeds_and_keeps_their_run_times(tmp_path, capsys):
    for seed, recall in ((0, 0.5), (1, 0.7)):
        report = tmp_path / f"seed_{seed}" / "report"
        report.mkdir(parents=True)
        (report / "metrics.json").write_text(json.dumps(
            {"results": {"SF2F": {"crops_5s": {"dlib": {"recall@10": {"mean": recall}}}}}}))
    (tmp_path / "seeds.json").write_text(json.dumps({"seconds": {"0": 600, "1": 700}}))
    assert demo_seeds.main(["--summarize_only", "--seeds=2", f"--output_dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["seconds"] == {"0": 600, "1": 700}
    cell = summary["figures"]["results/SF2F/crops_5s/dlib/recall@10"]
    assert cell["values"] == [0.5, 0.7] and cell["mean"] == pytest.approx(0.6)
    assert "0.600 ± 0.141" in (tmp_path / "seeds.md").read_text()
    # A seed without a finished report is named, and nothing is rewritten.
    assert demo_seeds.main(["--summarize_only", "--seeds=3", f"--output_dir={tmp_path}"]) == 1
    assert "seed(s) 2" in capsys.readouterr().err
    assert json.loads((tmp_path / "seeds.json").read_text())["seeds"] == [0, 1]
