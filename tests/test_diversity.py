"""Diversity and collapse on synthetic cases: the ground truth against itself is ratio 1 and
not collapsed; one face for everyone, or two far-apart templates, are flagged; blurred but
distinct faces are not."""

import numpy as np
import pytest

from keras_sf2f.data.corpus import draw_face
from keras_sf2f.evaluation import diversity

N = 30


@pytest.fixture(scope="module")
def truth():
    return np.stack([draw_face(0, 450 + i, 0, 64, "aligned") for i in range(N)])


def _blur(images, side):
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(x).resize((side, side), Image.BOX)
                                .resize((64, 64), Image.BILINEAR)) for x in images])


def test_ground_truth_against_itself(truth):
    emb = {"e": np.random.default_rng(0).normal(size=(N, 8))}
    f = diversity.diversity_figures(truth, truth, emb, emb)
    assert f["diversity_ratio_pixels"] == pytest.approx(1.0)
    assert f["diversity_ratio_e"] == pytest.approx(1.0)
    assert f["templates"] == N and f["effective_templates"] == pytest.approx(N)
    assert f["largest_template_share"] == pytest.approx(1 / N)
    assert f["collapsed"] == 0.0
    assert diversity.collapse_sentence("gt", "photos", f, N) is None


def test_other_photos_of_the_same_identities_are_not_collapsed(truth):
    second = np.stack([draw_face(0, 450 + i, 1, 64, "aligned") for i in range(N)])
    f = diversity.diversity_figures(second, truth)
    assert 0.9 < f["diversity_ratio_pixels"] < 1.1
    assert f["templates"] >= 0.9 * N and f["collapsed"] == 0.0


def test_one_face_for_everyone_is_collapse(truth):
    same = np.repeat(truth[:1], N, axis=0)
    emb = np.random.default_rng(1).normal(size=(N, 8))
    f = diversity.diversity_figures(same, truth, {"e": np.repeat(emb[:1], N, 0)}, {"e": emb})
    # Distances come from a Gram-matrix expansion, so identical faces are 0 to float rounding
    # (6e-8 seen on an AMD EPYC, exactly 0 on Intel), not exactly 0.
    assert f["diversity_ratio_pixels"] == pytest.approx(0.0, abs=1e-6)
    assert f["diversity_ratio_e"] == pytest.approx(0.0, abs=1e-6)
    assert f["templates"] == 1 and f["effective_templates"] == pytest.approx(1.0)
    assert f["largest_template_share"] == 1.0 and f["collapsed"] == 1.0
    sentence = diversity.collapse_sentence("SF2F", "5 s crops", f, N)
    assert sentence.startswith("**SF2F (5 s crops) collapsed**") and "1.0 templates" in sentence


def test_two_far_apart_templates_are_collapse_despite_the_pixel_ratio(truth):
    # The two most different ground-truth faces, each given to half of the identities (with
    # a little pixel noise, as a generator would): the pixel ratio stays well above 0.3, the
    # template count catches it.
    d = diversity.pairwise_distances(diversity.pixel_vectors(truth), rms=True)
    a, b = np.unravel_index(np.argmax(d), d.shape)
    rng = np.random.default_rng(2)
    two = truth[[a if i % 2 else b for i in range(N)]].astype(np.int16)
    two = np.clip(two + rng.integers(-3, 4, size=two.shape), 0, 255).astype(np.uint8)
    f = diversity.diversity_figures(two, truth)
    assert f["diversity_ratio_pixels"] > diversity.COLLAPSE_RATIO
    assert f["templates"] == 2 and f["effective_templates"] == pytest.approx(2.0)
    assert f["collapsed"] == 1.0
    assert diversity.collapse_sentence("m", "p", {k: {"mean": v} for k, v in f.items()}, N)


def test_blurred_but_distinct_faces_are_not_collapse(truth):
    f = diversity.diversity_figures(_blur(truth, 16), truth)
    assert 0.5 < f["diversity_ratio_pixels"] < 1.0
    assert f["effective_templates"] > diversity.COLLAPSE_TEMPLATE_FRACTION * N
    assert f["collapsed"] == 0.0


def test_template_grouping_by_hand():
    # Points on a line: 0, 0.1, 0.2 | 5 | 9, 9.05. Radius 0.15: the leader of the first group
    # is 0, so 0.2 (0.2 from it) founds its own group: 4 groups.
    x = np.array([[0.0], [0.1], [0.2], [5.0], [9.0], [9.05]])
    d = diversity.pairwise_distances(x)
    out = diversity.template_count(d, 0.15)
    assert out["templates"] == 4
    assert out["assignment"].tolist() == [0, 0, 1, 2, 3, 3]
    sizes = np.array([2, 1, 1, 2]) / 6
    assert out["effective_templates"] == pytest.approx(np.exp(-(sizes * np.log(sizes)).sum()))
    assert out["largest_template_share"] == pytest.approx(2 / 6)
    # The radius: half the median nearest-neighbour distance of the reference.
    assert diversity.template_radius(d) == pytest.approx(0.5 * np.median(
        [0.1, 0.1, 0.1, 4.0, 0.05, 0.05]))


def test_input_checks(truth):
    with pytest.raises(TypeError, match="uint8"):
        diversity.diversity_figures(truth.astype(np.float32), truth)
    with pytest.raises(ValueError, match="must match"):
        diversity.diversity_figures(truth[:5], truth)
