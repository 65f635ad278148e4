"""Training a learned codec on the lab's own frames (the rate–distortion loop of CompressAI).

Loss ``λ · D + R`` (``compressai.losses.RateDistortionLoss``: ``D`` = 255² · MSE, or 1 − MS-SSIM;
``R`` in bits per pixel), Adam on the network and a second Adam on the entropy bottleneck's
quantiles (the auxiliary loss), ``ReduceLROnPlateau`` on the loss, random ``patch``² crops of
the frames mapped as the codec maps them. Zhou et al. (Table S3) train an MSE phase and then an
MS-SSIM phase: :class:`Trainer` runs phases one after the other and its whole state (weights,
both optimisers, the scheduler, the crop generator and torch's, the step) goes into a checkpoint, so a run
stopped at any step resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .learned import ARCHITECTURES, CHECKPOINT_FORMAT, _torch, build_model
from .learned3d import ARCH_3D, PAD_3D

__all__ = ["Phase", "Trainer", "train"]

#: pytorch-msssim's five-scale MS-SSIM needs images larger than 160 px
MSSSIM_MIN_PATCH = 192


class Phase(tuple):
    """``(metric, steps, lmbda)`` of one training phase."""

    def __new__(cls, metric: str, steps: int, lmbda: float) -> "Phase":
        if metric not in ("mse", "ms-ssim"):
            raise ValueError(f"metric must be mse or ms-ssim, got {metric!r}")
        if steps < 0:
            raise ValueError(f"steps must be ≥ 0, got {steps}")
        return super().__new__(cls, (metric, int(steps), float(lmbda)))


def _unit(frames: Sequence[np.ndarray] | np.ndarray, mapping: str) -> np.ndarray:
    planes = np.asarray(frames)
    planes = planes.reshape(-1, *planes.shape[-2:])
    if not np.issubdtype(planes.dtype, np.integer):
        raise ValueError(f"training frames are integer camera data, got {planes.dtype}")
    top = float(np.iinfo(planes.dtype).max)
    if mapping == "study":
        return planes.astype(np.float32) / np.float32(top)
    if mapping != "range":
        raise ValueError(f"mapping must be study or range, got {mapping!r}")
    lo = planes.reshape(len(planes), -1).min(1)[:, None, None].astype(np.float32)
    hi = planes.reshape(len(planes), -1).max(1)[:, None, None].astype(np.float32)
    return (planes.astype(np.float32) - lo) / np.maximum(hi - lo, 1.0)


def _unit_stacks(frames: Sequence[np.ndarray] | np.ndarray, mapping: str) -> list[np.ndarray]:
    """``(Z, Y, X)`` stacks mapped to [0, 1]; ``range`` maps each stack by its own min–max."""
    stacks = [np.asarray(s) for s in (frames if isinstance(frames, (list, tuple)) else [frames])]
    stacks = [s.reshape(-1, *s.shape[-3:]) if s.ndim >= 3 else s[None, None] for s in stacks]
    out = []
    for group in stacks:
        for s in group:
            u = _unit(s[None], "study") if mapping == "study" else None
            if mapping == "range":
                lo, hi = float(s.min()), float(s.max())
                u = (s.astype(np.float32) - lo) / max(hi - lo, 1.0)
            elif mapping != "study":
                raise ValueError(f"mapping must be study or range, got {mapping!r}")
            out.append(np.asarray(u, np.float32).reshape(s.shape))
    return out


class Trainer:
    """A resumable rate–distortion training run of one model on one set of frames.

    Parameters
    ----------
    frames
        ``(..., Y, X)`` integer planes (uint8 or uint16); for the 3-D model
        (``factorized3d``) ``(Z, Y, X)`` stacks (a list, or an array ``(S, Z, Y, X)``), trained on
        ``patch_z`` × ``patch`` × ``patch`` crops with MSE only (no 3-D MS-SSIM).
    arch, sizes
        Architecture (:data:`~rawgate.codecs.learned.ARCHITECTURES`) and constructor sizes.
    phases
        :class:`Phase` list, run in order (the study: MSE, then MS-SSIM).
    patch, batch, lr
        Crop size [px] (a multiple of 64; MS-SSIM phases use at least 192), crops per step, Adam
        learning rate.
    mapping
        ``"study"`` or ``"range"``, as the codec maps planes.
    seed
        Seeds the crops and the initial weights.
    model
        A model to fine-tune (default: a new one).
    """

    def __init__(self, frames, *, arch: str, sizes: dict[str, int], phases: Sequence[Phase], patch: int = 64,
                 batch: int = 4, lr: float = 1e-4, mapping: str = "study", seed: int = 0, model=None,
                 patch_z: int = 8) -> None:
        torch = _torch()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        if patch < 64 or patch % 64:
            raise ValueError(f"patch must be a positive multiple of 64, got {patch}")
        self.arch, self.sizes, self.phases = arch, dict(sizes), [Phase(*p) for p in phases]
        self.patch, self.batch, self.lr, self.mapping, self.seed = patch, batch, lr, mapping, seed
        self.patch_z = int(patch_z)
        self.is3d = arch == ARCH_3D
        if self.is3d:
            if any(m != "mse" for m, n, _ in self.phases if n):
                raise ValueError(f"{ARCH_3D} trains with MSE only (MS-SSIM is defined on 2-D images)")
            if self.patch_z < PAD_3D[0] or self.patch_z % PAD_3D[0]:
                raise ValueError(f"patch_z must be a positive multiple of {PAD_3D[0]}, got {patch_z}")
            self.stacks = _unit_stacks(frames, mapping)
            small = [s.shape for s in self.stacks if s.shape[0] < self.patch_z or min(s.shape[1:]) < patch]
            if small:
                raise ValueError(f"stacks {small} are smaller than the {self.patch_z} × {patch}² training crops "
                                 "(Z × Y × X)")
            self.unit = None
        else:
            self.unit = _unit(frames, mapping)
            need = max([patch] + [MSSSIM_MIN_PATCH for m, n, _ in self.phases if m == "ms-ssim" and n])
            if min(self.unit.shape[-2:]) < need:
                raise ValueError(f"frames of {self.unit.shape[-2:]} px are smaller than the {need}² training crops")
        torch.manual_seed(seed)
        self.model = model if model is not None else build_model(arch, sizes)
        self.params = [p for n, p in self.model.named_parameters() if not n.endswith(".quantiles")]
        aux_params = [p for n, p in self.model.named_parameters() if n.endswith(".quantiles")]
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, "min", factor=0.5, patience=20)
        self.rng = np.random.default_rng(seed)
        self.step = 0  # steps done, over all phases
        self.history: list[tuple[int, str, float, float]] = []  # (step, metric, loss, bpp)

    @property
    def total_steps(self) -> int:
        return sum(n for _, n, _ in self.phases)

    def _phase_at(self, step: int) -> Phase:
        done = 0
        for p in self.phases:
            done += p[1]
            if step < done:
                return p
        return self.phases[-1]

    def run(self, *, until: int | None = None, progress: Callable[[int, str, float, float], None] | None = None,
            checkpoint: Callable[["Trainer"], None] | None = None, every: int = 0):
        """Train from the current step to ``until`` (default: the end of the last phase).

        ``progress(step, metric, loss, bpp)`` after each step; ``checkpoint(self)`` every
        ``every`` steps (0: never) — and the caller saves on Ctrl-C. Returns the model,
        ``update(force=True)``-ed and in eval mode when the last phase is done.
        """
        torch = _torch()
        from compressai.losses import RateDistortionLoss

        end = self.total_steps if until is None else min(until, self.total_steps)
        self.model.train()
        while self.step < end:
            metric, _, lmbda = self._phase_at(self.step)
            if self.is3d:
                x = torch.from_numpy(self._crops3d())[:, None]
                loss = _rd_loss_3d(self.model(x), x, lmbda)
            else:
                x = torch.from_numpy(self._crops2d(metric))[:, None].repeat(1, 3, 1, 1)
                loss = RateDistortionLoss(lmbda=lmbda, metric=metric)(self.model(x), x)
            self.opt.zero_grad()
            loss["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            aux = self.model.aux_loss()
            self.aux_opt.zero_grad()
            aux.backward()
            self.aux_opt.step()
            value, bpp = float(loss["loss"].detach()), float(loss["bpp_loss"].detach())
            self.sched.step(value)
            self.step += 1
            self.history.append((self.step, metric, value, bpp))
            if progress is not None:
                progress(self.step, metric, value, bpp)
            if checkpoint is not None and every and self.step % every == 0 and self.step < end:
                checkpoint(self)
        self.model.update(force=True)
        self.model.eval()
        return self.model

    def _crops2d(self, metric: str) -> np.ndarray:
        h, w = self.unit.shape[-2:]
        patch = max(self.patch, MSSSIM_MIN_PATCH) if metric == "ms-ssim" else self.patch
        idx = self.rng.integers(0, len(self.unit), self.batch)
        ys = self.rng.integers(0, h - patch + 1, self.batch)
        xs = self.rng.integers(0, w - patch + 1, self.batch)
        return np.stack([self.unit[i, y:y + patch, x:x + patch] for i, y, x in zip(idx, ys, xs)])

    def _crops3d(self) -> np.ndarray:
        p, pz, out = self.patch, self.patch_z, []
        for i in self.rng.integers(0, len(self.stacks), self.batch):
            s = self.stacks[i]
            z, y, x = (int(self.rng.integers(0, n - c + 1)) for n, c in zip(s.shape, (pz, p, p)))
            out.append(s[z:z + pz, y:y + p, x:x + p])
        return np.stack(out)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (tensors and plain values only: loadable with
        ``torch.load(weights_only=True)``)."""
        return {"step": self.step, "phases": [list(p) for p in self.phases], "patch": self.patch,
                "patch_z": self.patch_z,
                "batch": self.batch, "lr": self.lr, "mapping": self.mapping, "seed": self.seed,
                "optimizer": self.opt.state_dict(), "aux_optimizer": self.aux_opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": self.rng.bit_generator.state,
                # training quantises with uniform noise from torch's generator: it resumes too
                "torch_rng": _torch().get_rng_state(),
                "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.opt.load_state_dict(state["optimizer"])
        self.aux_opt.load_state_dict(state["aux_optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["rng"]
        _torch().set_rng_state(state["torch_rng"])
        self.history = [(int(a), str(b), float(c), float(d)) for a, b, c, d in state["history"]]

    def save(self, path, *, quality: int = 0) -> None:
        """A rawgate checkpoint the ``learned`` codec loads, carrying the training state too."""
        from .learned import save_checkpoint

        metric = self.phases[-1][0] if self.phases else "mse"
        save_checkpoint(self.model, path, arch=self.arch, metric=metric, quality=quality, sizes=self.sizes,
                        extra={"training": self.state_dict()})

    @classmethod
    def resume(cls, path, frames) -> "Trainer":
        """The run saved at ``path`` (by :meth:`save`), ready to continue on ``frames``."""
        torch = _torch()
        from compressai.zoo.pretrained import load_pretrained

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or "training" not in obj.get("extra", {}):
            raise ValueError(f"{path} is not a rawgate training checkpoint (nothing to resume)")
        st = obj["extra"]["training"]
        model = build_model(obj["arch"], obj["sizes"])
        model.load_state_dict(load_pretrained(obj["state_dict"]))
        t = cls(frames, arch=obj["arch"], sizes=obj["sizes"], phases=[Phase(*p) for p in st["phases"]],
                patch=st["patch"], batch=st["batch"], lr=st["lr"], mapping=st["mapping"], seed=st["seed"], model=model,
                patch_z=int(st.get("patch_z", 8)))
        t.load_state_dict(st)
        return t


def _rd_loss_3d(out: dict[str, Any], target: Any, lmbda: float) -> dict[str, Any]:
    """CompressAI's rate–distortion loss for volumes: ``λ · 255² · MSE + bits per voxel``
    (``RateDistortionLoss`` counts pixels of 4-D tensors only)."""
    import math

    torch = _torch()
    voxels = target.numel() / target.size(1)
    bpp = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / (-math.log(2) * voxels)
    mse = torch.nn.functional.mse_loss(out["x_hat"], target)
    return {"loss": lmbda * 255**2 * mse + bpp, "bpp_loss": bpp, "mse_loss": mse}


def train(frames: Sequence[np.ndarray] | np.ndarray, *, arch: str, sizes: dict[str, int], metric: str = "mse",
          lmbda: float = 0.01, steps: int = 200, patch: int = 64, batch: int = 4, lr: float = 1e-4,
          mapping: str = "study", seed: int = 0, model=None,
          progress: Callable[[int, float, float], None] | None = None):
    """Train (or fine-tune) a model in one phase; returns it ready to code (see :class:`Trainer`).

    ``progress(step, loss, bpp)`` is called after each step (step counted from 0).
    """
    t = Trainer(frames, arch=arch, sizes=sizes, phases=[Phase(metric, steps, lmbda)], patch=patch, batch=batch,
                lr=lr, mapping=mapping, seed=seed, model=model)
    return t.run(progress=None if progress is None else (lambda s, m, loss, bpp: progress(s - 1, loss, bpp)))
