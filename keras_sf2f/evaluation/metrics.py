"""SF2F's evaluation metrics, in NumPy (float64 inside), exact and documented.

Inputs are face embeddings already computed by a face network (``keras_sf2f.evaluation
.embedders``); nothing here runs TensorFlow. Rows of ``pred`` and ``gt`` are aligned by
identity (row ``i`` of both belongs to the ``i``-th identity of the evaluated split, in the
split's sorted order, which is what the reference's "galleries" refer to).

* ``ground_truth_embeddings``: one embedding per identity from all its faces, the seed's
  ``u_n = mean_k u_nk / max(||mean_k u_nk||_2, eps)`` (supplementary, "Ground Truth Embedding
  Matrix"), or with ``renormalize=False`` the reference's plain mean of the unit vectors
  (not re-normalised, so ``||g_n|| <= 1``; this changes L1/L2, not the cosine).
* ``similarity_metrics``: mean cosine similarity and the mean L1 / L2 distances of the
  reference: torch ``CosineSimilarity(eps=1e-8)`` and ``PairwiseDistance(p,
  eps=1e-6)``, whose eps semantics are reproduced exactly (see the functions).
* ``recall_at_k``: retrieval of the own identity among a gallery of ground-truth
  embeddings by cosine similarity, over the whole split or the reference's three fixed
  galleries of 100 identities (``reference_gallery_ranges`` says which of them a smaller
  split holds).
* ``inter_identity_similarity``: the reference's ``ih_sim`` (mean cosine of a prediction with
  the other identities' ground truth).
* ``vggface_score``: the inception-score analogue computed from a face classifier's class
  probabilities, with the reference's shuffle made deterministic.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

COSINE_EPS = 1e-8          # torch.nn.CosineSimilarity default, used by the reference
PAIRWISE_DISTANCE_EPS = 1e-6  # torch.nn.PairwiseDistance default, used by the reference
GROUND_TRUTH_EPS = 1e-12   # the seed's eps in u / max(||u||, eps) (F.normalize's default)
RECALL_TIE_TOLERANCE = 1e-12
# The reference's recall galleries: extraction_size=[100, 200, 300] -> identities [0,100),
# [100,200), [200,300).
REFERENCE_GALLERIES = ((0, 100), (100, 200), (200, 300))
REFERENCE_RECALL_KS = (1, 2, 5, 10, 20, 50)
VGGFACE_SCORE_SPLITS = 5


def _as_matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [rows, dim] array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _aligned_pair(pred, gt):
    p = _as_matrix(pred, "pred")
    g = _as_matrix(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same [identities, dim] shape, got "
                         f"{p.shape} and {g.shape}")
    if p.shape[0] == 0:
        raise ValueError("no identities to evaluate (pred and gt have 0 rows)")
    return p, g


def _normalize_rows(x: np.ndarray, eps: float) -> np.ndarray:
    """``x / max(||x||_2, eps)`` per row."""
    norms = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
    return x / np.maximum(norms, eps)


# ------------------------------------------------------------------------------------------
# Ground truth

def ground_truth_embeddings(face_embeddings, labels, num_identities: int,
                            renormalize: bool = True,
                            eps: float = GROUND_TRUTH_EPS) -> np.ndarray:
    """Per-identity ground-truth embeddings ``[num_identities, D]`` (float64).

    Args:
      face_embeddings: ``[F, D]`` embeddings of every face of the split (unit norm when they
        come from FaceNet; not required).
      labels: ``[F]`` integer identity of each face, in ``[0, num_identities)``.
      num_identities: N, the number of rows of the result.
      renormalize: True (default): the seed's ``u_n = m_n / max(||m_n||_2, eps)`` with
        ``m_n = (1/K_n) sum_k u_nk``. False: the reference's ``m_n`` as is (not re-normalised,
        ``||m_n|| <= 1`` for unit inputs).
      eps: the lower bound of the norm in the re-normalisation.

    Raises:
      ValueError: on shape/label errors, or when identities have no face (named in the
        message: they would have no ground truth).
    """
    emb = _as_matrix(face_embeddings, "face_embeddings")
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != emb.shape[0]:
        raise ValueError(f"labels must be a 1-D array with one label per face "
                         f"({emb.shape[0]}), got shape {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if not np.all(lab == np.round(lab)):
            raise ValueError("labels must be integers")
    lab = lab.astype(np.int64)
    n = int(num_identities)
    if n <= 0:
        raise ValueError(f"num_identities must be positive, got {num_identities}")
    if lab.size and (lab.min() < 0 or lab.max() >= n):
        raise ValueError(f"labels must lie in [0, {n}), got range [{lab.min()}, {lab.max()}]")
    counts = np.bincount(lab, minlength=n)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        shown = ", ".join(str(int(i)) for i in empty[:20])
        more = f" (and {empty.size - 20} more)" if empty.size > 20 else ""
        raise ValueError(f"{empty.size} of {n} identities have no face embedding, so no "
                         f"ground truth: identities {shown}{more}")
    sums = np.zeros((n, emb.shape[1]), np.float64)
    np.add.at(sums, lab, emb)
    means = sums / counts[:, None]
    if renormalize:
        means = _normalize_rows(means, float(eps))
    return means


# ------------------------------------------------------------------------------------------
# Similarity and distance

def cosine_similarity_rows(x, y, eps: float = COSINE_EPS) -> np.ndarray:
    """Row-wise cosine similarity with torch 2.x ``F.cosine_similarity`` eps semantics.

    torch's documentation writes ``x.y / max(||x|| ||y||, eps)``, but its eager kernel (what
    ``nn.CosineSimilarity`` runs in torch >= 1.12, checked against torch 2.13) clamps each norm
    on its own: ``(x / max(||x||, eps)) . (y / max(||y||, eps))``. The two agree unless a norm
    is below eps (then e.g. x = y = [1e-5, 0] gives 1.0 in the kernel, 0.01 by the documented
    formula). We follow the kernel. A zero vector has similarity 0 with everything.
    """
    a = _normalize_rows(_as_matrix(x, "x"), eps)
    b = _normalize_rows(_as_matrix(y, "y"), eps)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape, got {a.shape} and {b.shape}")
    return np.sum(a * b, axis=1)


def pairwise_distance_rows(x, y, p: float, eps: float = PAIRWISE_DISTANCE_EPS) -> np.ndarray:
    """torch ``nn.PairwiseDistance(p, eps)(x, y)``: ``||x - y + eps||_p`` per row (eps is added
    to every component of the difference, so identical rows give ``eps * D**(1/p)``)."""
    a = _as_matrix(x, "x")
    b = _as_matrix(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape, got {a.shape} and {b.shape}")
    d = np.abs(a - b + eps)
    if p == 1:
        return np.sum(d, axis=1)
    if p == 2:
        return np.sqrt(np.sum(d * d, axis=1))
    return np.sum(d ** p, axis=1) ** (1.0 / p)


def similarity_metrics(pred, gt, cosine_eps: float = COSINE_EPS,
                       distance_eps: float = PAIRWISE_DISTANCE_EPS) -> dict:
    """The reference's similarity metrics, averaged over identities.

    Returns a dict of Python floats:
      ``cosine_similarity``: ``mean_i cos(p_i, g_i)`` (``cosine_similarity_rows``, eps 1e-8);
      ``l1_distance``: ``mean_i ||g_i - p_i + 1e-6||_1`` (a sum over dimensions);
      ``l2_distance``: ``mean_i ||g_i - p_i + 1e-6||_2``.
    The distances take the ground truth first, as the reference calls
    ``PairwiseDistance(gt, pred)``; with eps added the order matters (in the last digits).
    """
    p, g = _aligned_pair(pred, gt)
    return {
        "cosine_similarity": float(np.mean(cosine_similarity_rows(p, g, cosine_eps))),
        "l1_distance": float(np.mean(pairwise_distance_rows(g, p, 1, distance_eps))),
        "l2_distance": float(np.mean(pairwise_distance_rows(g, p, 2, distance_eps))),
    }


def cosine_similarity_matrix(queries, gallery, eps: float = COSINE_EPS) -> np.ndarray:
    """``S[i, j] = cos(queries_i, gallery_j)`` with the same eps semantics as
    ``cosine_similarity_rows``."""
    q = _normalize_rows(_as_matrix(queries, "queries"), eps)
    g = _normalize_rows(_as_matrix(gallery, "gallery"), eps)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries and gallery dimensions differ: {q.shape[1]} vs {g.shape[1]}")
    return q @ g.T


def inter_identity_similarity(pred, gt, eps: float = COSINE_EPS) -> float:
    """The reference's ``ih_sim`` ("inter-human similarity"): the mean of ``cos(p_i, g_j)``
    over all ordered pairs ``i != j`` of the split. Needs at least two identities."""
    p, g = _aligned_pair(pred, gt)
    n = p.shape[0]
    if n < 2:
        raise ValueError("inter_identity_similarity needs at least 2 identities")
    s = cosine_similarity_matrix(p, g, eps)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


# ------------------------------------------------------------------------------------------
# Retrieval

def _gallery_ranges(galleries, n: int) -> list:
    if galleries is None:
        return [(0, n)]
    if isinstance(galleries, str):
        if galleries != "reference":
            raise ValueError(f"galleries must be None, 'reference' or a list of (start, stop) "
                             f"ranges, got {galleries!r}")
        need = REFERENCE_GALLERIES[-1][1]
        if n < need:
            raise ValueError(f"galleries='reference' needs at least {need} identities (three "
                             f"fixed galleries [0,100), [100,200), [200,300)), got {n}; use "
                             f"galleries=None to retrieve within the whole split")
        return list(REFERENCE_GALLERIES)
    ranges = []
    for r in galleries:
        start, stop = (int(v) for v in r)
        if not 0 <= start < stop <= n:
            raise ValueError(f"gallery range {r!r} is not a non-empty range inside [0, {n})")
        ranges.append((start, stop))
    if not ranges:
        raise ValueError("galleries is an empty list")
    return ranges


def reference_gallery_ranges(num_identities: int) -> list:
    """The reference's fixed 100-identity galleries that a split of ``num_identities`` holds.

    * 300 or more identities: the reference's three galleries ``[0,100), [100,200),
      [200,300)``; identities from 300 on are not retrieved (as in the reference).
    * 100 to 299: only the complete galleries among those three (one or two). Each query
      still competes with 100 candidates, so chance stays ``K / 100`` and numbers stay
      comparable with the reference's; they are averaged over fewer queries.
    * fewer than 100: ``ValueError``. A smaller gallery would change the chance level, so
      the numbers could not be compared with the reference's; retrieve within the whole
      split instead (``recall_at_k(galleries=None)``, chance ``K / N``).
    """
    n = int(num_identities)
    size = REFERENCE_GALLERIES[0][1] - REFERENCE_GALLERIES[0][0]
    if n < size:
        raise ValueError(
            f"the reference's recall galleries hold {size} identities each, but the split has "
            f"only {n}: its numbers would not be comparable (chance K/{n} instead of "
            f"K/{size}); evaluate without reference galleries (recall over the whole split)")
    return [r for r in REFERENCE_GALLERIES if r[1] <= n]


RECALL_TIES = ("expected", "optimistic", "pessimistic")


def recall_at_k(pred, gt, ks: Sequence[int] = (1, 5, 10), galleries=None,
                ties: str = "expected", eps: float = COSINE_EPS,
                tie_tolerance: float = RECALL_TIE_TOLERANCE) -> dict:
    """Recall@K of identity retrieval by cosine similarity (``recall_method='cos_sim'``).

    For each gallery (a contiguous range of identities) and each query ``p_i`` of it, the
    cosine similarity ``S[i, j]`` to every ground truth ``g_j`` of the same gallery is computed;
    the query is a hit at K when its own identity is among the K most similar.

    Ties, explicit and deterministic. With ``h`` = the number of other gallery items scoring
    strictly higher than the own identity (``S[i, j] > S[i, i] + tie_tolerance``) and ``t`` =
    the number of other items tied with it (``|S[i, j] - S[i, i]| <= tie_tolerance``):

    * ``'expected'`` (default): the hit counts ``clip((K - h) / (t + 1), 0, 1)``, the exact
      probability of a hit when tied items are ordered uniformly at random. Without ties this
      is 1 if ``h < K`` else 0; a degenerate query (e.g. a zero vector, equal to 0 against all)
      scores chance level ``K / gallery size``.
    * ``'optimistic'``: a hit when ``h < K`` (fewer than K items score strictly higher).
    * ``'pessimistic'``: a hit when ``h + t < K``.

    The tolerance (default 1e-12, far below any real difference of float64 cosines) only
    absorbs last-bit rounding of the matrix product, so equal embeddings always tie. (The
    reference's ``torch.topk`` orders ties in an unspecified way; real embeddings almost never
    tie, and then all three modes agree.)

    Args:
      pred, gt: ``[N, D]`` predicted and ground-truth embeddings, rows aligned by identity.
      ks: the K values (each 1 <= K <= gallery size).
      galleries: None (default): one gallery with all N identities; ``'reference'``: the
        reference's three fixed galleries ``[0,100), [100,200), [200,300)`` (identities from
        300 on are ignored; at least 300 identities needed), chance level K/100; or an explicit
        list of ``(start, stop)`` ranges.
      ties: ``'expected'``, ``'optimistic'`` or ``'pessimistic'`` (above).

    Returns:
      ``{'recall@K': mean over galleries of the hit rate in [0, 1]}`` for every K in ks.
    """
    p, g = _aligned_pair(pred, gt)
    if ties not in RECALL_TIES:
        raise ValueError(f"ties must be one of {RECALL_TIES}, got {ties!r}")
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty")
    ranges = _gallery_ranges(galleries, p.shape[0])
    per_gallery = {k: [] for k in ks}
    for start, stop in ranges:
        size = stop - start
        for k in ks:
            if not 1 <= k <= size:
                raise ValueError(f"K={k} is outside [1, {size}] (gallery [{start}, {stop}))")
        s = cosine_similarity_matrix(p[start:stop], g[start:stop], eps)
        own = np.diag(s)[:, None]
        higher = np.sum(s > own + tie_tolerance, axis=1)
        tied = np.sum(np.abs(s - own) <= tie_tolerance, axis=1) - 1  # minus the own item
        for k in ks:
            if ties == "expected":
                hits = np.clip((k - higher) / (tied + 1.0), 0.0, 1.0)
            elif ties == "optimistic":
                hits = (higher < k).astype(np.float64)
            else:
                hits = (higher + tied < k).astype(np.float64)
            per_gallery[k].append(float(np.mean(hits)))
    return {f"recall@{k}": float(np.mean(per_gallery[k])) for k in ks}


# ------------------------------------------------------------------------------------------
# VGGFace score

def vggface_score(probabilities, splits: int = VGGFACE_SCORE_SPLITS,
                  seed: int | None = 0) -> tuple:
    """Inception-score-style VGGFace score: ``(mean, std)`` over ``splits`` parts.

    As the reference's ``compute_vggface_score.py``: the rows (one class
    distribution p(y|x) per generated image) are shuffled, cut into ``splits`` equal parts of
    ``M // splits`` rows (the remainder after the last part is dropped), and per part
    ``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the part's mean distribution; the result
    is the mean and the population standard deviation (``np.std``, ddof 0) of the parts.

    Differences from the reference, both deliberate: the shuffle is
    ``np.random.default_rng(seed).permutation`` (``seed=None``: no shuffle) instead of the
    global ``np.random.shuffle``, so a score is reproducible; and ``0 * log 0`` is taken as 0
    (the reference's ``p * (log p - log q)`` gives NaN for a probability that underflowed to
    exactly 0). Computed in float64.

    Args:
      probabilities: ``[M, C]`` rows of class probabilities (non-negative, summing to 1
        within 1e-3: softmax outputs, not logits).
    """
    probs = _as_matrix(probabilities, "probabilities")
    splits = int(splits)
    m = probs.shape[0]
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    if m < splits:
        raise ValueError(f"need at least one image per split: {m} images, {splits} splits")
    if (probs < 0).any():
        raise ValueError("probabilities must be non-negative (pass softmax outputs, not logits)")
    row_sums = probs.sum(axis=1)
    if np.abs(row_sums - 1.0).max() > 1e-3:
        raise ValueError(f"each row of probabilities must sum to 1 (softmax outputs); row sums "
                         f"range over [{row_sums.min():.4g}, {row_sums.max():.4g}]")
    if seed is not None:
        probs = probs[np.random.default_rng(seed).permutation(m)]
    part_size = m // splits
    scores = []
    for i in range(splits):
        part = probs[i * part_size:(i + 1) * part_size]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(float(np.exp(np.mean(np.sum(terms, axis=1)))))
    return float(np.mean(scores)), float(np.std(scores))


def format_summary(values: dict, key: str) -> str:
    """One table cell of a summary over runs (``{metric: {"mean", "variance", "runs"}}``):
    ``mean ± standard deviation`` to 3 decimals, the mean alone for a single run, ``-`` when
    the metric is missing."""
    if key not in values:
        return "-"
    c = values[key]
    if c["runs"] > 1:
        return f"{c['mean']:.3f} ± {math.sqrt(c['variance']):.3f}"
    return f"{c['mean']:.3f}"
