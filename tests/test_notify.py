"""systemd notify protocol against real AF_UNIX datagram sockets (path and abstract)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from rawgate.daemon.notify import Notifier, notify

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")


def _recv(sock: socket.socket) -> bytes:
    sock.settimeout(2.0)
    return sock.recv(4096)


@pytest.fixture
def path_socket(tmp_path):
    """A datagram socket bound to a file; yields (socket, NOTIFY_SOCKET value)."""
    path = tmp_path / "notify.sock"
    tmpdir = None
    if len(os.fsencode(path)) > 100:  # sun_path holds 108 bytes
        tmpdir = tempfile.TemporaryDirectory(dir="/tmp")
        path = Path(tmpdir.name) / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        if tmpdir is not None:
            tmpdir.cleanup()


@pytest.fixture
def abstract_socket():
    name = f"@rawgate-test-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    try:
        yield sock, name
    finally:
        sock.close()


def test_notify_path_socket_one_datagram(path_socket):
    sock, addr = path_socket
    assert notify("READY=1", "STATUS=watching /data", environ={"NOTIFY_SOCKET": addr}) is True
    assert _recv(sock) == b"READY=1\nSTATUS=watching /data"


@linux_only
def test_notify_abstract_socket(abstract_socket):
    sock, addr = abstract_socket
    assert notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": addr}) is True
    assert _recv(sock) == b"WATCHDOG=1"


@pytest.mark.parametrize("kind", ["path", pytest.param("abstract", marks=linux_only)])
def test_notifier_messages(kind, request):
    sock, addr = request.getfixturevalue(f"{kind}_socket")
    n = Notifier(environ={"NOTIFY_SOCKET": addr})
    assert n.enabled
    assert n.ready("watching /data") is True
    assert _recv(sock) == b"READY=1\nSTATUS=watching /data"
    assert n.ready() is True
    assert _recv(sock) == b"READY=1"
    assert n.status("3 queued\n1 running") is True
    assert _recv(sock) == b"STATUS=3 queued 1 running"  # a newline would start a new assignment
    assert n.watchdog() is True
    assert _recv(sock) == b"WATCHDOG=1"
    assert n.stopping() is True
    assert _recv(sock) == b"STOPPING=1"
    assert n.reloading() is True
    lines = _recv(sock).split(b"\n")
    assert lines[0] == b"RELOADING=1" and lines[1].startswith(b"MONOTONIC_USEC=")
    assert int(lines[1].split(b"=")[1]) > 0


def test_unset_socket_is_a_quiet_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1", environ={}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False
    assert notify("READY=1") is False  # os.environ without the variable
    n = Notifier(environ={})
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False and n.stopping() is False
    assert n.status("x") is False and n.reloading() is False


def test_send_error_is_logged_not_raised(tmp_path, caplog):
    missing = str(tmp_path / "nobody-listens.sock")
    with caplog.at_level(logging.WARNING, logger="rawgate.notify"):
        assert notify("READY=1", environ={"NOTIFY_SOCKET": missing}) is False
    assert any(r.name == "rawgate.notify" for r in caplog.records)


def test_environment_is_read_once(path_socket):
    sock, addr = path_socket
    env = {"NOTIFY_SOCKET": addr}
    n = Notifier(environ=env)
    env.clear()
    assert n.watchdog() is True
    assert _recv(sock) == b"WATCHDOG=1"


def test_watchdog_interval():
    assert Notifier(environ={"WATCHDOG_USEC": "2000000"}).watchdog_interval_s == 1.0
    own = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ=own).watchdog_interval_s == 1.0
    foreign = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(environ=foreign).watchdog_interval_s is None
    assert Notifier(environ={}).watchdog_interval_s is None
    assert Notifier(environ={"WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier(environ={"WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
