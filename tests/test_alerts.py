"""Alerts against real servers: an HTTP server on 127.0.0.1 for webhooks, aiosmtpd for e-mail."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import BaseModel, ValidationError
from rawgate.daemon.alerts import (
    Alert,
    AlertConfigError,
    AlertDeliveryError,
    Alerter,
    AlertsConfig,
    EmailConfig,
    EmailSink,
    LogSink,
    WebhookConfig,
    WebhookSink,
    build_alerter,
    resolve_secret,
)

SECRET_PATH = "/hooks/T000/B000/s3cr3t-t0k3n"


class Recorder:
    """A webhook receiver: records POSTed JSON; /status/<code>/… answers that code, /slow/… waits."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.headers: list[dict] = []
        self.release = threading.Event()
        self.down = False  # True: every request answers 500 (an outage)
        self.delivered: list[dict] = []  # bodies answered with 2xx
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.paths.append(self.path)
                recorder.headers.append(dict(self.headers))
                recorder.bodies.append(json.loads(body))
                if self.path.startswith("/slow/"):
                    recorder.release.wait(3.0)
                code = int(self.path.split("/")[2]) if self.path.startswith("/status/") else 200
                if recorder.down:
                    code = 500
                if code < 300:
                    recorder.delivered.append(json.loads(body))
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if code < 300 else b"boom")
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http():
    rec = Recorder()
    yield rec
    rec.close()


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _alert(key: str = "quarantined:/data/a.tif", severity: str = "warning", **kw) -> Alert:
    kw.setdefault("title", "File quarantined")
    kw.setdefault("text", "ratio check failed")
    return Alert(key=key, severity=severity, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- payloads


def test_webhook_flavors_payload_shapes(http):
    sinks = [WebhookSink(http.url(f"/{f}"), f, 5) for f in ("slack", "mattermost", "teams", "generic")]
    alert = _alert(item="/data/a.tif", fields={"ratio": "3.1", "codec": "rg-lossless"}, at=1.7e9)
    for sink in sinks:
        sink.send(alert)
    by_path = dict(zip(http.paths, http.bodies))
    assert all(h["Content-Type"].startswith("application/json") for h in http.headers)

    slack = by_path["/slack"]
    assert set(slack) == {"text"}
    assert "*[WARNING] File quarantined*" in slack["text"]
    assert "ratio check failed" in slack["text"] and "/data/a.tif" in slack["text"]

    mm = by_path["/mattermost"]
    assert "File quarantined" in mm["text"] and mm["username"] == "rawgate"

    teams = by_path["/teams"]
    assert teams["type"] == "message"
    (att,) = teams["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert att["contentUrl"] is None
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    blocks = [b["type"] for b in card["body"]]
    assert blocks[:2] == ["TextBlock", "TextBlock"] and "FactSet" in blocks
    assert "File quarantined" in card["body"][0]["text"]
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["ratio"] == "3.1" and facts["item"] == "/data/a.tif" and facts["severity"] == "warning"

    generic = by_path["/generic"]
    assert generic == {**alert.to_dict(), "source": "rawgate"}
    assert generic["key"] == "quarantined:/data/a.tif" and generic["severity"] == "warning"


def test_slack_escapes_control_characters(http):
    WebhookSink(http.url(), "slack").send(_alert(title="a <b> & c"))
    assert "a &lt;b&gt; &amp; c" in http.bodies[0]["text"]


# --------------------------------------------------------------------------- the alerter


def test_dedupe_window_and_suppressed_count(http):
    clock = FakeClock()
    sink = WebhookSink(http.url(), "generic", 5)
    with Alerter([sink], dedupe_window_s=60, max_per_hour=100, clock=clock) as alerter:
        assert alerter.alert(_alert("k1"))
        clock.t += 10
        assert not alerter.alert(_alert("k1"))
        assert not alerter.alert(_alert("k1"))
        clock.t += 49.9
        assert not alerter.alert(_alert("k1"))
        assert alerter.flush(5)
        assert len(http.bodies) == 1
        clock.t += 0.2  # 60.1 s after the first one
        assert alerter.alert(_alert("k1"))
        assert alerter.alert(_alert("k2"))
        assert alerter.flush(5)
    assert [b["key"] for b in http.bodies] == ["k1", "k1", "k2"]
    assert "(3 similar alerts suppressed)" in http.bodies[1]["text"]
    assert "suppressed" not in http.bodies[0]["text"] and "suppressed" not in http.bodies[2]["text"]
    assert alerter.stats == {sink.name: {"delivered": 3, "failed": 0}}
    assert alerter.suppressed == 3


def test_rate_limit_caps_sends_per_hour(http):
    clock = FakeClock()
    sink = WebhookSink(http.url(), "generic", 5)
    alerter = Alerter([sink], dedupe_window_s=0, max_per_hour=3, clock=clock)
    try:
        accepted = []
        for i in range(6):
            accepted.append(alerter.alert(_alert(f"k{i}")))
            clock.t += 60
        assert accepted == [True, True, True, False, False, False]
        clock.t = 1000.0 + 3600.0  # the first send leaves the rolling hour
        assert alerter.alert(_alert("late"))
        assert not alerter.alert(_alert("later"))
        assert alerter.flush(5)
    finally:
        alerter.close()
    assert [b["key"] for b in http.bodies] == ["k0", "k1", "k2", "late"]
    assert "(3 similar alerts suppressed)" in http.bodies[-1]["text"]


def test_min_severity_per_sink(http, caplog):
    hook = WebhookSink(http.url(), "generic", 5, min_severity="critical")
    logger = logging.getLogger("rawgate.alerts.test")
    with (
        caplog.at_level(logging.INFO, logger="rawgate.alerts.test"),
        Alerter([hook, LogSink(logger)], dedupe_window_s=0) as alerter,
    ):
        assert alerter.alert(_alert("a", "info"))
        assert alerter.alert(_alert("b", "critical"))
        assert alerter.flush(5)
        assert alerter.stats == {hook.name: {"delivered": 1, "failed": 0}, "log": {"delivered": 2, "failed": 0}}
    assert [b["key"] for b in http.bodies] == ["b"]
    levels = [(r.levelno, r.getMessage()) for r in caplog.records
              if r.name == "rawgate.alerts.test" and r.levelno >= logging.INFO]
    assert levels == [(logging.INFO, "alert: File quarantined: ratio check failed")] * 1 + [
        (logging.CRITICAL, "alert: File quarantined: ratio check failed")]
    # an alert no sink takes is ignored and does not use up the dedupe window
    with Alerter([hook], dedupe_window_s=3600) as alerter:
        assert not alerter.alert(_alert("x", "warning"))
        assert alerter.alert(_alert("x", "critical"))


def test_failures_counted_not_raised(http, caplog):
    refused = WebhookSink(f"http://127.0.0.1:{_free_port()}{SECRET_PATH}", "slack", 2)
    error500 = WebhookSink(http.url("/status/500" + SECRET_PATH), "teams", 2)
    with caplog.at_level(logging.WARNING, logger="rawgate.alerts"):
        alerter = Alerter([refused, error500], dedupe_window_s=0)
        for i in range(5):
            assert alerter.alert(_alert(f"k{i}", "critical"))
        assert alerter.flush(10)
        assert alerter.close(5)
    assert alerter.stats == {
        refused.name: {"delivered": 0, "failed": 5},
        error500.name: {"delivered": 0, "failed": 5},
    }
    messages = [r.getMessage() for r in caplog.records if r.name == "rawgate.alerts"]
    assert any("HTTP 500" in m and f"http://127.0.0.1:{http.port}" in m for m in messages)
    assert any("refused" in m.lower() for m in messages)
    assert not any("s3cr3t" in m for m in messages), "a webhook's secret path leaked into the log"
    assert not alerter.alert(_alert("after-close", "critical"))


def test_slow_webhook_never_blocks_the_caller(http, caplog):
    # the server sleeps 3 s per request; the sink gives up after 0.5 s
    slow = WebhookSink(http.url("/slow" + SECRET_PATH), "generic", 0.5)
    with caplog.at_level(logging.WARNING, logger="rawgate.alerts"):
        alerter = Alerter([slow], dedupe_window_s=0)
        t0 = time.perf_counter()
        for i in range(3):
            assert alerter.alert(_alert(f"k{i}", "critical"))
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.5, f"alert() blocked for {elapsed:.2f} s"
        assert alerter.flush(0.2) is False  # still waiting on the first delivery
        assert alerter.flush(10)
        alerter.close()
    assert alerter.stats == {slow.name: {"delivered": 0, "failed": 3}}
    messages = [r.getMessage() for r in caplog.records if r.name == "rawgate.alerts"]
    assert len(messages) == 3 and all("timed out" in m and "s3cr3t" not in m for m in messages)


def test_delivery_error_message_hides_url_path(http):
    sink = WebhookSink(http.url("/status/403" + SECRET_PATH), "slack", 2)
    assert "s3cr3t" not in repr(sink) and "s3cr3t" not in sink.name
    with pytest.raises(AlertDeliveryError) as err:
        sink.send(_alert())
    assert "403" in str(err.value) and "s3cr3t" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_full_queue_drops_with_warning(http, caplog):
    http_slow = WebhookSink(http.url("/slow/x"), "generic", 5)
    with caplog.at_level(logging.WARNING, logger="rawgate.alerts"):
        alerter = Alerter([http_slow], dedupe_window_s=0, queue_size=1)
        results = [alerter.alert(_alert(f"k{i}")) for i in range(4)]
        time.sleep(0.05)
        http.release.set()
        assert alerter.flush(5)
        alerter.close()
    # one in the sink, one waiting; the rest dropped (exact split depends on thread timing)
    assert results[:1] == [True] and results.count(False) >= 2
    assert alerter.dropped == results.count(False)
    assert any("queue full" in r.getMessage() for r in caplog.records)


def test_alert_record():
    a = Alert(key="k", severity="info", title="t", text="x")
    assert a.fields == {} and a.item is None and abs(a.at - time.time()) < 5
    assert a.to_dict()["severity"] == "info"
    with pytest.raises(ValueError):
        Alert(key="k", severity="fatal", title="t", text="x")  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.title = "changed"  # type: ignore[misc]


# --------------------------------------------------------------------------- e-mail


class _Inbox:
    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def test_email_through_real_smtp_server():
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        cfg = AlertsConfig.model_validate(
            {
                "log": False,
                "email": {
                    "host": "127.0.0.1",
                    "port": controller.port,
                    "security": "none",
                    "sender": "rawgate@scope.example",
                    "recipients": ["a@lab.example", "b@lab.example"],
                    "timeout_s": 5,
                },
            }
        )
        alerter = build_alerter(cfg, environ={})
        assert alerter.alert(_alert(severity="critical", item="/data/a.tif", fields={"ratio": "3.1"}))
        assert alerter.flush(10)
        alerter.close()
    finally:
        controller.stop()
    assert alerter.stats == {f"email:127.0.0.1:{controller.port}": {"delivered": 1, "failed": 0}}
    (env,) = inbox.envelopes
    assert env.mail_from == "rawgate@scope.example"
    assert env.rcpt_tos == ["a@lab.example", "b@lab.example"]
    msg = message_from_bytes(env.content)
    assert str(make_header(decode_header(msg["Subject"]))) == "[rawgate critical] File quarantined"
    assert msg["To"] == "a@lab.example, b@lab.example"
    body = msg.get_payload(decode=True).decode()
    assert "ratio check failed" in body and "/data/a.tif" in body and "3.1" in body


def test_email_failure_is_a_delivery_error():
    sink = EmailSink("127.0.0.1", _free_port(), "none", sender="r@x.example", recipients=["a@x.example"], timeout_s=2)
    with pytest.raises(AlertDeliveryError, match="email:127.0.0.1"):
        sink.send(_alert())


# --------------------------------------------------------------------------- secrets and config


def test_resolve_secret_from_env_and_credentials(tmp_path):
    assert resolve_secret("HOOK", None, environ={"HOOK": "https://h.example/x"}) == "https://h.example/x"
    with pytest.raises(AlertConfigError, match="environment variable HOOK is not set"):
        resolve_secret("HOOK", None, environ={})
    with pytest.raises(AlertConfigError, match="HOOK is empty"):
        resolve_secret("HOOK", None, environ={"HOOK": "  "})

    (tmp_path / "slack-url").write_text("https://h.example/y\n")
    assert resolve_secret(None, "slack-url", environ={}, credentials_dir=tmp_path) == "https://h.example/y"
    # the directory from $CREDENTIALS_DIRECTORY, as systemd's LoadCredential= sets it
    assert resolve_secret(None, "slack-url", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "https://h.example/y"
    with pytest.raises(AlertConfigError, match="missing-file"):
        resolve_secret(None, "missing-file", environ={}, credentials_dir=tmp_path)
    with pytest.raises(AlertConfigError, match=r"CREDENTIALS_DIRECTORY is not set.*LoadCredential=slack-url"):
        resolve_secret(None, "slack-url", environ={})
    (tmp_path / "blank").write_text("\n")
    with pytest.raises(AlertConfigError, match="blank.*empty"):
        resolve_secret(None, "blank", environ={}, credentials_dir=tmp_path)
    with pytest.raises(AlertConfigError):
        resolve_secret("A", "b", environ={"A": "x"})


def test_build_alerter_resolves_and_names_missing_secrets(tmp_path, http):
    (tmp_path / "teams-url").write_text(http.url("/teams") + "\n")
    cfg = AlertsConfig.model_validate(
        {
            "webhooks": [
                {"url_env": "RAWGATE_SLACK_URL", "min_severity": "info"},
                {"url_credential": "teams-url", "flavor": "teams", "min_severity": "info"},
                {"url_env": "RAWGATE_SLACK_URL", "min_severity": "critical"},
            ],
        }
    )
    alerter = build_alerter(cfg, environ={"RAWGATE_SLACK_URL": http.url("/slack")}, credentials_dir=tmp_path)
    try:
        assert alerter.alert(_alert(severity="info"))
        assert alerter.flush(5)
    finally:
        alerter.close()
    assert sorted(http.paths) == ["/slack", "/teams"]
    assert len(alerter.stats) == 4 and "log" in alerter.stats  # duplicate sink names made unique

    with pytest.raises(AlertConfigError, match=r"alerts\.webhooks\[0\].*RAWGATE_SLACK_URL"):
        build_alerter(cfg, environ={}, credentials_dir=tmp_path)
    with pytest.raises(AlertConfigError, match=r"alerts\.webhooks\[1\].*teams-url"):
        build_alerter(cfg, environ={"RAWGATE_SLACK_URL": http.url()}, credentials_dir=tmp_path / "nowhere")
    email_cfg = AlertsConfig.model_validate(
        {
            "email": {
                "host": "smtp.example",
                "sender": "r@x.example",
                "recipients": ["a@x.example"],
                "username": "rawgate",
                "password_env": "RAWGATE_SMTP_PASSWORD",
            }
        }
    )
    with pytest.raises(AlertConfigError, match=r"alerts\.email.*RAWGATE_SMTP_PASSWORD"):
        build_alerter(email_cfg, environ={})


@pytest.mark.parametrize(
    "data",
    [
        {"webhooks": [{"url": "https://hooks.slack.com/services/T/B/x"}]},
        {"webhooks": [{"url_env": "X", "token": "abc"}]},
        {"webhook_url": "https://hooks.slack.com/services/T/B/x"},
        {"email": {"host": "h", "sender": "a@b.c", "recipients": ["a@b.c"], "password": "hunter2"}},
    ],
)
def test_secrets_in_the_config_file_are_refused(data):
    with pytest.raises(ValidationError) as err:
        AlertsConfig.model_validate(data)
    text = str(err.value)
    assert "secrets are never read from the config file" in text
    assert "url_env / password_env" in text and "LoadCredential=" in text
    assert "hunter2" not in text and "hooks.slack.com" not in text  # the secret is not echoed


def test_alert_is_thread_safe(http):
    clock = FakeClock()
    sink = WebhookSink(http.url(), "generic", 5)
    with Alerter([sink], dedupe_window_s=3600, max_per_hour=50, clock=clock) as alerter:
        results: list[bool] = []

        def burst(t: int) -> None:
            results.extend(alerter.alert(_alert(f"k{i % 40}-{t % 2}")) for i in range(40))

        threads = [threading.Thread(target=burst, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert alerter.flush(10)
    # 80 distinct keys, 320 attempts: each key once, capped at 50 per hour
    assert results.count(True) == 50 and alerter.suppressed == 270
    assert len({b["key"] for b in http.bodies}) == len(http.bodies) == 50


def test_config_validation():
    cfg = AlertsConfig()
    assert (cfg.webhooks, cfg.email, cfg.log) == ([], None, True)
    assert (cfg.dedupe_window_s, cfg.max_per_hour, cfg.queue_size) == (3600, 30, 1000)
    hook = WebhookConfig(url_env="SLACK_URL")
    assert (hook.flavor, hook.timeout_s) == ("slack", 10)
    with pytest.raises(ValidationError, match="exactly one"):
        WebhookConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        WebhookConfig(url_env="A", url_credential="b")
    with pytest.raises(ValidationError, match="NAME of an environment variable"):
        WebhookConfig(url_env="https://hooks.slack.com/services/T/B/x")
    with pytest.raises(ValidationError, match="NAME of a file"):
        WebhookConfig(url_credential="https://hooks.slack.com/services/T/B/x")
    with pytest.raises(ValidationError):
        WebhookConfig(url_env="A", flavor="discord")
    with pytest.raises(ValidationError):
        WebhookConfig(url_env="A", min_severity="fatal")
    with pytest.raises(ValidationError):
        AlertsConfig(unknown=1)
    base = {"host": "smtp.example", "sender": "r@x.example", "recipients": ["a@x.example"]}
    email = EmailConfig(**base)
    assert (email.port, email.security) == (587, "starttls")
    with pytest.raises(ValidationError):
        EmailConfig(**{**base, "recipients": []})
    with pytest.raises(ValidationError, match="both"):
        EmailConfig(**base, username="u")
    with pytest.raises(ValidationError, match="unencrypted"):
        EmailConfig(**{**base, "security": "none"}, username="u", password_env="P")

    class Parent(BaseModel):  # the main config embeds the section
        alerts: AlertsConfig = AlertsConfig()

    p = Parent.model_validate({"alerts": {"webhooks": [{"url_env": "X", "flavor": "teams"}]}})
    assert p.alerts.webhooks[0].flavor == "teams"
    with pytest.raises(ValidationError):
        p.alerts.log = False  # frozen


def _keys(bodies: list[dict]) -> list[str]:
    return sorted(b["key"] for b in bodies)


def test_alerts_during_an_outage_arrive_once_it_is_over_even_across_a_restart(http, tmp_path):
    """A webhook answering 500: the alerts wait in the on-disk outbox, are retried with backoff,
    survive the alerter being closed and re-created (a daemon restart), and each arrives exactly
    once when the webhook is back."""
    from rawgate.daemon.outbox import AlertOutbox

    box = tmp_path / "outbox.sqlite"
    cfg = AlertsConfig(webhooks=[WebhookConfig(url_env="HOOK", flavor="generic")], dedupe_window_s=0,
                       max_per_hour=1000, retry_base_s=0.2, retry_max_s=0.5)
    env = {"HOOK": http.url("/hook")}
    http.down = True
    first = build_alerter(cfg, environ=env, outbox_path=box)
    for i in range(3):
        assert first.alert(Alert(key=f"k{i}", severity="critical", title=f"t{i}", text="x"))
    assert first.flush(10)
    time.sleep(1.0)  # a few retries, all refused
    assert first.close(10)
    assert len(http.bodies) > 3 and http.delivered == []
    assert AlertOutbox(box).waiting() == 3  # the log sink is never kept
    # restart while still down, one more alert; then the webhook comes back
    second = build_alerter(cfg, environ=env, outbox_path=box)
    assert second.alert(Alert(key="k3", severity="warning", title="t3", text="y"))
    time.sleep(0.5)
    http.down = False
    deadline = time.monotonic() + 20
    while len(http.delivered) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # no duplicates come after
    assert second.close(10)
    assert _keys(http.delivered) == ["k0", "k1", "k2", "k3"]
    assert AlertOutbox(box).waiting() == 0


def test_without_an_outbox_a_refused_alert_is_lost_as_before(http):
    http.down = True
    a = Alerter([WebhookSink(http.url("/hook"), "generic", 5.0)], dedupe_window_s=0)
    a.alert(Alert(key="k", severity="critical", title="t", text="x"))
    assert a.flush(10)
    assert a.stats[next(iter(a.stats))]["failed"] == 1 and a.undelivered is None
    a.close()
