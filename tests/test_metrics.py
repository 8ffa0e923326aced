"""SF2F evaluation metrics: hand-computed values, eps and tie semantics, the reference's
variants, and brute-force / torch cross-checks on random data."""

import math

import numpy as np
import pytest

from keras_sf2f.evaluation import metrics as m

SQ2 = math.sqrt(2.0)


# ------------------------------------------------------------------------------------------
# ground truth

def test_ground_truth_mean_and_renormalisation():
    faces = np.array([[1.0, 0.0], [0.0, 1.0],      # identity 0: two orthogonal faces
                      [0.6, 0.8],                   # identity 1: one face
                      [1.0, 0.0], [-1.0, 0.0]])     # identity 2: faces that cancel
    labels = np.array([0, 0, 1, 2, 2])
    seed = m.ground_truth_embeddings(faces, labels, 3)
    np.testing.assert_allclose(seed, [[1 / SQ2, 1 / SQ2], [0.6, 0.8], [0.0, 0.0]], atol=1e-15)
    assert seed.dtype == np.float64
    ref = m.ground_truth_embeddings(faces, labels, 3, renormalize=False)
    np.testing.assert_allclose(ref, [[0.5, 0.5], [0.6, 0.8], [0.0, 0.0]], atol=1e-15)
    # eps bounds the norm from below: a tiny mean is scaled by 1/eps, not blown up to unit.
    tiny = m.ground_truth_embeddings([[3e-13, 0.0]], [0], 1, eps=1e-12)
    np.testing.assert_allclose(tiny, [[0.3, 0.0]])


def test_ground_truth_order_of_faces_does_not_matter():
    rng = np.random.default_rng(0)
    faces = rng.normal(size=(30, 8))
    labels = np.repeat(np.arange(6), 5)
    perm = rng.permutation(30)
    a = m.ground_truth_embeddings(faces, labels, 6)
    b = m.ground_truth_embeddings(faces[perm], labels[perm], 6)
    np.testing.assert_allclose(a, b, atol=1e-14)
    for n in range(6):
        mean = faces[labels == n].mean(0)
        np.testing.assert_allclose(a[n], mean / np.linalg.norm(mean), atol=1e-14)


def test_ground_truth_errors_name_missing_identities():
    faces = np.eye(3)
    with pytest.raises(ValueError, match=r"2 of 5 identities have no face.*identities 1, 3"):
        m.ground_truth_embeddings(faces, [0, 2, 4], 5)
    with pytest.raises(ValueError, match="one label per face"):
        m.ground_truth_embeddings(faces, [0, 1], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        m.ground_truth_embeddings(faces, [0, 1, 2], 2)
    with pytest.raises(ValueError, match="NaN"):
        m.ground_truth_embeddings([[np.nan, 0.0]], [0], 1)


# ------------------------------------------------------------------------------------------
# similarity and distances

def test_similarity_metrics_hand_values():
    pred = np.array([[1.0, 0.0], [0.0, 1.0]])
    gt = np.array([[1.0, 0.0], [1.0, 0.0]])
    out = m.similarity_metrics(pred, gt)
    assert set(out) == {"cosine_similarity", "l1_distance", "l2_distance"}
    assert out["cosine_similarity"] == pytest.approx(0.5, abs=1e-15)
    # row 0: g - p + eps = [eps, eps]; row 1: [1 + eps, -1 + eps]
    assert out["l1_distance"] == pytest.approx((2e-6 + 2.0) / 2, rel=1e-14)
    l2_row1 = math.sqrt((1 + 1e-6) ** 2 + (1 - 1e-6) ** 2)
    assert out["l2_distance"] == pytest.approx((SQ2 * 1e-6 + l2_row1) / 2, rel=1e-14)


def test_distances_add_eps_to_gt_minus_pred():
    g = np.array([[0.0, 0.0, 0.0]])
    p = np.array([[2e-6, 2e-6, 2e-6]])
    # g - p + eps = -1e-6 per component; p - g + eps would be 3e-6.
    out = m.similarity_metrics(p, g)
    assert out["l1_distance"] == pytest.approx(3e-6, rel=1e-9)
    assert out["l2_distance"] == pytest.approx(math.sqrt(3) * 1e-6, rel=1e-9)
    same = m.similarity_metrics(g, g)
    assert same["l2_distance"] == pytest.approx(math.sqrt(3) * 1e-6, rel=1e-12)
    assert same["cosine_similarity"] == 0.0  # zero vectors: 0 / eps


def test_cosine_eps_semantics_per_norm_clamp():
    # torch >= 1.12 kernel: (x / max(|x|, eps)) . (y / max(|y|, eps)), eps = 1e-8.
    cos = m.cosine_similarity_rows
    assert cos([[1e-5, 0.0]], [[1e-5, 0.0]])[0] == pytest.approx(1.0)   # doc formula: 0.01
    assert cos([[1e-9, 0.0]], [[1e-9, 0.0]])[0] == pytest.approx(0.01)
    assert cos([[3e-9, 0.0]], [[1.0, 0.0]])[0] == pytest.approx(0.3)
    assert cos([[0.0, 0.0]], [[1.0, 0.0]])[0] == 0.0
    assert cos([[3.0, 4.0]], [[-4.0, 3.0]])[0] == pytest.approx(0.0, abs=1e-16)


@pytest.mark.torch
def test_similarity_matches_torch_modules():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p = rng.normal(size=(20, 16))
    g = rng.normal(size=(20, 16))
    p[3] = 0.0
    p[4] = 1e-9 * p[5]
    g[6] = 1e-5 * g[7]
    tp, tg = torch.from_numpy(p), torch.from_numpy(g)
    out = m.similarity_metrics(p, g)
    cos = torch.nn.CosineSimilarity(dim=-1, eps=1e-8)(tp, tg).mean().item()
    l1 = torch.nn.PairwiseDistance(p=1, eps=1e-6)(tg, tp).mean().item()
    l2 = torch.nn.PairwiseDistance(p=2, eps=1e-6)(tg, tp).mean().item()
    assert out["cosine_similarity"] == pytest.approx(cos, rel=1e-12, abs=1e-14)
    assert out["l1_distance"] == pytest.approx(l1, rel=1e-12)
    assert out["l2_distance"] == pytest.approx(l2, rel=1e-12)


def test_renormalisation_changes_distances_not_cosine():
    rng = np.random.default_rng(2)
    faces = rng.normal(size=(40, 8))
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    labels = np.repeat(np.arange(10), 4)
    pred = rng.normal(size=(10, 8))
    pred /= np.linalg.norm(pred, axis=1, keepdims=True)
    seed = m.similarity_metrics(pred, m.ground_truth_embeddings(faces, labels, 10))
    ref = m.similarity_metrics(pred, m.ground_truth_embeddings(faces, labels, 10,
                                                              renormalize=False))
    assert seed["cosine_similarity"] == pytest.approx(ref["cosine_similarity"], rel=1e-12)
    assert seed["l2_distance"] != pytest.approx(ref["l2_distance"], rel=1e-3)


def test_inter_identity_similarity():
    pred = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    gt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # off-diagonal cos(p_i, g_j): (0,1)=1 (0,2)=0 (1,0)=0 (1,2)=1 (2,0)=1 (2,1)=1 -> 4/6
    assert m.inter_identity_similarity(pred, gt) == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        m.inter_identity_similarity(pred[:1], gt[:1])


# ------------------------------------------------------------------------------------------
# recall

def test_recall_hand_values_without_ties():
    gt = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    pred = np.array([[0.8, 0.6], [0.8, 0.6], [0.6, 0.8]])
    # query 0: S = [0.8, 1.0, 0.6] -> rank 2; query 1: rank 1;
    # query 2: S = [0.6, 0.96, 0.8] -> rank 2.
    for ties in m.RECALL_TIES:
        out = m.recall_at_k(pred, gt, ks=(1, 2, 3), ties=ties)
        assert out == pytest.approx({"recall@1": 1 / 3, "recall@2": 1.0, "recall@3": 1.0})


def test_recall_ties_are_explicit():
    # Identities 0 and 1 have the same ground truth; query 2 points at them, not at its own.
    gt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pred = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    # queries 0, 1: h = 0, t = 1; query 2: h = 2, t = 0.
    opt = m.recall_at_k(pred, gt, ks=(1, 2, 3), ties="optimistic")
    assert opt == pytest.approx({"recall@1": 2 / 3, "recall@2": 2 / 3, "recall@3": 1.0})
    pes = m.recall_at_k(pred, gt, ks=(1, 2, 3), ties="pessimistic")
    assert pes == pytest.approx({"recall@1": 0.0, "recall@2": 2 / 3, "recall@3": 1.0})
    exp = m.recall_at_k(pred, gt, ks=(1, 2, 3))  # default 'expected'
    assert exp == pytest.approx({"recall@1": 1 / 3, "recall@2": 2 / 3, "recall@3": 1.0})


def test_recall_ties_survive_rounding_and_zero_queries_score_chance():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(10, 7))
    gt[4] = 3.7 * gt[1]   # same direction, different norm: equal cosines up to rounding
    pred = gt.copy()
    out = m.recall_at_k(pred, gt, ks=(1,), ties="optimistic")
    assert out["recall@1"] == 1.0
    out = m.recall_at_k(pred, gt, ks=(1,), ties="expected")
    assert out["recall@1"] == pytest.approx(0.9)   # identities 1 and 4 each get 1/2
    # A zero prediction ties with every gallery item: chance level K / N.
    zero = np.zeros_like(gt)
    out = m.recall_at_k(zero, gt, ks=(1, 5, 10))
    assert out == pytest.approx({"recall@1": 0.1, "recall@5": 0.5, "recall@10": 1.0})


def _brute_force_recall(pred, gt, k):
    hits = 0
    for i in range(len(pred)):
        scores = [float(np.dot(pred[i], gt[j]) / (np.linalg.norm(pred[i])
                                                   * np.linalg.norm(gt[j])))
                  for j in range(len(gt))]
        top = sorted(range(len(gt)), key=lambda j: -scores[j])[:k]
        hits += i in top
    return hits / len(pred)


@pytest.mark.torch
def test_recall_matches_brute_force_and_torch_topk_on_random_data():
    rng = np.random.default_rng(4)
    gt = rng.normal(size=(60, 12))
    pred = gt + 1.2 * rng.normal(size=gt.shape)
    out = m.recall_at_k(pred, gt, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert out[f"recall@{k}"] == pytest.approx(_brute_force_recall(pred, gt, k), abs=1e-12)
    assert 0.0 < out["recall@1"] < out["recall@10"] < 1.0
    torch = pytest.importorskip("torch")
    s = torch.nn.functional.cosine_similarity(torch.from_numpy(pred)[:, None],
                                              torch.from_numpy(gt)[None], dim=-1, eps=1e-8)
    top = s.topk(5, dim=1).indices.numpy()
    assert out["recall@5"] == pytest.approx(np.mean([i in top[i] for i in range(60)]))


def test_recall_reference_galleries():
    rng = np.random.default_rng(5)
    gt = rng.normal(size=(340, 6))
    pred = gt + 0.8 * rng.normal(size=gt.shape)
    pred[300:] = rng.normal(size=(40, 6))  # ignored by the reference protocol
    ref = m.recall_at_k(pred, gt, ks=(1, 2, 5, 10, 20, 50), galleries="reference")
    manual = [m.recall_at_k(pred[a:b], gt[a:b], ks=(1, 2, 5, 10, 20, 50))
              for a, b in ((0, 100), (100, 200), (200, 300))]
    for key in ref:
        assert ref[key] == pytest.approx(np.mean([d[key] for d in manual]), abs=1e-15)
    explicit = m.recall_at_k(pred, gt, ks=(1, 2, 5, 10, 20, 50),
                             galleries=[(0, 100), (100, 200), (200, 300)])
    assert explicit == ref
    pred2 = pred.copy()
    pred2[300:] = 0.0
    assert m.recall_at_k(pred2, gt, ks=(1, 5), galleries="reference") == \
        m.recall_at_k(pred, gt, ks=(1, 5), galleries="reference")
    with pytest.raises(ValueError, match="at least 300 identities"):
        m.recall_at_k(pred[:299], gt[:299], galleries="reference")
    with pytest.raises(ValueError, match="K=101"):
        m.recall_at_k(pred, gt, ks=(101,), galleries="reference")


def test_reference_gallery_ranges_for_small_splits():
    assert m.reference_gallery_ranges(340) == [(0, 100), (100, 200), (200, 300)]
    assert m.reference_gallery_ranges(300) == [(0, 100), (100, 200), (200, 300)]
    assert m.reference_gallery_ranges(299) == [(0, 100), (100, 200)]
    assert m.reference_gallery_ranges(100) == [(0, 100)]
    with pytest.raises(ValueError, match=r"only 99.*K/99 instead of K/100"):
        m.reference_gallery_ranges(99)
    with pytest.raises(ValueError, match="only 50"):
        m.reference_gallery_ranges(50)
    # The complete galleries of a 250-identity split score as the explicit ranges do, each
    # query among 100 candidates (chance K/100, not K/250).
    rng = np.random.default_rng(6)
    gt = rng.normal(size=(250, 6))
    pred = gt + 0.8 * rng.normal(size=gt.shape)
    out = m.recall_at_k(pred, gt, ks=(1, 10), galleries=m.reference_gallery_ranges(250))
    manual = [m.recall_at_k(pred[a:b], gt[a:b], ks=(1, 10)) for a, b in ((0, 100), (100, 200))]
    assert out["recall@10"] == pytest.approx(np.mean([d["recall@10"] for d in manual]),
                                             abs=1e-15)
    zero = np.zeros_like(gt)
    chance = m.recall_at_k(zero, gt, ks=(10,), galleries=m.reference_gallery_ranges(250))
    assert chance["recall@10"] == pytest.approx(10 / 100)


def test_recall_argument_errors():
    x = np.eye(3)
    with pytest.raises(ValueError, match="same"):
        m.recall_at_k(x, x[:2])
    with pytest.raises(ValueError, match="ties"):
        m.recall_at_k(x, x, ks=(1,), ties="random")
    with pytest.raises(ValueError, match="galleries"):
        m.recall_at_k(x, x, ks=(1,), galleries="all")


# ------------------------------------------------------------------------------------------
# VGGFace score

def test_vggface_score_hand_values():
    # Uniform predictions: KL 0 in every split -> exp(0) = 1.
    assert m.vggface_score(np.full((10, 4), 0.25)) == pytest.approx((1.0, 0.0))
    # Each split holds the C one-hot rows once: KL = log C -> score C (0 log 0 = 0).
    one_hot = np.tile(np.eye(4), (5, 1))
    assert m.vggface_score(one_hot, splits=5, seed=None) == pytest.approx((4.0, 0.0))
    # One split of [1, 0] and [.5, .5]: marginal [.75, .25].
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    kl = (math.log(1 / 0.75) + 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2
    mean, std = m.vggface_score(probs, splits=1, seed=None)
    assert mean == pytest.approx(math.exp(kl), rel=1e-14) and std == 0.0


def test_vggface_score_splits_shuffle_and_remainder():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(23, 7)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    # Unshuffled: parts of 23 // 5 = 4 rows, the last 3 rows are dropped.
    mean, std = m.vggface_score(probs, seed=None)
    parts = []
    for i in range(5):
        p = probs[4 * i:4 * i + 4]
        q = p.mean(0)
        parts.append(math.exp(np.mean(np.sum(p * np.log(p / q), axis=1))))
    assert (mean, std) == pytest.approx((np.mean(parts), np.std(parts)), rel=1e-13)
    assert m.vggface_score(probs[:20], seed=None) == pytest.approx((mean, std), rel=1e-15)
    # The shuffle is a seeded permutation: reproducible, and equal to permuting by hand.
    a = m.vggface_score(probs, seed=3)
    assert a == m.vggface_score(probs, seed=3)
    perm = np.random.default_rng(3).permutation(23)
    assert a == pytest.approx(m.vggface_score(probs[perm], seed=None), rel=1e-15)
    assert a != pytest.approx((mean, std), rel=1e-6)


def test_vggface_score_errors():
    with pytest.raises(ValueError, match="logits"):
        m.vggface_score(np.array([[2.0, -1.0]] * 5))
    with pytest.raises(ValueError, match="sum to 1"):
        m.vggface_score(np.full((5, 3), 0.5))
    with pytest.raises(ValueError, match="at least one image per split"):
        m.vggface_score(np.full((4, 2), 0.5))
