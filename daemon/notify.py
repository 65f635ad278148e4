"""systemd's ``Type=notify`` protocol (``sd_notify(3)``) in the standard library.

The service manager passes the address of a datagram socket in ``$NOTIFY_SOCKET``; the daemon
sends ``KEY=VALUE`` lines to it (``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``).
An address starting with ``@`` lies in Linux's abstract socket namespace. Outside systemd the
variable is unset and every call here is a cheap no-op that returns ``False``.

Units: ``$WATCHDOG_USEC`` is in microseconds (µs); :attr:`Notifier.watchdog_interval_s` is in
seconds (s).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["notify", "Notifier"]

log = logging.getLogger("rawgate.notify")

#: Longest a notification may block when the manager's socket queue is full [s].
SEND_TIMEOUT_S = 1.0


def _address(value: str) -> str:
    """The ``AF_UNIX`` address for a ``$NOTIFY_SOCKET`` value (``@name`` → abstract ``\\0name``)."""
    return "\0" + value[1:] if value.startswith("@") else value


def notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` to the service manager as one datagram.

    Parameters
    ----------
    *lines
        ``KEY=VALUE`` assignments, e.g. ``"READY=1"``, ``"STATUS=watching /data"``; they are
        joined with newlines. A value must not itself contain a newline.
    environ
        Where ``NOTIFY_SOCKET`` is looked up; default :data:`os.environ`.

    Returns
    -------
    bool
        ``True`` when the datagram was sent; ``False`` when ``NOTIFY_SOCKET`` is unset or empty
        (not running under systemd), when no line is given, or when sending failed or took
        more than :data:`SEND_TIMEOUT_S` (the error is logged on the ``rawgate.notify``
        logger, never raised).
    """
    env = os.environ if environ is None else environ
    target = env.get("NOTIFY_SOCKET") or ""
    if not target:
        return False
    if not lines:
        return False
    payload = "\n".join(lines).encode("utf-8")
    if not target.startswith(("/", "@")):
        # e.g. systemd ≥ 254's "vsock:CID:PORT", which only matters inside VMs
        log.warning("NOTIFY_SOCKET=%r: only AF_UNIX addresses are supported", target)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)  # a stuck manager must not hang the daemon
            sock.connect(_address(target))
            sock.sendall(payload)
    except OSError as e:
        log.warning("cannot notify the service manager at %r: %s", target, e)
        return False
    return True


def _one_line(text: str) -> str:
    """A ``STATUS=`` value on one line (a newline would start a new assignment)."""
    return " ".join(text.splitlines())


class Notifier:
    """The daemon's handle on systemd, built from the environment once.

    Parameters
    ----------
    environ
        Environment to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` (µs) and ``WATCHDOG_PID`` from;
        default :data:`os.environ`. The relevant values are copied at construction, so later
        changes to the environment (or ``unsetenv`` for child processes) do not affect it.

    Notes
    -----
    Every method returns what :func:`notify` returns: ``True`` when the message was sent,
    ``False`` when not under systemd or on a send error (logged). None of them raises.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._env: dict[str, str] = {}
        if env.get("NOTIFY_SOCKET"):
            self._env["NOTIFY_SOCKET"] = env["NOTIFY_SOCKET"]
        self._watchdog_interval_s = self._parse_watchdog(env)

    @staticmethod
    def _parse_watchdog(env: Mapping[str, str]) -> float | None:
        usec = env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID")
        try:
            if pid and int(pid) != os.getpid():
                return None  # meant for another process (e.g. our parent)
            usec_i = int(usec)
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
            return None
        if usec_i <= 0:
            return None
        return usec_i / 2 / 1e6

    @property
    def enabled(self) -> bool:
        """Whether ``NOTIFY_SOCKET`` was set (the service runs under systemd as ``Type=notify``)."""
        return "NOTIFY_SOCKET" in self._env

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call :meth:`watchdog`, in seconds (s).

        Half of ``$WATCHDOG_USEC`` (given in µs) when it is set and ``$WATCHDOG_PID`` is unset or
        names this process; ``None`` when systemd expects no watchdog pings from us.
        """
        return self._watchdog_interval_s

    def send(self, *lines: str) -> bool:
        """Send raw ``KEY=VALUE`` lines (see :func:`notify`)."""
        return notify(*lines, environ=self._env)

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: ``READY=1``, with ``STATUS=status`` when given."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.send(*lines)

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by ``systemctl status`` (``STATUS=text``)."""
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``); due every :attr:`watchdog_interval_s` seconds."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown began (``STOPPING=1``)."""
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """Reload began (``RELOADING=1`` with ``MONOTONIC_USEC``, the monotonic clock in µs).

        ``Type=notify-reload`` needs both; send :meth:`ready` when the reload has finished.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")
