"""``rawgate run``, ``rawgate status``, ``rawgate retry``, ``rawgate quarantine list`` and
``rawgate archive verify``."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._cli_common import EXIT_BAD_INPUT, EXIT_FAILED_CHECK, _fail, _user_errors, console
from .config import RawgateConfig, load_config
from .names import from_db_path, shown

quarantine_app = typer.Typer(help="Items the daemon set aside, with the reason.", no_args_is_help=True)
archive_app = typer.Typer(help="Check the archive: checksums, manifest, ledger, decoding.", no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]


def _ledger(cfg: RawgateConfig, must_exist: bool = True):
    from .ledger import Ledger
    from .pipeline import LEDGER_NAME

    path = cfg.daemon.state_dir / LEDGER_NAME
    if must_exist and not path.exists():
        _fail(f"no ledger at {path}: `rawgate run` has not run with this configuration yet")
    return Ledger(path)


def run(
    config: ConfigOpt,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the daemon in the foreground (systemd Type=notify; stop with SIGTERM or Ctrl-C)."""
    from .service import Service, ServiceError

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _user_errors():
        cfg = load_config(config)
        stop = threading.Event()

        def _stop(signum, _frame) -> None:
            logging.getLogger("rawgate.service").info("signal %d: stopping", signum)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            Service(cfg).run(stop)
        except ServiceError as e:
            _fail(str(e))


def status(
    config: ConfigOpt,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    recent: Annotated[int, typer.Option(help="list this many most recent items")] = 10,
) -> None:
    """Items by state, whether the daemon runs, and the most recent items."""
    from .ledger import ItemState
    from .service import STATUS_NAME, lock_held

    with _user_errors():
        cfg = load_config(config)
        with _ledger(cfg) as ledger:
            counts = {s.value: n for s, n in ledger.counts().items()}
            items = ledger._db.execute(  # noqa: SLF001 - read-only listing
                "SELECT * FROM items ORDER BY updated_at DESC LIMIT ?", (recent,)).fetchall()
            # paths as printable text (a name that is not UTF-8 shows its bytes as \xNN)
            rows = [{k: shown(from_db_path(v)) for k, v in dict(r).items()} for r in items]
            raw = sum(r.raw_bytes or 0 for r in ledger.items(ItemState.ARCHIVED, ItemState.RAW_RELEASED))
            arch = sum(r.archive_bytes or 0 for r in ledger.items(ItemState.ARCHIVED, ItemState.RAW_RELEASED))
            rates = [{"watch": s.key.watch, "rule": s.key.rule, "camera": s.key.camera, "auto": s.key.auto_spec,
                      "value": s.value, "source": s.source, "changes": len(s.history) - 1, "updated_at": s.updated_at}
                     for s in ledger.rate_settings()]
        pid = lock_held(cfg.daemon.state_dir)
        st_path = cfg.daemon.state_dir / STATUS_NAME
        daemon = json.loads(st_path.read_text()) if st_path.exists() else {}
    ratio = raw / arch if arch else None
    if json_out:
        console.print_json(json.dumps({"running": pid is not None, "pid": pid, "counts": counts,
                                       "raw_bytes": raw, "archived_bytes": arch, "compression_ratio": ratio,
                                       "daemon": daemon, "rates": rates, "recent": rows}, default=str))
        return
    console.print(f"daemon: {'[green]running[/] (pid ' + str(pid) + ')' if pid else '[yellow]not running[/]'}"
                  + (f" — {daemon.get('status')}" if pid and daemon.get("status") else ""))
    if pid and daemon.get("manifest_error"):
        console.print(f"[bold red]archive manifest cannot be written[/] ({daemon['manifest_error']}): "
                      "raw data releases are held until it can", highlight=False)
    t = Table(title="items by state")
    t.add_column("state")
    t.add_column("items", justify="right")
    for k, v in counts.items():
        t.add_row(k, str(v), style="red" if k == "quarantined" and v else None)
    console.print(t)
    if ratio:
        console.print(f"archived {raw / 1e6:.1f} MB of raw data in {arch / 1e6:.1f} MB (ratio {ratio:.2f})")
    if rates:
        rt = Table(title="ε-budgeted rates (auto codec specs)")
        for col in ("watch rule", "camera", "spec", "codes with", "stepped back", "from"):
            rt.add_column(col, overflow="fold")
        for s in rates:
            opt = s["auto"].split(":")[1].split("=")[0] if ":" in s["auto"] else "?"
            now = "lossless" if s["value"] is None else f"{opt}={s['value']:g}"
            rt.add_row(f"{s['watch']}:{s['rule']}", s["camera"], s["auto"], now, f"{s['changes']}×",
                       s["source"].split(":")[0], style="red" if s["value"] is None else None)
        console.print(rt)
    if rows:
        # four narrow columns (readable at 80 columns); the archive path and why on lines below
        r = Table(title=f"{len(rows)} most recent")
        r.add_column("id", justify="right")
        r.add_column("item", overflow="fold")
        r.add_column("state", no_wrap=True)
        r.add_column("codec", overflow="fold")
        for row in rows:
            state = row["state"] + (f" ({row['verdict']})" if row["verdict"] else "")
            version = f" (v{row['generation']})" if (row.get("generation") or 1) > 1 else ""
            r.add_row(str(row["id"]), Text(row["relpath"] + version), state, row["codec"] or "")
        console.print(r)
        for row in rows:
            why = row["reason"] or row["note"]
            if why or row["archive_path"]:
                console.print(Text(f"{row['id']}: " + "; ".join(
                    x for x in (row["archive_path"] and f"archive/{row['archive_path']}", why) if x)),
                    highlight=False, soft_wrap=True)


def retry(
    item: Annotated[str, typer.Argument(help="item id, or its path (relative to its watched folder, or absolute)")],
    config: ConfigOpt,
) -> None:
    """Send a quarantined item back to the start; a running daemon picks it up within seconds."""
    from .ledger import ItemState, StaleTransitionError

    with _user_errors():
        cfg = load_config(config)
        with _ledger(cfg) as ledger:
            found = _find(ledger, cfg, item)
            if found.state is not ItemState.QUARANTINED:
                _fail(f"item {found.id} ({shown(found.relpath)}) is {found.state}, not quarantined")
            try:
                ledger.retry(found.id)
            except StaleTransitionError as e:
                _fail(str(e))
    console.print(Text(f"item {found.id} ({shown(found.relpath)}) will be processed again"))


def _find(ledger, cfg: RawgateConfig, key: str):
    if key.isdigit():
        try:
            return ledger.get(int(key))
        except KeyError:
            _fail(f"no item {key} in the ledger", EXIT_BAD_INPUT)
    p = Path(key)
    for w in cfg.daemon.watch:
        root = w.path.resolve()
        rel = None
        if p.is_absolute():
            try:
                rel = p.resolve().relative_to(root).as_posix() if p.exists() else p.relative_to(root).as_posix()
            except ValueError:
                continue
        else:
            rel = p.as_posix()
        hit = ledger.find(str(root), rel)
        if hit is not None:
            return hit
    _fail(f"no item {key!r} in the ledger")


def quarantine_list(
    config: ConfigOpt,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every quarantined item with its reason."""
    from .ledger import ItemState

    with _user_errors():
        cfg = load_config(config)
        with _ledger(cfg) as ledger:
            items = ledger.items(ItemState.QUARANTINED)
    if json_out:
        console.print_json(json.dumps([{"id": i.id, "root": shown(i.root), "relpath": shown(i.relpath),
                                        "reason": i.reason,
                                        "attempts": i.attempts, "since": i.updated_at} for i in items]))
        return
    if not items:
        console.print("[green]nothing quarantined[/]")
        return
    t = Table(title=f"{len(items)} quarantined item(s) — `rawgate retry ID` after fixing the cause")
    for col in ("id", "folder", "item", "since", "reason"):
        t.add_column(col)
    for i in items:
        t.add_row(str(i.id), Text(shown(i.root)), Text(shown(i.relpath)),
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(i.updated_at)), Text(i.reason or ""))
    console.print(t)


def archive_verify(
    archive_dir: Annotated[Path | None, typer.Argument(help="archive folder (or give -c CONFIG)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config: its archive, ledger and "
                                                "alerts")] = None,
    full: Annotated[bool, typer.Option("--full", help="decode every lossy copy, not a seeded sample")] = False,
    seed: Annotated[int, typer.Option(help="seed of the decoded sample")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every archived file against the manifest (and the ledger with -c), and a decode of a
    seeded sample of the lossy copies (all with --full). Lists every problem, one per line, and
    a one-line summary; exit 1 when anything is off (with -c, problems also go to the alerts)."""
    from .ledger import ItemState
    from .verify import verify_archive

    with _user_errors():
        if (archive_dir is None) == (config is None):
            _fail("give the archive folder or -c CONFIG (one of them)", EXIT_BAD_INPUT)
        cfg = load_config(config) if config is not None else None
        recorded = None
        if cfg is not None:
            archive_dir = cfg.daemon.archive_dir
            with _ledger(cfg) as ledger:
                recorded = {it.archive_path: it.sha256_archive
                            for it in ledger.items(ItemState.ARCHIVED, ItemState.RAW_RELEASED)
                            if it.archive_path and it.sha256_archive}
                recorded.update({rel: sha for rel, (sha, _n) in ledger.model_files().items()})
        assert archive_dir is not None
        rep = verify_archive(archive_dir, full=full, seed=seed, recorded=recorded)
        if cfg is not None and not rep.ok:
            from .alerts import Alert, build_alerter

            alerter = build_alerter(cfg.daemon.alerts)
            alerter.alert(Alert(key=f"archive-verify:{archive_dir}", severity="critical",
                                title="archive verification failed", text=rep.summary() + "\n" + "\n".join(rep.problems[:50])))
            alerter.flush(30.0)
            alerter.close()
    if as_json:
        print(json.dumps(rep.to_dict(), indent=1))
    else:
        for p in rep.problems:
            print(p)
        print(rep.summary())
    if not rep.ok:
        raise typer.Exit(EXIT_FAILED_CHECK)


def register(app: typer.Typer) -> None:
    """Add the daemon's commands to the ``rawgate`` app."""
    app.command()(run)
    app.command()(status)
    app.command()(retry)
    quarantine_app.command("list")(quarantine_list)
    app.add_typer(quarantine_app, name="quarantine")
    archive_app.command("verify")(archive_verify)
    app.add_typer(archive_app, name="archive")

