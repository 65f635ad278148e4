"""``rawgate learned train``: train or fine-tune a learned codec on the lab's own frames.

An MSE phase then (optionally) an MS-SSIM phase, as Zhou et al. (Table S3); checkpoints every
``--every`` steps and on Ctrl-C (exit 130), resumed with ``--resume``; the final checkpoint is
what ``learned:weights=FILE`` codes with. torch is imported only when the command runs.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from ._cli_common import _fail, _user_errors, console

learned_app = typer.Typer(help="Learned codecs (CompressAI): train on your own frames.", no_args_is_help=True)

EXIT_INTERRUPTED = 130


def _sizes(text: str) -> dict[str, int]:
    try:
        out = {k.strip(): int(v) for k, v in (p.split("=", 1) for p in text.split(",") if p.strip())}
    except ValueError:
        raise typer.BadParameter(f"--sizes: N=…,M=… expected, got {text!r}") from None
    return out


@learned_app.command("train")
def learned_train(
    frames: Annotated[list[Path], typer.Argument(help="training frames: TIFF / OME-TIFF / .npy (stacks: every plane; "
                                                 "factorized3d: each file's Z stack)")],
    out: Annotated[Path, typer.Option(help="checkpoint to write (and to resume from with --resume)")],
    arch: Annotated[str, typer.Option(help="architecture (factorized3d: the 3-D model, trained on Z stacks)")] = "bmshj2018-factorized",
    sizes: Annotated[str, typer.Option(help="constructor sizes, e.g. N=128,M=192 (cheng2020: N only)")] = "N=128,M=192",
    quality: Annotated[int, typer.Option(help="the quality label stored with the weights")] = 1,
    steps: Annotated[int, typer.Option(help="steps of the MSE phase")] = 2000,
    msssim_steps: Annotated[int, typer.Option(help="steps of the MS-SSIM phase after it (0: none)")] = 0,
    lmbda: Annotated[float, typer.Option(help="rate–distortion λ of the MSE phase")] = 0.01,
    msssim_lmbda: Annotated[float, typer.Option(help="λ of the MS-SSIM phase")] = 8.73,
    patch: Annotated[int, typer.Option(help="training crop \\[px], a multiple of 64")] = 256,
    patch_z: Annotated[int, typer.Option(help="factorized3d: training crop depth \\[planes], a multiple of 4")] = 8,
    batch: Annotated[int, typer.Option(help="crops per step")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-4,
    mapping: Annotated[str, typer.Option(help="study (x/65535) or range (each frame's min–max)")] = "study",
    every: Annotated[int, typer.Option(help="write a checkpoint every this many steps")] = 100,
    seed: Annotated[int, typer.Option(help="seed of the crops and initial weights")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run saved in --out")] = False,
    weights: Annotated[Optional[Path], typer.Option(help="fine-tune these weights instead of starting fresh")] = None,
) -> None:
    """Train (or fine-tune) a learned codec; Ctrl-C saves a checkpoint that --resume continues."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .cli_codecs import read_image

    with _user_errors():
        from rawgate.codecs.learned import load_checkpoint
        from rawgate.codecs.learned_train import Phase, Trainer

        from rawgate.codecs.learned3d import ARCH_3D

        planes = []
        for p in frames:
            arr = np.asarray(read_image(p)[0])
            if arch == ARCH_3D:
                if arr.ndim < 3:
                    _fail(f"{p}: {ARCH_3D} trains on Z stacks; this is a single {arr.shape} frame")
                planes += list(arr.reshape(-1, *arr.shape[-3:]))  # a T × Z stack: one volume per T
            else:
                planes.append(arr.reshape(-1, *arr.shape[-2:]))
        shapes = {a.shape[-2:] for a in planes}
        if len(shapes) != 1:
            _fail(f"training frames differ in size: {sorted(shapes)}")
        data = planes if arch == ARCH_3D else np.concatenate(planes)
        if resume:
            if not out.is_file():
                _fail(f"--resume: no checkpoint at {out}")
            t = Trainer.resume(out, data)
            console.print(f"resuming {out} at step {t.step} of {t.total_steps}", highlight=False)
        else:
            model = load_checkpoint(weights)[0] if weights is not None else None
            phases = [Phase("mse", steps, lmbda)] + ([Phase("ms-ssim", msssim_steps, msssim_lmbda)] if msssim_steps else [])
            t = Trainer(data, arch=arch, sizes=_sizes(sizes), phases=phases, patch=patch, batch=batch, lr=lr,
                        mapping=mapping, seed=seed, model=model, patch_z=patch_z)
        interrupted = []

        def on_sigint(signum, frame):  # finish the current step, then save and stop
            interrupted.append(signum)

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]:.4f}  bpp {task.fields[bpp]:.3f}"),
                          TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task(f"training {t.arch}", total=t.total_steps, completed=t.step, loss=0.0, bpp=0.0)

                def progress(step, metric, loss, bpp):
                    bar.update(task, completed=step, loss=loss, bpp=bpp, description=f"training {t.arch} ({metric})")
                    if interrupted:
                        raise KeyboardInterrupt

                try:
                    t.run(progress=progress, checkpoint=lambda tr: tr.save(out, quality=quality), every=every)
                except KeyboardInterrupt:
                    t.save(out, quality=quality)
                    console.print(f"interrupted at step {t.step}: saved {out}; continue with --resume", highlight=False)
                    raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            signal.signal(signal.SIGINT, old)
        t.save(out, quality=quality)
    last = t.history[-1] if t.history else None
    console.print(f"trained {t.arch} {t.sizes} for {t.step} steps"
                  + (f" (last loss {last[2]:.4f}, {last[3]:.3f} bpp)" if last else "")
                  + f": {out} — use it as learned:arch={t.arch},weights={out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(learned_app, name="learned")
