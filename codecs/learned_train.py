"""Training a learned codec on the lab's own frames (the rate–distortion loop of CompressAI).

Loss ``λ · D + R`` (``compressai.losses.RateDistortionLoss``: ``D`` = 255² · MSE, or 1 − MS-SSIM;
``R`` in bits per pixel), Adam on the network and a second Adam on the entropy bottleneck's
quantiles (the auxiliary loss), random ``patch``² crops of the frames mapped as the codec maps
them. Plain functions over arrays; the command line and checkpoints build on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .learned import ARCHITECTURES, _torch, build_model

__all__ = ["train"]


def train(frames: Sequence[np.ndarray] | np.ndarray, *, arch: str, sizes: dict[str, int], metric: str = "mse",
          lmbda: float = 0.01, steps: int = 200, patch: int = 64, batch: int = 4, lr: float = 1e-4,
          mapping: str = "study", seed: int = 0, model=None,
          progress: Callable[[int, float, float], None] | None = None):
    """Train (or continue training) a CompressAI model on random crops of ``frames``.

    Parameters
    ----------
    frames
        ``(..., Y, X)`` integer planes (uint8 or uint16), each at least ``patch`` on a side.
    arch, sizes
        Architecture name (:data:`~rawgate.codecs.learned.ARCHITECTURES`) and constructor sizes.
    metric
        ``"mse"`` or ``"ms-ssim"`` (needs patches of at least 161 px for its five scales).
    lmbda
        Rate–distortion trade-off λ (larger: better quality, more bits).
    steps, patch, batch, lr
        Optimiser steps, crop size [px] (a multiple of 64), crops per step, Adam learning rate.
    mapping
        ``"study"`` (x / dtype max) or ``"range"`` (each frame's min–max), as the codec maps.
    seed
        Seeds the crops and the initial weights.
    model
        A model to continue training (fine-tuning); default a new one.
    progress
        Called after each step with ``(step, loss, bpp)``.

    Returns
    -------
    The trained model, ``update(force=True)``-ed and in eval mode (ready to code).
    """
    torch = _torch()
    from compressai.losses import RateDistortionLoss

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}")
    planes = np.asarray(frames)
    planes = planes.reshape(-1, *planes.shape[-2:])
    if min(planes.shape[-2:]) < patch:
        raise ValueError(f"frames of {planes.shape[-2:]} px are smaller than the {patch}² training crops")
    top = float(np.iinfo(planes.dtype).max)
    if mapping == "study":
        unit = planes.astype(np.float32) / np.float32(top)
    else:
        lo = planes.reshape(len(planes), -1).min(1)[:, None, None].astype(np.float32)
        hi = planes.reshape(len(planes), -1).max(1)[:, None, None].astype(np.float32)
        unit = (planes.astype(np.float32) - lo) / np.maximum(hi - lo, 1.0)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if model is None:
        model = build_model(arch, sizes)
    model.train()
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(params, lr=lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    criterion = RateDistortionLoss(lmbda=lmbda, metric=metric)
    h, w = unit.shape[-2:]
    for step in range(steps):
        idx = rng.integers(0, len(unit), batch)
        ys, xs = rng.integers(0, h - patch + 1, batch), rng.integers(0, w - patch + 1, batch)
        crops = np.stack([unit[i, y:y + patch, x:x + patch] for i, y, x in zip(idx, ys, xs)])
        x = torch.from_numpy(crops)[:, None].repeat(1, 3, 1, 1)
        out = model(x)
        loss = criterion(out, x)
        opt.zero_grad()
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        aux = model.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
        if progress is not None:
            progress(step, float(loss["loss"].detach()), float(loss["bpp_loss"].detach()))
    model.update(force=True)
    model.eval()
    return model
