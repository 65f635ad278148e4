"""Prometheus metrics of the daemon, on an HTTP endpoint and as a node-exporter text file.

Each :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry` (never the
process-global one), so several can exist side by side (tests, a daemon plus a one-shot job).

Exposed series (units in the names, Prometheus conventions):

``rawgate_items{state}``                          items in each ledger state
``rawgate_raw_bytes_total``                       raw bytes read [B]
``rawgate_archived_bytes_total``                  bytes written to the archive [B]
``rawgate_compression_ratio``                     raw / archived bytes so far (NaN before any)
``rawgate_items_processed_total{outcome}``        items finished, by outcome
``rawgate_complete_to_archived_seconds``          histogram: acquisition complete → archived [s]
``rawgate_epsilon{family,statistic}``             last ε measured per codec family and statistic
``rawgate_queue_depth``                           items waiting for a worker
``rawgate_calibration_age_days{camera}``          age of the camera's noise model [days]
``rawgate_alerts_total{severity}``                alerts raised
``rawgate_component_up{component}``               1 while a component is alive, else 0 (observers,
                                                  workers, manifest: 0 while it cannot be written)
"""

from __future__ import annotations

import ipaddress
import math
import re
import os
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
    write_to_textfile,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["MetricsConfig", "Metrics", "write_textfile", "LATENCY_BUCKETS_S"]

#: Histogram buckets of ``rawgate_complete_to_archived_seconds`` [s]: 0.1 s … 1 h (+Inf).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)


class MetricsConfig(BaseModel):
    """The ``metrics:`` section: the Prometheus endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Serve the Prometheus endpoint")
    host: str = Field(
        "127.0.0.1",
        description=(
            "Address the endpoint binds to. The default serves this machine only; any other "
            "address (e.g. 0.0.0.0 or a LAN address) exposes the metrics, unauthenticated, "
            "to everyone who can reach it: put a firewall or reverse proxy in front"
        ),
    )
    port: int = Field(
        9464, ge=0, le=65535, description="TCP port, 1–65535; 0: any free port (tests)"
    )
    allow_remote: bool = Field(
        False, description="Allow a host that is not loopback (the endpoint has no authentication)"
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, v: str) -> str:
        v = v.strip()
        if v.lower() in ("localhost", "localhost.localdomain"):
            return v
        try:
            ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+", v):
                raise ValueError(f"{v!r} is neither an IP address nor a host name") from None
        return v

    @model_validator(mode="after")
    def _remote_needs_consent(self) -> "MetricsConfig":
        if not self.is_loopback and not self.allow_remote:
            raise ValueError(f"host {self.host!r} exposes the unauthenticated metrics beyond this machine: "
                             "use 127.0.0.1, or set allow_remote: true (and put a firewall in front)")
        return self

    @property
    def is_loopback(self) -> bool:
        """Whether :attr:`host` is a loopback address or ``localhost`` (not exposed)."""
        if self.host.lower() in ("localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


class Metrics:
    """The daemon's metrics, with its own registry.

    Parameters
    ----------
    config
        Endpoint settings used by :meth:`serve` when it is not given a host or port; default
        :class:`MetricsConfig()` (127.0.0.1:9464). Whether to serve at all
        (:attr:`MetricsConfig.enabled`) is the caller's decision: recording always works.

    Notes
    -----
    All methods are thread-safe (prometheus_client's metrics are, and the byte totals behind
    the compression ratio are updated under a lock).
    """

    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._items = Gauge("rawgate_items", "Items in each ledger state", ["state"], registry=r)
        self._raw_bytes = Counter(
            "rawgate_raw_bytes", "Raw bytes read from the acquisition folders [B]", registry=r
        )
        self._archived_bytes = Counter(
            "rawgate_archived_bytes", "Compressed bytes written to the archive [B]", registry=r
        )
        self._ratio = Gauge(
            "rawgate_compression_ratio",
            "Raw bytes / archived bytes since start (NaN before anything was archived)",
            registry=r,
        )
        self._ratio.set(math.nan)
        self._processed = Counter(
            "rawgate_items_processed", "Items finished, by outcome", ["outcome"], registry=r
        )
        self._latency = Histogram(
            "rawgate_complete_to_archived_seconds",
            "Time from acquisition complete to archived [s]",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._epsilon = Gauge(
            "rawgate_epsilon",
            "Last epsilon measured, by codec family and statistic",
            ["family", "statistic"],
            registry=r,
        )
        self._queue = Gauge("rawgate_queue_depth", "Items waiting for a worker", registry=r)
        self._backlog = Gauge("rawgate_backlog_items", "Complete items not yet archived (falling behind when "
                              "it keeps growing)", registry=r)
        self._cal_age = Gauge(
            "rawgate_calibration_age_days", "Age of the camera's noise model [days]", ["camera"],
            registry=r,
        )
        self._alerts = Counter("rawgate_alerts", "Alerts raised, by severity", ["severity"], registry=r)
        self._up = Gauge(
            "rawgate_component_up", "1 while the component is alive, 0 otherwise", ["component"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._raw_total = 0
        self._archived_total = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ recording
    def set_items_by_state(self, counts: Mapping[str, int]) -> None:
        """Set ``rawgate_items{state}`` for every state in ``counts`` (zeros included).

        States not in ``counts`` keep their last value; pass every state (as
        ``Ledger.counts()`` does) so a state that emptied reads 0.
        """
        for state, n in counts.items():
            self._items.labels(state=str(state)).set(n)

    def add_bytes(self, raw_bytes: int, archived_bytes: int) -> None:
        """Count one archived item's sizes and update ``rawgate_compression_ratio``.

        Parameters
        ----------
        raw_bytes
            Size of the raw data [B], ≥ 0.
        archived_bytes
            Size written to the archive [B], ≥ 0.

        Raises
        ------
        ValueError
            On a negative size (nothing is counted then).
        """
        if raw_bytes < 0 or archived_bytes < 0:
            raise ValueError(f"byte counts must be >= 0, got {raw_bytes}, {archived_bytes}")
        with self._lock:
            self._raw_bytes.inc(raw_bytes)
            self._archived_bytes.inc(archived_bytes)
            self._raw_total += raw_bytes
            self._archived_total += archived_bytes
            if self._archived_total > 0:
                self._ratio.set(self._raw_total / self._archived_total)

    def observe_item(self, outcome: str, latency_s: float | None) -> None:
        """Count a finished item and, when known, its complete → archived latency.

        Parameters
        ----------
        outcome
            ``approved``, ``rejected``, ``quarantined``, …
        latency_s
            Seconds [s] from "acquisition complete" to "archived"; ``None`` or NaN: not observed
            (e.g. a quarantined item). Negative values (clock steps) count as 0 s.
        """
        self._processed.labels(outcome=outcome).inc()
        if latency_s is not None and not math.isnan(latency_s):
            self._latency.observe(max(0.0, float(latency_s)))

    def set_epsilon(self, statistic: str, family: str, epsilon: float) -> None:
        """Set ``rawgate_epsilon{family,statistic}`` to the last ε measured (dimensionless).

        ±inf and NaN are kept as they are (Prometheus represents them).
        """
        self._epsilon.labels(family=family, statistic=statistic).set(float(epsilon))

    def set_queue_depth(self, n: int) -> None:
        """Set ``rawgate_queue_depth``: items waiting for a worker."""
        self._queue.set(n)

    def set_backlog(self, n: int) -> None:
        """Set ``rawgate_backlog_items``: complete items not yet archived."""
        self._backlog.set(n)

    def set_calibration_age(self, camera: str, age_days: float) -> None:
        """Set ``rawgate_calibration_age_days{camera}``: age of its noise model [days]."""
        self._cal_age.labels(camera=camera).set(age_days)

    def count_alert(self, severity: str) -> None:
        """Count one alert in ``rawgate_alerts_total{severity}`` (e.g. ``warning``, ``critical``)."""
        self._alerts.labels(severity=severity).inc()

    def set_up(self, component: str, alive: bool) -> None:
        """Set ``rawgate_component_up{component}`` to 1 (alive) or 0, e.g. ``observer:/data``."""
        self._up.labels(component=component).set(1 if alive else 0)

    # ------------------------------------------------------------------ exposing
    def render(self) -> bytes:
        """The registry in the Prometheus text format (what a scrape returns)."""
        return generate_latest(self.registry)

    def serve(self, host: str | None = None, port: int | None = None) -> int:
        """Start the HTTP endpoint (``/metrics``, any path) in a background daemon thread.

        Parameters
        ----------
        host
            Address to bind; default :attr:`MetricsConfig.host` (127.0.0.1).
        port
            TCP port; default :attr:`MetricsConfig.port`; 0 picks a free port.

        Returns
        -------
        int
            The port actually bound.

        Raises
        ------
        RuntimeError
            When this instance is already serving.
        OSError
            When the address cannot be bound (e.g. the port is in use).
        """
        if self._server is not None:
            raise RuntimeError(f"metrics endpoint already serving on {self.address}")
        host = self.config.host if host is None else host
        port = self.config.port if port is None else port
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_address[1])

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` the endpoint is bound to, or ``None`` when not serving."""
        if self._server is None:
            return None
        addr = self._server.server_address
        return str(addr[0]), int(addr[1])

    def close(self) -> None:
        """Stop the HTTP endpoint (idempotent; recording keeps working)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_textfile(metrics: Metrics, path: str | os.PathLike[str]) -> None:
    """Write ``metrics`` for node-exporter's textfile collector, atomically.

    The text goes to a temporary file beside ``path`` that is then renamed over it, so the
    collector never reads a half-written file. ``path`` should end in ``.prom``.
    """
    write_to_textfile(os.fspath(path), metrics.registry)
