"""Segmenters: the lab's model, as a callable ``image → label image``.

Built in: :class:`PixelClassifier`, a random forest on ilastik's pixel features
(:mod:`.features`), trained from a sparse label image the way people annotate in ilastik, napari
or Fiji (0 = unlabelled, 1 = background, 2 = foreground by default), then a probability
threshold and connected components. Models are saved with skops, never pickle: loading a model
file must not be able to run code, so :func:`load_segmenter` refuses any type outside a short
allow-list.

Any other model (a Cellpose or StarDist wrapper the lab writes) plugs in through the entry-point
group ``rawgate.segmenters``: the entry point names a callable ``image → labels`` (or a class
whose no-argument instance is one). In the lab's package ``pyproject.toml``::

    [project.entry-points."rawgate.segmenters"]
    my-cellpose = "mylab.rawgate_plugins:CellposeNuclei"

and ``rawgate check RAW --segmenter my-cellpose`` (or ``ep:my-cellpose``) uses it. The callable
gets the 2-D or 3-D frame as the camera wrote it (ADU, integer dtype) and returns an integer
label image of the same shape, 0 = background; it must be deterministic for ε to mean anything.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numba as nb
import numpy as np
from scipy import ndimage

from .features import TRUNCATE, FeatureSpec, compute_features, feature_names

__all__ = [
    "ENTRY_POINT_GROUP",
    "PixelClassifier",
    "Segmenter",
    "SegmenterError",
    "label_mask",
    "load_segmenter",
    "train_pixel_classifier",
]

ENTRY_POINT_GROUP = "rawgate.segmenters"
#: ``format`` key written into every model file; anything else is not ours.
FILE_FORMAT = "rawgate.pixel-classifier"
FILE_VERSION = 1
#: The only non-primitive types a model file may contain (skops refuses everything else).
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)
#: Feature stacks are computed in slabs along the first axis of at most this many voxels.
SLAB_VOXELS = 8 * 2**20


class SegmenterError(ValueError):
    """A segmenter cannot be loaded or trained, or does not fit the frame."""


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns a 2-D or 3-D image into an integer label image (0 = background)."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def label_mask(mask: np.ndarray, min_object_px: int = 0) -> np.ndarray:
    """Connected components of a boolean mask (8-connected in 2-D, 26 in 3-D, as ImageJ's
    particle analyser traces), dropping objects smaller than ``min_object_px`` pixels/voxels.

    Returns
    -------
    ndarray
        int32 labels 1..N in scan order, 0 = background.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    labels = labels.astype(np.int32, copy=False)
    if min_object_px > 1 and n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= min_object_px
        keep[0] = False
        remap = np.zeros(n + 1, np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = remap[labels]
    return labels


# ------------------------------------------------------------------ forest inference
# Why hand-written: sklearn's predict_proba runs one tree at a time over all pixels and holds
# the GIL between trees; a spot check asks for 12 full-frame predictions (4 M pixels × 100
# trees each). A flattened forest walked in numba, pixel blocks in parallel, reads each block's
# features once per tree from cache. It makes the same comparisons as sklearn
# (float32 feature ≤ float64 threshold), so the probabilities agree (tests check it).
@dataclass(frozen=True)
class _FlatForest:
    roots: np.ndarray  # (n_trees,) int64 index of each tree's root
    left: np.ndarray  # (n_nodes,) int64, −1 at leaves
    right: np.ndarray
    feature: np.ndarray  # int64
    threshold: np.ndarray  # float64
    p_foreground: np.ndarray  # (n_nodes,) float64 foreground fraction at the node

    @classmethod
    def from_sklearn(cls, forest, foreground_index: int) -> "_FlatForest":
        roots, left, right, feat, thr, val = [], [], [], [], [], []
        base = 0
        for est in forest.estimators_:
            t = est.tree_
            n = t.node_count
            leaf = t.children_left == -1
            roots.append(base)
            left.append(np.where(leaf, -1, t.children_left + base))
            right.append(np.where(leaf, -1, t.children_right + base))
            feat.append(t.feature.astype(np.int64))
            thr.append(t.threshold.astype(np.float64))
            v = t.value[:, 0, :]
            val.append(v[:, foreground_index] / np.maximum(v.sum(axis=1), 1e-300))
            base += n
        return cls(
            np.asarray(roots, np.int64),
            np.concatenate(left).astype(np.int64),
            np.concatenate(right).astype(np.int64),
            np.concatenate(feat),
            np.concatenate(thr),
            np.concatenate(val).astype(np.float64),
        )


@nb.njit(parallel=True, cache=True)
def _forest_proba(x, roots, left, right, feature, threshold, value, out):  # pragma: no cover - numba
    n_pix = x.shape[1]
    block = 256
    n_blocks = (n_pix + block - 1) // block
    n_trees = roots.size
    for b in nb.prange(n_blocks):
        p0 = b * block
        p1 = min(p0 + block, n_pix)
        acc = np.zeros(p1 - p0, np.float64)
        for t in range(n_trees):
            root = roots[t]
            for p in range(p0, p1):
                node = root
                while left[node] != -1:
                    if x[feature[node], p] <= threshold[node]:
                        node = left[node]
                    else:
                        node = right[node]
                acc[p - p0] += value[node]
        for p in range(p0, p1):
            out[p] = np.float32(acc[p - p0] / n_trees)


# ------------------------------------------------------------------ the classifier
@dataclass
class PixelClassifier:
    """Random forest on ilastik features → foreground probability → threshold → components.

    Attributes
    ----------
    features
        The feature bank (scales [pixels] and kinds).
    forest
        The trained ``sklearn.ensemble.RandomForestClassifier``.
    ndim
        2 or 3: the dimensionality the model was trained on (and accepts).
    threshold
        Foreground probability at or above which a pixel is foreground (ilastik: 0.5).
    min_object_px
        Objects smaller than this many pixels/voxels are dropped (0: keep all).
    foreground_label
        Annotation value that meant "foreground" in the training labels.
    trained_on
        Provenance: image shape and dtype, labelled pixels per class, intensity percentiles.
    """

    features: FeatureSpec
    forest: Any
    ndim: int
    threshold: float = 0.5
    min_object_px: int = 0
    foreground_label: int = 2
    trained_on: dict[str, Any] = field(default_factory=dict)
    _flat: _FlatForest | None = field(default=None, init=False, repr=False, compare=False)

    # -- inference
    def _flat_forest(self) -> _FlatForest:
        if self._flat is None:
            self._flat = _FlatForest.from_sklearn(self.forest, list(self.forest.classes_).index(1))
        return self._flat

    def check_image(self, image: np.ndarray) -> None:
        """Refuse a frame this model cannot have been meant for (dimensions, intensity range)."""
        img = np.asarray(image)
        if img.ndim != self.ndim:
            raise SegmenterError(
                f"the segmenter was trained on {self.ndim}-D images; this frame is {img.ndim}-D {img.shape}"
            )
        if min(img.shape) < 1:
            raise SegmenterError(f"empty frame {img.shape}")
        rng = self.trained_on.get("intensity_range")
        if rng is not None and img.size:
            lo, hi = np.percentile(img.ravel()[:: max(1, img.size // 100_000)], [1, 99])
            span = max(rng[1] - rng[0], 1.0)
            if hi < rng[0] - span or lo > rng[1] + span:
                raise SegmenterError(
                    f"frame intensities (1–99 %: {lo:.4g}–{hi:.4g}) lie far outside what the segmenter "
                    f"was trained on (0.1–99.9 %: {rng[0]:.4g}–{rng[1]:.4g}); wrong model or wrong data?"
                )

    def probability(self, image: np.ndarray) -> np.ndarray:
        """Foreground probability per pixel, float32 in [0, 1], same shape as ``image``.

        Features are computed in slabs along the first axis with a halo wide enough for the
        largest filter, so a big stack never holds its whole feature stack in memory and the
        result equals the whole-image computation.
        """
        img = np.asarray(image)
        self.check_image(img)
        flat = self._flat_forest()
        nf = self.features.n_features(img.ndim)
        if nf != self.forest.n_features_in_:
            raise SegmenterError(f"model file inconsistent: {nf} features vs forest's {self.forest.n_features_in_}")
        smax = max(self.features.scales)
        halo = int(TRUNCATE * smax + 0.5) + int(TRUNCATE * 0.5 * smax + 0.5) + 1
        per_row = int(np.prod(img.shape[1:]))
        rows = max(1, SLAB_VOXELS // max(per_row, 1))
        out = np.empty(img.shape, np.float32)
        n0 = img.shape[0]
        for a in range(0, n0, rows):
            b = min(n0, a + rows)
            lo, hi = max(0, a - halo), min(n0, b + halo)
            feats = compute_features(img[lo:hi], self.features)[:, a - lo : b - lo].reshape(nf, -1)
            proba = np.empty(feats.shape[1], np.float32)
            _forest_proba(
                np.ascontiguousarray(feats), flat.roots, flat.left, flat.right, flat.feature,
                flat.threshold, flat.p_foreground, proba,
            )
            out[a:b] = proba.reshape(out[a:b].shape)
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Label image (int32, 0 = background) of a frame."""
        return label_mask(self.probability(image) >= self.threshold, self.min_object_px)

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write the model as a skops file (atomically: temporary file, then rename)."""
        import skops.io as sio

        path = Path(path)
        payload = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "features": self.features.get_config(),
            "ndim": int(self.ndim),
            "threshold": float(self.threshold),
            "min_object_px": int(self.min_object_px),
            "foreground_label": int(self.foreground_label),
            "trained_on": self.trained_on,
            "forest": self.forest,
        }
        tmp = path.with_name(path.name + ".tmp")
        sio.dump(payload, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PixelClassifier":
        """Read a model written by :meth:`save`; refuse anything else with a clear reason."""
        import skops.io as sio

        path = Path(path)
        if not path.is_file():
            raise SegmenterError(f"{path}: no such segmenter file")
        if not zipfile.is_zipfile(path):
            raise SegmenterError(f"{path}: not a rawgate segmenter (not a skops file; pickles are never loaded)")
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as e:  # damaged archive, not a skops layout
            raise SegmenterError(f"{path}: damaged or not a skops model file ({type(e).__name__}: {e})") from None
        foreign = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if foreign:
            raise SegmenterError(
                f"{path}: refused: the file holds types a rawgate segmenter never contains and that "
                f"could run code when loaded: {', '.join(foreign)}"
            )
        try:
            payload = sio.load(path, trusted=list(TRUSTED_TYPES))
        except Exception as e:
            raise SegmenterError(f"{path}: damaged or tampered model file ({type(e).__name__}: {e})") from None
        if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
            kind = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise SegmenterError(f"{path}: not a rawgate segmenter (it holds {kind!r})")
        if payload.get("version") != FILE_VERSION:
            raise SegmenterError(f"{path}: segmenter file version {payload.get('version')} is not supported")
        from sklearn.ensemble import RandomForestClassifier

        forest = payload.get("forest")
        if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "estimators_"):
            raise SegmenterError(f"{path}: the model file holds no trained random forest")
        try:
            model = cls(
                features=FeatureSpec.from_config(payload["features"]),
                forest=forest,
                ndim=int(payload["ndim"]),
                threshold=float(payload["threshold"]),
                min_object_px=int(payload["min_object_px"]),
                foreground_label=int(payload["foreground_label"]),
                trained_on=dict(payload.get("trained_on") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SegmenterError(f"{path}: damaged segmenter metadata ({e})") from None
        if model.ndim not in (2, 3) or not 0 < model.threshold < 1:
            raise SegmenterError(f"{path}: damaged segmenter metadata (ndim {model.ndim}, threshold {model.threshold})")
        if list(forest.classes_) != [0, 1]:
            raise SegmenterError(f"{path}: the forest's classes are {list(forest.classes_)}, not background/foreground")
        if model.features.n_features(model.ndim) != forest.n_features_in_:
            raise SegmenterError(f"{path}: the feature bank and the forest disagree on the number of features")
        return model

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for reports."""
        return {
            "kind": "pixel-classifier",
            "features": self.features.get_config(),
            "n_features": self.features.n_features(self.ndim),
            "n_trees": len(self.forest.estimators_),
            "ndim": self.ndim,
            "threshold": self.threshold,
            "min_object_px": self.min_object_px,
            "trained_on": self.trained_on,
        }


def train_pixel_classifier(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    features: FeatureSpec | None = None,
    n_trees: int = 100,
    max_depth: int | None = None,
    threshold: float = 0.5,
    min_object_px: int = 0,
    foreground_label: int = 2,
    max_samples: int = 200_000,
    seed: int = 0,
    n_jobs: int | None = None,
) -> PixelClassifier:
    """Train a :class:`PixelClassifier` from a sparse annotation.

    Parameters
    ----------
    image
        Raw 2-D or 3-D image (ADU).
    labels
        Same shape, integer: 0 = unlabelled; every other value a class. Pixels labelled
        ``foreground_label`` are foreground, all other labelled pixels background.
    features
        Feature bank (default :class:`FeatureSpec`).
    n_trees, max_depth
        Forest size (ilastik: 100 trees, unlimited depth).
    threshold
        Foreground probability threshold.
    min_object_px
        Objects smaller than this are dropped after thresholding.
    foreground_label
        Annotation value meaning foreground.
    max_samples
        At most this many labelled pixels are used (a seeded random subset, classes kept).
    seed
        Seed for the subset and the forest.
    n_jobs
        Threads for training (sklearn's ``n_jobs``; default all cores).
    """
    from sklearn.ensemble import RandomForestClassifier

    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim not in (2, 3):
        raise SegmenterError(f"training needs a 2-D or 3-D image, got shape {img.shape}")
    if lab.shape != img.shape:
        raise SegmenterError(f"labels {lab.shape} and image {img.shape} differ in shape")
    if not np.issubdtype(lab.dtype, np.integer):
        raise SegmenterError(f"labels must be an integer image (0 = unlabelled), got {lab.dtype}")
    if not 0 < threshold < 1:
        raise SegmenterError(f"threshold must be in (0, 1), got {threshold}")
    idx = np.flatnonzero(lab.ravel())
    classes = np.unique(lab.ravel()[idx])
    if foreground_label not in classes or len(classes) < 2:
        raise SegmenterError(
            f"labels need foreground ({foreground_label}) and at least one background class; "
            f"found classes {classes.tolist()} in {idx.size} labelled pixels"
        )
    rng = np.random.default_rng(seed)
    if idx.size > max_samples:
        idx = np.sort(rng.choice(idx, max_samples, replace=False))
    spec = features or FeatureSpec()
    feats = compute_features(img, spec).reshape(spec.n_features(img.ndim), -1)
    x = feats[:, idx].T.copy()
    y = (lab.ravel()[idx] == foreground_label).astype(np.int64)  # 1 = foreground, 0 = the rest
    forest = RandomForestClassifier(
        n_estimators=n_trees, max_depth=max_depth, max_features="sqrt", n_jobs=n_jobs, random_state=seed
    )
    forest.fit(x, y)
    sub = img.ravel()[:: max(1, img.size // 1_000_000)]
    lo, hi = np.percentile(sub, [0.1, 99.9])
    trained_on = {
        "shape": list(img.shape),
        "dtype": str(img.dtype),
        "labelled_px": {str(int(c)): int((lab == c).sum()) for c in classes},
        "samples_used": int(idx.size),
        "intensity_range": [float(lo), float(hi)],
        "feature_names": feature_names(spec, img.ndim),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return PixelClassifier(
        features=spec,
        forest=forest,
        ndim=img.ndim,
        threshold=threshold,
        min_object_px=min_object_px,
        foreground_label=foreground_label,
        trained_on=trained_on,
    )


def load_segmenter(spec: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A segmenter from a model file or an entry point of group ``rawgate.segmenters``.

    ``spec`` is a path to a skops file written by :meth:`PixelClassifier.save`, or
    ``ep:NAME`` / ``NAME`` for a registered entry point (files win when both exist).
    """
    s = str(spec)
    name = s[3:] if s.startswith("ep:") else s
    if not s.startswith("ep:") and Path(s).exists():
        return PixelClassifier.load(s)
    eps = {e.name: e for e in entry_points(group=ENTRY_POINT_GROUP)}
    if name in eps:
        try:
            obj = eps[name].load()
        except Exception as e:
            raise SegmenterError(f"segmenter entry point {name!r} failed to load: {type(e).__name__}: {e}") from None
        if isinstance(obj, type):
            obj = obj()
        if not callable(obj):
            raise SegmenterError(f"segmenter entry point {name!r} is not callable")
        return _checked(obj, name)
    known = ", ".join(sorted(eps)) or "none installed"
    raise SegmenterError(f"{s}: no such segmenter file, and no entry point of that name ({known})")


def _checked(fn: Callable[[np.ndarray], np.ndarray], name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a plug-in so that a wrong output is a clear error, not a confusing ε later."""

    def segment(image: np.ndarray) -> np.ndarray:
        out = np.asarray(fn(image))
        if out.shape != np.shape(image):
            raise SegmenterError(f"segmenter {name!r} returned shape {out.shape} for an image of {np.shape(image)}")
        if not (np.issubdtype(out.dtype, np.integer) or out.dtype == bool):
            raise SegmenterError(f"segmenter {name!r} returned {out.dtype}, not an integer label image")
        return out.astype(np.int32, copy=False)

    segment.__name__ = f"segmenter[{name}]"
    return segment
