"""One calibration run end to end: sweep → fit → noise model → report, in one folder that
appears only when everything in it is complete."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .fit import FitOptions, FitResult, fit_sweep
from .instruments._protocol import Instrument
from .model import MODEL_SUFFIX, NoiseModel
from .sweep import SweepPlan, SweepProgress, SweepStats, load_sweep, run_sweep

__all__ = ["CalibrationRun", "calibrate", "refit"]

SWEEP_NAME = "sweep.rgsweep"
MODEL_NAME = "noise_model" + MODEL_SUFFIX


@dataclass(frozen=True)
class CalibrationRun:
    """Where a finished calibration lives and what it found."""

    folder: Path
    sweep_path: Path
    model_path: Path
    report_path: Path
    model: NoiseModel
    fit: FitResult


def _run_folder(out_dir: Path, serial: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in serial) or "camera"
    folder = out_dir / f"{safe}_{stamp}"
    i = 1
    while folder.exists():
        i += 1
        folder = out_dir / f"{safe}_{stamp}_{i}"
    return folder


def _finish(
    sweep: SweepStats,
    fit: FitResult,
    work: Path,
    final: Path,
    source: str,
    extra: dict | None,
    stage: Callable[[str], None],
) -> CalibrationRun:
    from .report import write_calibration_report

    model = NoiseModel.from_fit(fit, sweep.identity, source=source)
    model.save(work / MODEL_NAME)
    stage("writing report")
    report = write_calibration_report(fit, sweep.identity, work / "report", extra=extra)
    work.rename(final)
    return CalibrationRun(
        folder=final,
        sweep_path=final / SWEEP_NAME,
        model_path=final / MODEL_NAME,
        report_path=final / report.relative_to(work),
        model=NoiseModel.load(final / MODEL_NAME),
        fit=fit,
    )


def calibrate(
    inst: Instrument,
    plan: SweepPlan,
    out_dir: str | Path,
    *,
    fit_options: FitOptions | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
    extra: Callable[[FitResult], dict] | None = None,
) -> CalibrationRun:
    """Sweep ``inst``, fit, and write ``<out_dir>/<serial>_<UTC time>/`` holding
    ``sweep.rgsweep``, ``noise_model.rgnoise`` and ``report/``.

    The folder is assembled under a ``.partial`` name and renamed only when complete: a camera
    failure, a fit refusal or Ctrl-C removes it and re-raises.
    """
    out_dir = Path(out_dir)
    ident = inst.identity()
    final = _run_folder(out_dir, ident.serial)
    work = final.with_name("." + final.name + ".partial")
    work.mkdir(parents=True)
    def stage(name: str) -> None:
        if progress:
            progress(SweepProgress(plan.n_frames, plan.n_frames, name))

    try:
        sweep = run_sweep(inst, plan, work / SWEEP_NAME, progress=progress)
        stage("fitting")
        fit = fit_sweep(sweep, fit_options)
        extras = extra(fit) if extra else None
        return _finish(sweep, fit, work, final, f"sweep {final.name}", extras, stage)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def refit(
    sweep_path: str | Path, out_dir: str | Path, *, fit_options: FitOptions | None = None
) -> CalibrationRun:
    """Re-run the fit on a saved sweep (e.g. with other options), or fit an EMVA 1288
    descriptor dataset (``v 4.0`` … ``i image``), into a new run folder."""
    sweep_path = Path(sweep_path)
    is_sweep = zipfile.is_zipfile(sweep_path)
    if is_sweep:
        sweep = load_sweep(sweep_path)
    else:
        from .emva_dataset import sweep_from_emva_descriptor

        sweep = sweep_from_emva_descriptor(sweep_path)
    fit = fit_sweep(sweep, fit_options)
    final = _run_folder(Path(out_dir), sweep.identity.serial)
    work = final.with_name("." + final.name + ".partial")
    work.mkdir(parents=True)
    try:
        if is_sweep:
            shutil.copyfile(sweep_path, work / SWEEP_NAME)
        else:
            sweep.save(work / SWEEP_NAME)
        return _finish(
            sweep, fit, work, final, f"refit of {Path(sweep_path).name}", None, lambda _: None
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
