"""Sustained MB/s through the whole daemon pipeline vs the bare codec, and complete → archived latency.

A real ``rawgate run`` (``tests/daemon_harness.py``'s :class:`Tree`: real watcher, ledger,
worker processes, archive) is fed ``--items`` multi-page TIFFs of ``--planes`` simulated camera
frames (``--size``² uint16, a dense-cells scene through the simulated sensor). The same frames
go through the bare codec in this process first (encode, and encode + decode: the least a
verified pipeline must do), so both figures come from one run on one machine.

Every item is rendered once into ``incoming/`` beside the watched ``acq/`` (same filesystem),
then ``os.replace``-d into ``acq/`` and followed by a ``{name}.done`` sentinel: the item is
complete at once by handshake, so neither a quiet period nor the format check adds latency
(a quiet period, however short, would be a fixed delay in the latency figure that depends on
the configuration, not on the pipeline). Two single-plane warm-up items go first and are left
out of the figures (worker start-up, imports, numba caches).

Times come from the ledger (``complete_at``, ``archived_at`` and the ``events`` table); a
worker's start on an item is reconstructed from the FIFO hand-out to ``--workers`` processes
and the service's "item N …" log lines (when the worker returned). MB = 10⁶ bytes. Usage::

    python bench/daemon.py [--items 6] [--planes 16] [--size 2048] [--workers 2] [--no-gate]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from daemon_harness import Tree, wait_until  # noqa: E402

from rawgate.calibration import scenes  # noqa: E402
from rawgate.calibration.simulation import render_frames  # noqa: E402
from rawgate.daemon.archive import sha256_file, verify_copy, write_copy  # noqa: E402
from rawgate.codecs import get_codec  # noqa: E402
from rawgate.codecs.lossless import n_workers  # noqa: E402
from rawgate.daemon.ledger import Ledger  # noqa: E402
from rawgate.daemon.sources import ItemRef, open_stack  # noqa: E402

MB = 1e6
STEPS = ("encoded", "verified", "checked", "approved", "archived", "raw_released")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ rawgate\.service: item (\d+) ")


class Out:
    """Print and keep a copy of every line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))


def _best(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, short command) of the direct children of ``pid`` (from /proc/*/stat)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid != pid:
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        what = ("resource tracker" if "resource_tracker" in cmd else
                "worker" if "spawn_main" in cmd or "multiprocessing" in cmd else cmd[:40])
        out.append((int(d.name), what))
    return sorted(out)


def _service_log_times(log: Path) -> dict[int, float]:
    """Unix time of the service's last "item N …: outcome" line per item (when its job returned)."""
    out: dict[int, float] = {}
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
            out[int(m.group(3))] = t
    return out


def _render_items(tree: Tree, incoming: Path, names: list[str], planes: int, size: int, scene: str,
                  seed: int) -> None:
    if scene == "dense-cells":
        sc = scenes.dense_cells((size, size), seed=0)
        flux, exposure = sc.flux, sc.exposure_ms
    else:
        flux, exposure = 30.0, 20.0
    rng = np.random.default_rng(seed)
    for name in names:
        n = 1 if name.startswith("warm") else planes
        data = render_frames(tree.truth, flux, exposure, n, rng)
        tifffile.imwrite(incoming / name, data[0] if n == 1 else data, photometric="minisblack")


def _bare(out: Out, path: Path, spec: str, model) -> dict[str, float]:
    """Bare codec, tifffile read and SHA-256 on the frames of one item (best of 2 each)."""
    frames = tifffile.imread(path)
    frames = frames.reshape((-1,) + frames.shape[-2:])
    raw = frames.nbytes
    codec = get_codec(spec)
    if any(f.name == "embed_model" for f in dataclasses.fields(codec)):
        # as the OME-TIFF container builds it: the model stored once per file, not in every stream
        codec = get_codec(spec, noise_model=model, embed_model=False)
    codec.decode(codec.encode(frames[0]))  # first call: numba caches, imports
    r: dict[str, float] = {}
    streams: list[bytes] = []

    def enc_seq() -> None:
        streams[:] = [codec.encode(p) for p in frames]

    def enc_thr() -> None:
        with ThreadPoolExecutor(n_workers()) as pool:
            streams[:] = list(pool.map(codec.encode, frames))

    def roundtrip() -> None:
        for p in frames:
            codec.decode(codec.encode(p))

    def roundtrip_thr() -> None:
        with ThreadPoolExecutor(n_workers()) as pool:
            list(pool.map(lambda p: codec.decode(codec.encode(p)), frames))

    r["read"] = raw / _best(lambda: tifffile.imread(path)) / MB
    r["sha"] = path.stat().st_size / _best(lambda: sha256_file(path)) / MB
    r["enc_seq"] = raw / _best(enc_seq) / MB
    r["enc_thr"] = raw / _best(enc_thr) / MB
    r["ratio"] = raw / sum(len(s) for s in streams)
    r["dec_seq"] = raw / _best(lambda: [codec.decode(s) for s in streams]) / MB
    r["rt_seq"] = raw / _best(roundtrip) / MB
    r["rt_thr"] = raw / _best(roundtrip_thr) / MB
    r["enc"] = max(r["enc_seq"], r["enc_thr"])
    # one ε spot check as the daemon's default gate does it (first plane, 1 tile of 512², N = 10)
    from rawgate.gate.check import GateConfig, spot_check
    from rawgate.gate.verdict import VerdictPolicy

    dec0 = codec.decode(codec.encode(frames[0]))
    gcfg = GateConfig(n_replicas=10, seed=0, tiles=1, tile_size=512, policy=VerdictPolicy(false_reject_rate=0.002))
    t0 = time.perf_counter()
    spot_check(frames[0], dec0, model, None, gcfg)
    r["check_first"] = time.perf_counter() - t0
    r["check"] = _best(lambda: spot_check(frames[0], dec0, model, None, gcfg))
    r["rt"] = max(r["rt_seq"], r["rt_thr"])
    # the daemon's own encode and verify steps, in this process (container, fsync, read-back)
    dest = path.parent.parent / "bare-copy" / "copy.ome.tif"
    with open_stack(path.parent, ItemRef(path.name, "tiff")) as stack:
        t0 = time.perf_counter()
        copy = write_copy(stack, dest, spec, noise_model=model)
        r["write_copy"] = raw / (time.perf_counter() - t0) / MB
        t0 = time.perf_counter()
        res = verify_copy(dest, stack, lossless=False)
        r["verify_copy"] = raw / (time.perf_counter() - t0) / MB
    r["copy_ratio"] = raw / copy.nbytes
    if not res.ok:
        out(f"  (in-process verify_copy failed: {res.reason})")
    shutil.rmtree(dest.parent, ignore_errors=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=6, help="timed datasets fed to the daemon")
    ap.add_argument("--planes", type=int, default=16, help="planes per dataset")
    ap.add_argument("--size", type=int, default=2048, help="frame edge [px]")
    ap.add_argument("--workers", type=int, default=2, help="daemon worker processes")
    ap.add_argument("--codec", default="noisecal:step=2")
    ap.add_argument("--gate", action=argparse.BooleanOptionalAction, default=True, help="the ε spot check")
    ap.add_argument("--scene", default="dense-cells", choices=["dense-cells", "flat"])
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between arrivals (0: all at once)")
    ap.add_argument("--warmup", type=int, default=2, help="single-plane items processed before the timed ones")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up after this long [s]")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree")
    ap.add_argument("--out", default=str(HERE / "results" / "daemon.txt"),
                    help="copy of the printed text ('' for none)")
    args = ap.parse_args()
    out = Out()
    size, n_items, n_planes = args.size, args.items, args.planes
    item_mb = n_planes * size * size * 2 / MB
    out(f"# rawgate daemon pipeline vs bare codec: {n_items} items × {n_planes} planes of {size}² uint16 "
        f"({item_mb:.0f} MB each, {n_items * item_mb:.0f} MB in all), {args.scene} scene, codec {args.codec}, "
        f"{args.workers} worker process(es), gate {'on' if args.gate else 'off'}")
    out(f"# {os.cpu_count()} cores, load average {_load()} at start (1 / 5 / 15 min); MB = 10⁶ bytes")

    tmp = Path(tempfile.mkdtemp(prefix="rawgate-bench-daemon-"))
    acq = tmp / "acq"
    incoming = tmp / "incoming"
    incoming.mkdir()
    gate = {"enabled": args.gate, "first_frame": True, "tiles": 1, "tile_size": 512, "replicas": 10}
    daemon = {
        "watch": [{"path": str(acq), "name": "scope",
                   "completeness": {"sentinel": "{name}.done", "quiet_period_s": 30.0, "format_quiet_s": 2.0}}],
        "gate": gate,
        "retention": {"keep_days": 0, "action": "delete"},
        "workers": {"processes": args.workers, "queue_size": 4},
    }
    tree = Tree(tmp, shape=(size, size), seed=3, daemon=daemon, compression={"codec": args.codec})
    warm = [f"warm{k}.tif" for k in range(args.warmup)]
    names = [f"item{i:02d}.tif" for i in range(n_items)]
    try:
        t0 = time.perf_counter()
        _render_items(tree, incoming, warm + names, n_planes, size, args.scene, seed=5)
        out(f"# rendered the items in {time.perf_counter() - t0:.0f} s into {incoming}")

        # ---------------------------------------------------------------- bare codec
        b = _bare(out, incoming / names[0], args.codec, tree.model)
        out("")
        out("## bare, this process, the frames of one item (best of 2; noisecal built as the container builds it, embed_model=false)")
        out("| what | MB/s |")
        out("|---|---:|")
        out(f"| tifffile read of the raw TIFF | {b['read']:.0f} |")
        out(f"| SHA-256 of the raw file (the daemon's sha256_file) | {b['sha']:.0f} |")
        out(f"| encode, plane after plane | {b['enc_seq']:.1f} |")
        out(f"| encode, {n_workers()} planes at once (threads, as the container) | {b['enc_thr']:.1f} |")
        out(f"| decode, plane after plane | {b['dec_seq']:.1f} |")
        out(f"| encode + decode, plane after plane | {b['rt_seq']:.1f} |")
        out(f"| encode + decode, {n_workers()} planes at once | {b['rt_thr']:.1f} |")
        out(f"| the daemon's write_copy (read, encode, OME-TIFF, fsync, read-back hash) | {b['write_copy']:.1f} |")
        out(f"| the daemon's verify_copy (re-read, decode, compare) | {b['verify_copy']:.1f} |")
        out(f"bare ε spot check of plane 0 (1 tile of 512², N = 10, model-free): {b['check']:.2f} s "
            f"(first call in this process {b['check_first']:.2f} s)")
        out(f"bare compression ratio {b['ratio']:.2f} (streams), {b['copy_ratio']:.2f} (OME-TIFF copy)")

        # ---------------------------------------------------------------- the daemon
        tree.start()
        tree.wait_ready(120)
        pid = tree.proc.pid
        ledger = Ledger(tree.state / "ledger.sqlite")
        root = str(acq.resolve())

        def feed(name: str) -> float:
            os.replace(incoming / name, acq / name)
            (acq / f"{name}.done").write_bytes(b"")
            return time.time()

        def states(which: list[str]) -> dict[str, str]:
            res = {}
            for n in which:
                it = ledger.find(root, n)
                res[n] = "" if it is None else it.state.value
            return res

        def finished(which: list[str]) -> bool:
            for n in which:
                it = ledger.find(root, n)
                if it is None:
                    return False
                done = (it.state.value in ("raw_released", "quarantined")
                        or (it.state.value == "archived" and it.verdict != "approved"))
                if not done:
                    return False
            return True

        if warm:
            t0 = time.time()
            for n in warm:
                feed(n)
            wait_until(lambda: finished(warm), args.timeout, "the warm-up items")
            wi = [ledger.find(root, n) for n in warm]
            out(f"# warm-up: {len(warm)} single-plane item(s) done in {time.time() - t0:.1f} s "
                f"(states {sorted({i.state.value for i in wi})}); left out of the figures")
        arrivals: dict[str, float] = {}
        for k, n in enumerate(names):
            if k and args.interval > 0:
                time.sleep(args.interval)
            arrivals[n] = feed(n)
        try:
            wait_until(lambda: finished(names), args.timeout, "the timed items", poll_s=0.5)
        except AssertionError:
            out(f"TIMED OUT after {args.timeout:.0f} s: states {states(names)}")
            raise
        time.sleep(0.5)  # the service logs the outcome once the job returned
        rss = {"daemon (main)": _vm_hwm_mb(pid)}
        for cpid, what in _children(pid):
            rss[f"{what} {cpid}"] = _vm_hwm_mb(cpid)
        load_end = _load()
        rc = tree.stop()
        job_end = _service_log_times(tree.log)

        # ---------------------------------------------------------------- figures
        items = [ledger.find(root, n) for n in names]
        hist = {it.id: ledger.history(it.id) for it in items}
        ledger.close()
        order = sorted(items, key=lambda it: (it.complete_at or 0.0, it.id))  # the hand-out order
        free = [0.0] * args.workers
        rows = []
        for it in order:
            ev: dict[str, float] = {}
            for _a, to, at in hist[it.id]:
                ev.setdefault(to, at)
            last_event = max(at for _a, _b, at in hist[it.id])
            start = max(it.complete_at, heapq.heappop(free))
            end = max(job_end.get(it.id, last_event), last_event)
            heapq.heappush(free, end)
            rows.append((it, ev, start, end))
        raw_total = sum(it.raw_bytes or 0 for it in items)
        arch_total = sum(it.archive_bytes or 0 for it in items)
        first_complete = min(it.complete_at for it in items)
        last_archived = max(it.archived_at for it in items)
        last_end = max(r[3] for r in rows)
        pipe = raw_total / (last_archived - first_complete) / MB
        pipe_end = raw_total / (last_end - first_complete) / MB
        lat = [it.archived_at - it.complete_at for it in items]
        lat_proc = [it.archived_at - s for it, _ev, s, _e in rows]
        handshake = [it.complete_at - arrivals[it.relpath] for it in items]

        def step(ev: dict[str, float], a: str | float, bname: str) -> float | None:
            ta = a if isinstance(a, float) else ev.get(a)
            tb = ev.get(bname)
            return None if ta is None or tb is None else tb - ta

        cols = [("wait for a worker", lambda it, ev, s, e: s - it.complete_at),
                ("encode (complete → encoded)", lambda it, ev, s, e: step(ev, s, "encoded")),
                ("verify (→ verified)", lambda it, ev, s, e: step(ev, "encoded", "verified")),
                ("ε check (→ checked)", lambda it, ev, s, e: step(ev, "verified", "checked")),
                ("verdict (→ approved)", lambda it, ev, s, e: step(ev, "checked", "approved")),
                ("archive (→ archived)", lambda it, ev, s, e: step(ev, "approved", "archived")),
                ("release (→ raw_released, delete)", lambda it, ev, s, e: None if "raw_released" not in ev
                 else e - ev["archived"])]
        out("")
        out(f"## per item [s] (worker start reconstructed: FIFO over {args.workers} workers; "
            "release ends when the service logged the outcome)")
        out("| item | arrival → complete | " + " | ".join(c[0] for c in cols) + " | complete → archived | verdict |")
        out("|---|---:|" + "---:|" * len(cols) + "---:|---|")
        per_col: list[list[float]] = [[] for _ in cols]
        for it, ev, s, e in rows:
            vals = []
            for k, (_n, f) in enumerate(cols):
                v = f(it, ev, s, e)
                if v is not None:
                    per_col[k].append(v)
                vals.append("—" if v is None else f"{v:.1f}")
            out(f"| {it.relpath} | {it.complete_at - arrivals[it.relpath]:.2f} | " + " | ".join(vals)
                + f" | {it.archived_at - it.complete_at:.1f} | {it.verdict or it.state.value} |")
        out("")
        out("## summary")
        out("| figure | value |")
        out("|---|---:|")
        out(f"| bare encode MB/s (best of plane-after-plane / threaded) | {b['enc']:.1f} |")
        out(f"| bare encode + decode MB/s (best of the two) | {b['rt']:.1f} |")
        out(f"| pipeline MB/s = raw bytes / (last archived_at − first complete_at) | {pipe:.1f} |")
        out(f"| pipeline MB/s to the last worker's end (raw released) | {pipe_end:.1f} |")
        ov_enc = 1 - pipe / b["enc"]
        ov_rt = 1 - pipe / b["rt"]
        out(f"| overhead vs bare encode = 1 − pipeline / encode | {ov_enc:.0%} |")
        out(f"| overhead vs bare round trip = 1 − pipeline / (encode + decode) | {ov_rt:.0%} |")
        out(f"| latency complete → archived, median / max [s] | {_med(lat):.1f} / {max(lat):.1f} |")
        out(f"| latency worker start → archived (no queue wait), median / max [s] | "
            f"{_med(lat_proc):.1f} / {max(lat_proc):.1f} |")
        out(f"| arrival → complete (sentinel handshake), median / max [s] | {_med(handshake):.2f} / "
            f"{max(handshake):.2f} |")
        for (n, _f), vals in zip(cols, per_col):
            if vals:
                out(f"| median {n} [s] | {_med(vals):.2f} |")
        out(f"| compression ratio (ledger raw_bytes / archive_bytes) | {raw_total / arch_total:.2f} |")
        for what, mb in rss.items():
            out(f"| peak RSS (VmHWM) {what} [MB] | {'—' if mb is None else f'{mb:.0f}'} |")
        verdicts = sorted({(it.verdict or it.state.value) for it in items})
        out(f"verdicts: {verdicts}; daemon exit code {rc}")
        out(f"TARGET pipeline overhead ≤ 20 % vs bare codec: "
            f"(a) vs bare encode [1 − pipeline/encode] {ov_enc:.0%} {'PASS' if ov_enc <= 0.20 else 'MISSED'}; "
            f"(b) vs bare encode+decode round trip [1 − pipeline/(encode+decode)] {ov_rt:.0%} "
            f"{'PASS' if ov_rt <= 0.20 else 'MISSED'}")
        problems = [ln for ln in tree.log.read_text(errors="replace").splitlines()
                    if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", ln)]
        out(f"daemon log: {len(problems)} warning/error line(s)" + ("" if not problems else ":"))
        for ln in problems[:10]:
            out(f"  {ln[:300]}")
        out(f"# load average {load_end} at the end (1 / 5 / 15 min)")
    finally:
        if tree.proc is not None and tree.proc.poll() is None:
            tree.kill9()
        tree.webhook.close()
        if args.keep:
            out(f"# kept the tree: {tmp} (daemon log {tree.log})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.out:
            dest = Path(args.out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text("\n".join(out.lines) + "\n")


if __name__ == "__main__":
    main()
