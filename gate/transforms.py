"""Transforms between decoding and segmentation: ε through a processing pipeline.

Some measurements are not made on the camera's frames but on what a pipeline computes from them
— the paper's optical projection tomography case: projections → filtered back-projection →
segmentation. A transform is a callable ``image → image`` (deterministic, same for raw, replicas
and decoded copies); the spot check runs it on the raw frame, on every replica (drawn on the raw
projections, where the camera noise is) and on the decoded copy before segmenting and measuring,
so ε judges the reconstruction the lab analyses.

Built in: :class:`FilteredBackProjection` (``fbp``), scikit-image's ``iradon``. Others plug in
through the entry-point group ``rawgate.transforms``, like segmenters::

    [project.entry-points."rawgate.transforms"]
    my-deconvolution = "mylab.rawgate_plugins:Deconvolve"
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

import numpy as np

__all__ = ["ENTRY_POINT_GROUP", "FilteredBackProjection", "TransformError", "load_transform"]

ENTRY_POINT_GROUP = "rawgate.transforms"


class TransformError(ValueError):
    """A transform cannot be loaded or does not fit the frame."""


@dataclass(frozen=True)
class FilteredBackProjection:
    """Filtered back-projection of a sinogram (scikit-image's ``iradon``).

    The frame is a sinogram with one projection per row: ``(n_angles, n_detector)``, or a stack
    ``(Z, n_angles, n_detector)`` reconstructed slice by slice. Angles are evenly spaced over
    ``span_deg`` (the projections of a parallel-beam scan over 180°); the result is the
    ``(n_detector, n_detector)`` reconstruction inside the inscribed circle, float32.

    Attributes
    ----------
    filter_name
        The reconstruction filter: ``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``.
    span_deg
        The angular range the projections cover [degrees].
    """

    filter_name: str = "ramp"
    span_deg: float = 180.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.transform import iradon

        a = np.asarray(image, dtype=np.float64)
        if a.ndim == 3:
            return np.stack([self(s) for s in a])
        if a.ndim != 2 or min(a.shape) < 2:
            raise TransformError(f"fbp reconstructs a sinogram (angles × detector), got shape {a.shape}")
        theta = np.linspace(0.0, self.span_deg, a.shape[0], endpoint=False)
        return iradon(a.T, theta=theta, filter_name=self.filter_name, circle=True).astype(np.float32)


def load_transform(spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """A transform by name: ``fbp`` (options: ``fbp:filter_name=hann,span_deg=360``), or an entry
    point of group ``rawgate.transforms`` (``name`` or ``ep:name``)."""
    name, _, rest = spec.strip().partition(":")
    if name == "fbp":
        opts: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            k, _, v = part.partition("=")
            if k == "filter_name":
                opts[k] = v
            elif k == "span_deg":
                opts[k] = float(v)
            else:
                raise TransformError(f"fbp: unknown option {k!r} (filter_name, span_deg)")
        return FilteredBackProjection(**opts)
    ep_name = rest if name == "ep" else spec.strip()
    found = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == ep_name]
    if not found:
        known = ", ".join(sorted(e.name for e in entry_points(group=ENTRY_POINT_GROUP))) or "none installed"
        raise TransformError(f"unknown transform {spec!r}: built in is fbp; entry points: {known}")
    obj = found[0].load()
    fn = obj() if isinstance(obj, type) else obj
    if not callable(fn):
        raise TransformError(f"transform {spec!r} is not callable")
    return fn
