"""Object matching between segmentations: by centre (Pomarico et al.) and by overlap (StarDist).

* :func:`match_objects` finds, for every reference object, its counterpart in another
  segmentation of the same scene (a replica's or the compressed image's) the way Pomarico et al.
  (Sci Rep 2022) do: the object with the identical centre pixel, else the nearest centre,
  rejected beyond ``max_distance`` (3 px in the paper). Per-object ε then compares each
  reference object's parameters with those of its match.
* :func:`instance_metrics` scores a predicted label image against a reference one with the
  StarDist convention (one-to-one Hungarian matching on IoU ≥ threshold).

Both work for 2-D and 3-D. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["MatchResult", "instance_metrics", "match_objects"]


@dataclass(frozen=True)
class MatchResult:
    """Counterparts of the reference objects in another segmentation.

    Attributes
    ----------
    index : numpy.ndarray
        ``(n,)`` intp: position of the matched object in ``other`` (row of ``other_centres``),
        ``-1`` when unmatched.
    distance : numpy.ndarray
        ``(n,)`` float64 Euclidean distance between the centres of each pair [px, in the
        centres' units]; NaN when unmatched.
    n_exact : int
        Pairs found by identical (rounded) centre pixel.
    n_nearest : int
        Pairs found by nearest centre within ``max_distance``.
    n_unmatched : int
        Reference objects without a counterpart (nearest centre too far, or ``other`` empty).
    """

    index: np.ndarray
    distance: np.ndarray
    n_exact: int
    n_nearest: int
    n_unmatched: int

    @property
    def n_reference(self) -> int:
        """Number of reference objects."""
        return int(self.index.shape[0])

    @property
    def matched(self) -> np.ndarray:
        """Boolean mask of the matched reference objects."""
        return self.index >= 0

    @property
    def unmatched_fraction(self) -> float:
        """``n_unmatched / n_reference`` (0 when there are no reference objects)."""
        n = self.n_reference
        return self.n_unmatched / n if n else 0.0


def _centre_pixels(c: np.ndarray) -> np.ndarray:
    # Pixel i covers [i - 0.5, i + 0.5): round half up, the same way on both sides.
    return np.floor(c + 0.5).astype(np.int64)


def match_objects(ref_centres: np.ndarray, other_centres: np.ndarray, *,
                  max_distance: float = 3.0) -> MatchResult:
    """Match every reference object to an object of another segmentation by its centre.

    Parameters
    ----------
    ref_centres : numpy.ndarray
        ``(n, d)`` centres of the reference objects (array-index coordinates, e.g.
        :attr:`Measurements.centres <rawgate.gate.measure.Measurements.centres>`) [px].
    other_centres : numpy.ndarray
        ``(m, d)`` centres of the objects to search [px].
    max_distance : float
        A nearest-centre match farther than this is rejected [px]. Default 3 (the paper's).

    Returns
    -------
    MatchResult

    Notes
    -----
    For each reference object independently: (1) an object of ``other`` whose centre rounds to
    the same pixel is its match (the nearest of them if several); (2) otherwise the object with
    the nearest centre (Euclidean, k-d tree), kept only when at most ``max_distance`` away.
    As in Pomarico et al., the matching is **not one-to-one**: two reference objects may match
    the same object of ``other`` (e.g. when ``other`` merged them), and objects of ``other``
    may stay unmatched.
    """
    ref = np.asarray(ref_centres, dtype=np.float64)
    oth = np.asarray(other_centres, dtype=np.float64)
    if ref.ndim == 1 and ref.size == 0:
        ref = ref.reshape(0, oth.shape[1] if oth.ndim == 2 else 2)
    if oth.ndim == 1 and oth.size == 0:
        oth = oth.reshape(0, ref.shape[1])
    if ref.ndim != 2 or oth.ndim != 2 or ref.shape[1] != oth.shape[1]:
        raise ValueError(f"centres must be (n, d) and (m, d) arrays, got {ref.shape} and "
                         f"{oth.shape}")
    if not max_distance >= 0:
        raise ValueError("max_distance must be >= 0")
    n = ref.shape[0]
    index = np.full(n, -1, np.intp)
    distance = np.full(n, np.nan)
    if n == 0 or oth.shape[0] == 0:
        return MatchResult(index, distance, 0, 0, n)

    # (1) identical centre pixel
    exact = np.zeros(n, bool)
    buckets: dict[tuple[int, ...], list[int]] = {}
    for j, key in enumerate(map(tuple, _centre_pixels(oth))):
        buckets.setdefault(key, []).append(j)
    for i, key in enumerate(map(tuple, _centre_pixels(ref))):
        cand = buckets.get(key)
        if cand is None:
            continue
        d = np.linalg.norm(oth[cand] - ref[i], axis=1)
        best = int(np.argmin(d))
        index[i] = cand[best]
        distance[i] = d[best]
        exact[i] = True

    # (2) nearest centre for the rest
    rest = np.flatnonzero(~exact)
    if rest.size:
        d, j = cKDTree(oth).query(ref[rest], k=1)
        ok = d <= max_distance
        index[rest[ok]] = j[ok]
        distance[rest[ok]] = d[ok]
    n_exact = int(exact.sum())
    n_matched = int((index >= 0).sum())
    return MatchResult(index, distance, n_exact, n_matched - n_exact, n - n_matched)


def _safe_divide(x: float, y: float) -> float:
    return float(x) / float(y) if y else 0.0


def instance_metrics(true_labels: np.ndarray, pred_labels: np.ndarray, *,
                     iou_threshold: float = 0.5) -> dict[str, float]:
    """Instance-segmentation scores of ``pred_labels`` against ``true_labels`` (StarDist).

    Parameters
    ----------
    true_labels, pred_labels : numpy.ndarray
        Integer label images of the same shape (2-D or 3-D); 0 is background.
    iou_threshold : float
        A pair counts as a true positive when its intersection over union is at least this.

    Returns
    -------
    dict[str, float]
        ``n_true``, ``n_pred``, ``tp``, ``fp`` (= n_pred − tp), ``fn`` (= n_true − tp),
        ``precision`` tp/(tp+fp), ``recall`` tp/(tp+fn), ``accuracy`` tp/(tp+fp+fn),
        ``f1`` 2tp/(2tp+fp+fn), ``panoptic_quality`` ΣIoU/(tp + fp/2 + fn/2) and
        ``mean_matched_iou`` ΣIoU/tp, the sums running over the true-positive pairs.
        As in StarDist, a ratio whose denominator is 0 is reported as 0 (so two empty images
        give all ratios 0: check ``n_true`` and ``n_pred``).

    Notes
    -----
    One-to-one matching maximising the number of pairs with IoU ≥ threshold, then their summed
    IoU (StarDist's cost ``−[IoU ≥ t] − IoU/(2·n)``), solved with
    :func:`scipy.optimize.linear_sum_assignment`. Pairs below the threshold can never be true
    positives, so the assignment is solved separately on each connected group of
    above-threshold pairs, which keeps it fast for thousands of objects (for t ≥ 0.5 every
    group is a single pair: an object cannot overlap two others by more than half).
    The overlap counts come from a sparse matrix of (true, pred) label pairs.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    t = np.asarray(true_labels)
    p = np.asarray(pred_labels)
    if t.shape != p.shape:
        raise ValueError(f"label images differ in shape: {t.shape} vs {p.shape}")
    for a in (t, p):
        if a.dtype != bool and not np.issubdtype(a.dtype, np.integer):
            raise TypeError("label images must be integer arrays")
    t_ids, t_inv = np.unique(t.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(p.ravel(), return_inverse=True)
    # index 0 is background when present; shift so that object k has index k (1-based)
    t_inv = t_inv + (0 if t_ids[0] == 0 else 1)
    p_inv = p_inv + (0 if p_ids[0] == 0 else 1)
    n_true = int(t_inv.max()) if t_inv.size else 0
    n_pred = int(p_inv.max()) if p_inv.size else 0

    tp = 0
    sum_iou = 0.0
    if n_true and n_pred:
        overlap = sparse.coo_matrix(
            (np.ones(t_inv.size, np.int64), (t_inv, p_inv)), shape=(n_true + 1, n_pred + 1)
        ).tocsr()
        area_t = np.asarray(overlap.sum(axis=1)).ravel()
        area_p = np.asarray(overlap.sum(axis=0)).ravel()
        inter = overlap[1:, 1:].tocoo()
        iou = inter.data / (area_t[inter.row + 1] + area_p[inter.col + 1] - inter.data)
        keep = iou >= iou_threshold
        rows, cols, iou = inter.row[keep], inter.col[keep], iou[keep]
        if iou.size:
            graph = sparse.coo_matrix((np.ones(iou.size), (rows, cols + n_true)),
                                      shape=(n_true + n_pred,) * 2)
            _, comp = connected_components(graph, directed=False)
            group = comp[rows]
            n_matched = min(n_true, n_pred)
            order = np.argsort(group, kind="stable")
            bounds = np.flatnonzero(np.diff(group[order])) + 1
            for sel in np.split(order, bounds):
                if sel.size == 1:
                    tp += 1
                    sum_iou += float(iou[sel[0]])
                    continue
                r_u, r_i = np.unique(rows[sel], return_inverse=True)
                c_u, c_i = np.unique(cols[sel], return_inverse=True)
                cost = np.zeros((r_u.size, c_u.size))
                cost[r_i, c_i] = -1.0 - iou[sel] / (2.0 * n_matched)
                score = np.zeros_like(cost)
                score[r_i, c_i] = iou[sel]
                ri, ci = linear_sum_assignment(cost)
                good = cost[ri, ci] < 0
                tp += int(good.sum())
                sum_iou += float(score[ri[good], ci[good]].sum())
    fp = n_pred - tp
    fn = n_true - tp
    return {
        "n_true": float(n_true),
        "n_pred": float(n_pred),
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "precision": _safe_divide(tp, tp + fp),
        "recall": _safe_divide(tp, tp + fn),
        "accuracy": _safe_divide(tp, tp + fp + fn),
        "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
        "panoptic_quality": _safe_divide(sum_iou, tp + fp / 2 + fn / 2),
        "mean_matched_iou": _safe_divide(sum_iou, tp),
        "iou_threshold": float(iou_threshold),
    }
