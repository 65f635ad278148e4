"""Alerts: tell a person when the daemon needs one (quarantined files, a dead disk, drift).

An :class:`Alert` goes to :meth:`Alerter.alert`, which de-duplicates it by key, applies a
global hourly rate limit and puts it on a bounded queue; one background daemon thread hands
queued alerts to the sinks (chat webhooks, e-mail, the log). A slow or dead sink never blocks
the caller, and a failed delivery is logged and counted, never raised.

Secrets (webhook URLs, SMTP passwords) are never read from the configuration file: the file
names an environment variable (``url_env`` / ``password_env``) or a systemd credential file
(``url_credential`` / ``password_credential``, read from ``$CREDENTIALS_DIRECTORY``, i.e.
``LoadCredential=``), and :func:`build_alerter` resolves them at start-up.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import json
import logging
import os
import queue
import re
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from http.client import HTTPException
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .names import shown
from .outbox import AlertOutbox

__all__ = [
    "SEVERITY_RANK",
    "Alert",
    "AlertConfigError",
    "AlertDeliveryError",
    "AlertSink",
    "Alerter",
    "AlertsConfig",
    "EmailConfig",
    "EmailSink",
    "LogSink",
    "Severity",
    "WebhookConfig",
    "WebhookSink",
    "build_alerter",
    "resolve_secret",
    "webhook_payload",
]

log = logging.getLogger("rawgate.alerts")

Severity = Literal["info", "warning", "critical"]
#: Severity order: info < warning < critical.
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
WebhookFlavor = Literal["slack", "mattermost", "teams", "generic"]

_SECRET_MESSAGE = (
    "secrets are never read from the config file: put it in an environment variable named by "
    "url_env / password_env, or in a credentials file (systemd LoadCredential=) named by "
    "url_credential / password_credential"
)
# keys that would put a secret into the YAML file
_SECRET_KEYS = frozenset(
    {
        "url",
        "webhook_url",
        "webhook",
        "password",
        "passwd",
        "pass",
        "token",
        "secret",
        "api_key",
        "apikey",
        "auth_token",
        "access_token",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")


class AlertConfigError(ValueError):
    """An alert sink cannot be set up (a secret is missing, empty, or misnamed)."""


class AlertDeliveryError(RuntimeError):
    """A sink failed to deliver one alert (its message never contains a secret)."""


# --------------------------------------------------------------------------- configuration


class _Strict(BaseModel):
    # hide_input_in_errors: a refused secret must not be echoed back in the error message
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _refuse_secrets(data: Any) -> Any:
    if isinstance(data, Mapping):
        found = sorted(str(k) for k in data if str(k).lower() in _SECRET_KEYS)
        if found:
            raise ValueError(f"`{found[0]}`: {_SECRET_MESSAGE}")
    return data


def _check_env_name(value: str | None, field: str) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(
            f"{field} is the NAME of an environment variable (letters, digits, _), "
            f"not the secret itself: {_SECRET_MESSAGE}"
        )
    return value


def _check_credential_name(value: str | None, field: str) -> str | None:
    if value is not None and not _CREDENTIAL_NAME.match(value):
        raise ValueError(
            f"{field} is the NAME of a file in $CREDENTIALS_DIRECTORY (no '/', ':' or spaces), "
            f"not the secret itself: {_SECRET_MESSAGE}"
        )
    return value


class _NoSecrets(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        return _refuse_secrets(data)


class WebhookConfig(_NoSecrets):
    """One chat webhook (Slack, Mattermost, Microsoft Teams Workflows, or generic JSON)."""

    url_env: str | None = Field(None, description="Environment variable holding the webhook URL")
    url_credential: str | None = Field(
        None, description="File in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) holding the URL"
    )
    flavor: WebhookFlavor = Field("slack", description="Payload shape the receiver expects")
    timeout_s: float = Field(10.0, gt=0, le=300, description="HTTP timeout per delivery, seconds")
    min_severity: Severity = Field("warning", description="Alerts below this severity are not sent")

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v, "url_env")

    @field_validator("url_credential")
    @classmethod
    def _credential_name(cls, v: str | None) -> str | None:
        return _check_credential_name(v, "url_credential")

    @model_validator(mode="after")
    def _one_source(self) -> WebhookConfig:
        if (self.url_env is None) == (self.url_credential is None):
            raise ValueError("set exactly one of `url_env` and `url_credential`")
        return self


class EmailConfig(_NoSecrets):
    """E-mail through an SMTP server (the password, if any, comes from the environment)."""

    host: str = Field(..., min_length=1, description="SMTP server host name")
    port: int = Field(587, ge=1, le=65535, description="SMTP server TCP port")
    security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="starttls: upgrade after connecting (587); ssl: TLS from the start (465)"
    )
    sender: str = Field(..., min_length=3, description="From: address")
    recipients: list[str] = Field(..., min_length=1, description="To: addresses")
    username: str | None = Field(None, description="SMTP login name (null: no login)")
    password_env: str | None = Field(None, description="Environment variable holding the password")
    password_credential: str | None = Field(
        None, description="File in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) holding the password"
    )
    timeout_s: float = Field(30.0, gt=0, le=300, description="SMTP timeout per operation, seconds")
    min_severity: Severity = Field("warning", description="Alerts below this severity are not sent")

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v, "password_env")

    @field_validator("password_credential")
    @classmethod
    def _credential_name(cls, v: str | None) -> str | None:
        return _check_credential_name(v, "password_credential")

    @field_validator("sender", "recipients")
    @classmethod
    def _addresses(cls, v: str | list[str]) -> str | list[str]:
        for address in [v] if isinstance(v, str) else v:
            if "@" not in address or any(c in address for c in "\r\n"):
                raise ValueError(f"not an e-mail address: {address!r}")
        return v

    @model_validator(mode="after")
    def _login(self) -> EmailConfig:
        has_password = self.password_env is not None or self.password_credential is not None
        if self.password_env is not None and self.password_credential is not None:
            raise ValueError("set at most one of `password_env` and `password_credential`")
        if has_password != (self.username is not None):
            raise ValueError(
                "a login needs both `username` and a password source (password_env or "
                "password_credential); set both or neither"
            )
        if has_password and self.security == "none":
            raise ValueError("refusing to send an SMTP password unencrypted: use security starttls or ssl")
        return self


class AlertsConfig(_NoSecrets):
    """The ``alerts:`` section: where alerts go and how often."""

    webhooks: list[WebhookConfig] = Field(default_factory=list, description="Chat webhooks")
    email: EmailConfig | None = Field(None, description="E-mail (null: none)")
    log: bool = Field(True, description="Also write every alert to the log (logger rawgate.alerts)")
    dedupe_window_s: float = Field(
        3600.0, ge=0, description="An alert with the same key is not resent within this many seconds"
    )
    max_per_hour: int = Field(30, ge=1, description="At most this many alerts sent per rolling hour")
    queue_size: int = Field(1000, ge=1, description="Alerts waiting for delivery; beyond it they are dropped")
    retry_base_s: float = Field(5.0, gt=0, description="An undelivered alert is retried after this long, "
                                "doubling after each failure [s] (kept on disk across restarts)")
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between two retries [s]")


# --------------------------------------------------------------------------- alerts


@dataclasses.dataclass(frozen=True)
class Alert:
    """One event worth a person's attention.

    Parameters
    ----------
    key : str
        De-duplication key: alerts with the same key inside ``dedupe_window_s`` are sent once
        (e.g. ``"quarantined:/data/a.tif"``).
    severity : {"info", "warning", "critical"}
        How urgent (info < warning < critical); sinks may ignore alerts below a minimum.
    title : str
        One line summary.
    text : str
        Details (plain text, may span lines).
    item : str or None
        The file or object concerned, if any.
    fields : dict of str to str
        Extra facts shown as a table (e.g. ``{"ratio": "3.1"}``).
    at : float
        When it happened, unix time in seconds (default: now).
    """

    key: str
    severity: Severity
    title: str
    text: str
    item: str | None = None
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    at: float = dataclasses.field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"severity must be one of {list(SEVERITY_RANK)}, not {self.severity!r}")
        # a file name that is not UTF-8 must not stop a webhook, an e-mail or the log line
        for name in ("key", "title", "text", "item"):
            object.__setattr__(self, name, shown(getattr(self, name)))

    @property
    def at_iso(self) -> str:
        """:attr:`at` as an ISO 8601 UTC time stamp (seconds)."""
        return _dt.datetime.fromtimestamp(self.at, _dt.UTC).isoformat(timespec="seconds")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        """The inverse of :meth:`to_dict`."""
        return cls(key=d["key"], severity=d["severity"], title=d["title"], text=d["text"], item=d.get("item"),
                   fields=dict(d.get("fields") or {}), at=float(d.get("at", time.time())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy: key, severity, title, text, item, fields, at (unix s)."""
        return {
            "key": self.key,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "item": self.item,
            "fields": dict(self.fields),
            "at": self.at,
        }


# --------------------------------------------------------------------------- secrets


def resolve_secret(
    env_name: str | None,
    credential_name: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    credentials_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Read a secret from an environment variable or a systemd credential file.

    Parameters
    ----------
    env_name : str or None
        Name of the environment variable holding the secret.
    credential_name : str or None
        Name of a file in the credentials directory holding the secret (exactly one of
        ``env_name`` and ``credential_name`` must be given).
    environ : mapping, optional
        Environment to read (default: ``os.environ``).
    credentials_dir : path, optional
        Credentials directory (default: ``$CREDENTIALS_DIRECTORY`` from ``environ``, which
        systemd sets for units with ``LoadCredential=``).

    Returns
    -------
    str
        The secret; a credential file's trailing newline is removed.

    Raises
    ------
    AlertConfigError
        Naming the variable or file when it is missing, unreadable or empty (never the value).
    """
    env = os.environ if environ is None else environ
    if (env_name is None) == (credential_name is None):
        raise AlertConfigError("name exactly one of an environment variable and a credential file")
    if env_name is not None:
        value = env.get(env_name)
        if value is None:
            raise AlertConfigError(f"environment variable {env_name} is not set")
        if not value.strip():
            raise AlertConfigError(f"environment variable {env_name} is empty")
        return value
    assert credential_name is not None
    if not _CREDENTIAL_NAME.match(credential_name):
        raise AlertConfigError(f"credential name {credential_name!r} is not a plain file name")
    directory = credentials_dir if credentials_dir is not None else env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise AlertConfigError(
            f"credential file {credential_name}: $CREDENTIALS_DIRECTORY is not set "
            f"(add LoadCredential={credential_name}:/path/to/secret to the systemd unit)"
        )
    path = Path(directory) / credential_name
    try:
        value = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlertConfigError(f"credential file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AlertConfigError(f"credential file {path} cannot be read: {type(exc).__name__}") from None
    value = value.rstrip("\r\n")
    if not value.strip():
        raise AlertConfigError(f"credential file {path} is empty")
    return value


# --------------------------------------------------------------------------- sinks


@runtime_checkable
class AlertSink(Protocol):
    """Somewhere alerts go.

    ``name`` identifies the sink in logs and :attr:`Alerter.stats`; alerts below
    ``min_severity`` are not handed to it; ``send`` delivers one alert or raises
    :class:`AlertDeliveryError`.
    """

    name: str
    min_severity: Severity

    def send(self, alert: Alert) -> None: ...


def _details(alert: Alert) -> list[tuple[str, str]]:
    rows = [("severity", alert.severity)]
    if alert.item is not None:
        rows.append(("item", alert.item))
    rows.extend((str(k), str(v)) for k, v in alert.fields.items())
    rows.append(("time", alert.at_iso))
    return rows


def _slack_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(alert: Alert, flavor: WebhookFlavor) -> dict[str, Any]:
    """The JSON body a webhook of ``flavor`` receives for ``alert``.

    slack: ``{"text": "*[SEVERITY] title*\\ntext\\nfacts…"}`` (mrkdwn, ``&<>`` escaped);
    mattermost: the same in Markdown plus ``"username": "rawgate"``; teams: an Adaptive Card
    1.4 message as Teams Workflows ("post to a channel when a webhook request is received")
    expects; generic: :meth:`Alert.to_dict` plus ``"source": "rawgate"``.
    """
    rows = [(k, v) for k, v in _details(alert) if k != "severity"]
    head = f"[{alert.severity.upper()}] {alert.title}"
    if flavor == "slack":
        lines = [f"*{_slack_escape(head)}*", _slack_escape(alert.text)]
        lines += [f"{_slack_escape(k)}: `{_slack_escape(v)}`" for k, v in rows]
        return {"text": "\n".join(lines)}
    if flavor == "mattermost":
        lines = [f"**{head}**", alert.text] + [f"{k}: `{v}`" for k, v in rows]
        return {"text": "\n".join(lines), "username": "rawgate"}
    if flavor == "teams":
        color = {"info": "default", "warning": "warning", "critical": "attention"}[alert.severity]
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": head, "weight": "bolder", "size": "medium", "wrap": True, "color": color},
            {"type": "TextBlock", "text": alert.text, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _details(alert)]},
        ]
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        }
        return {
            "type": "message",
            "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
            ],
        }
    if flavor == "generic":
        return {**alert.to_dict(), "source": "rawgate"}
    raise ValueError(f"unknown webhook flavor {flavor!r}")


class WebhookSink:
    """POST alerts as JSON to a chat webhook (stdlib ``urllib``).

    Parameters
    ----------
    url : str
        The webhook URL (a secret: only its ``scheme://host[:port]`` ever appears in names,
        logs and errors).
    flavor : {"slack", "mattermost", "teams", "generic"}
        Payload shape, see :func:`webhook_payload`.
    timeout_s : float
        Connect/read timeout per delivery, seconds.
    min_severity : {"info", "warning", "critical"}
        Alerts below this are not handed to the sink.
    """

    def __init__(
        self,
        url: str,
        flavor: WebhookFlavor = "slack",
        timeout_s: float = 10.0,
        *,
        min_severity: Severity = "warning",
    ) -> None:
        url = url.strip()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertConfigError("a webhook URL must start with https:// (or http://) and name a host")
        if flavor not in ("slack", "mattermost", "teams", "generic"):
            raise AlertConfigError(f"unknown webhook flavor {flavor!r}")
        if timeout_s <= 0:
            raise AlertConfigError("timeout_s must be positive")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._url = url
        self._where = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        self.flavor: WebhookFlavor = flavor
        self.timeout_s = float(timeout_s)
        self.min_severity: Severity = min_severity
        self.name = f"webhook:{flavor}:{self._where}"

    def __repr__(self) -> str:
        return f"WebhookSink({self.name!r})"

    def _scrub(self, s: str) -> str:
        return s.replace(self._url, self._where)

    def send(self, alert: Alert) -> None:
        """POST one alert; raise :class:`AlertDeliveryError` on a non-2xx status or network error."""
        data = json.dumps(webhook_payload(alert, self.flavor)).encode("utf-8")
        request = urllib.request.Request(
            self._url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "rawgate-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
                response.read(65536)
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read(300).decode("utf-8", "replace").strip()
            except Exception:  # noqa: BLE001 - the body is only a hint
                body = ""
            finally:
                exc.close()
            hint = f": {self._scrub(body)[:200]}" if body else ""
            raise AlertDeliveryError(f"{self._where}: HTTP {exc.code} {exc.reason}{hint}") from None
        except urllib.error.URLError as exc:
            raise AlertDeliveryError(f"{self._where}: {self._scrub(str(exc.reason))}") from None
        except (OSError, HTTPException) as exc:  # timeouts while reading, dropped connections
            raise AlertDeliveryError(f"{self._where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        if not 200 <= status < 300:
            raise AlertDeliveryError(f"{self._where}: HTTP {status}")


class EmailSink:
    """Send alerts as e-mail through an SMTP server (stdlib ``smtplib``).

    Parameters
    ----------
    host : str
        SMTP server.
    port : int
        SMTP port (587 for starttls, 465 for ssl, 25 for a local relay).
    security : {"starttls", "ssl", "none"}
        Transport security; certificates are verified against the system's CAs.
    sender : str
        From: address.
    recipients : sequence of str
        To: addresses.
    username, password : str or None
        SMTP login (both or neither).
    timeout_s : float
        Timeout per SMTP operation, seconds.
    min_severity : {"info", "warning", "critical"}
        Alerts below this are not handed to the sink.
    ssl_context : ssl.SSLContext, optional
        For ssl / starttls (default: ``ssl.create_default_context()``).
    """

    def __init__(
        self,
        host: str,
        port: int = 587,
        security: Literal["starttls", "ssl", "none"] = "starttls",
        *,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        min_severity: Severity = "warning",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not recipients:
            raise AlertConfigError("an e-mail sink needs at least one recipient")
        if (username is None) != (password is None):
            raise AlertConfigError("an SMTP login needs both a username and a password")
        self.host = host
        self.port = int(port)
        self.security = security
        self.sender = sender
        self.recipients = list(recipients)
        self._username = username
        self._password = password
        self.timeout_s = float(timeout_s)
        self.min_severity: Severity = min_severity
        self._ssl_context = ssl_context
        self.name = f"email:{host}:{self.port}"

    def __repr__(self) -> str:
        return f"EmailSink({self.name!r})"

    def message(self, alert: Alert) -> EmailMessage:
        """The e-mail for ``alert`` (subject ``[rawgate <severity>] <title>``)."""
        msg = EmailMessage()
        msg["Subject"] = f"[rawgate {alert.severity}] {' '.join(alert.title.split())}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(alert.at, localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "rawgate")
        msg["X-Rawgate-Key"] = " ".join(alert.key.split())
        width = max(len(k) for k, _ in _details(alert))
        facts = "\n".join(f"{k:<{width}}  {v}" for k, v in _details(alert))
        msg.set_content(f"{alert.text}\n\n{facts}\n\n-- \nrawgate\n")
        return msg

    def send(self, alert: Alert) -> None:
        """Send one alert; raise :class:`AlertDeliveryError` on any SMTP or network error."""
        msg = self.message(alert)
        context = self._ssl_context or (ssl.create_default_context() if self.security != "none" else None)
        try:
            smtp: smtplib.SMTP
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=context)
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertDeliveryError(f"{self.name}: login refused (SMTP {exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise AlertDeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if refused:
            raise AlertDeliveryError(
                f"{self.name}: recipients refused: {', '.join(sorted(refused))} (sent to the others)"
            )


class LogSink:
    """Write alerts to a :mod:`logging` logger, at the level matching the severity.

    Parameters
    ----------
    logger : logging.Logger, optional
        Default: the ``rawgate.alerts`` logger.
    min_severity : {"info", "warning", "critical"}
        Alerts below this are not logged.
    """

    _LEVELS: ClassVar[dict[str, int]] = {
        "info": logging.INFO,
        "warning": logging.WARNING,
        "critical": logging.CRITICAL,
    }

    #: the log cannot be down: its alerts are not kept in the outbox for retries
    durable = False

    def __init__(self, logger: logging.Logger | None = None, *, min_severity: Severity = "info") -> None:
        self.logger = logger if logger is not None else log
        self.min_severity: Severity = min_severity
        self.name = "log"

    def send(self, alert: Alert) -> None:
        """Log one alert: title and text, then the item's path (once: not when the title names
        it already) and the fields; the dedupe key only at debug level (it repeats the path)."""
        where = ""
        if alert.item is not None and Path(str(alert.item)).name not in alert.title:
            where = f" ({alert.item})"
        extra = "".join(f" {k}={v}" for k, v in alert.fields.items())
        self.logger.log(self._LEVELS[alert.severity], "alert: %s: %s%s%s", alert.title, alert.text, where,
                        f" [{extra.strip()}]" if extra else "")
        self.logger.debug("alert key: %s", alert.key)


# --------------------------------------------------------------------------- the alerter

_STOP = object()
_HOUR_S = 3600.0


class Alerter:
    """De-duplicate, rate-limit and deliver alerts in the background.

    Parameters
    ----------
    sinks : iterable of AlertSink
        Where alerts go; each sees only alerts at or above its ``min_severity``.
    dedupe_window_s : float
        An alert whose key was sent less than this many seconds ago is suppressed.
    max_per_hour : int
        At most this many alerts are accepted per rolling hour (all keys together).
    queue_size : int
        Accepted alerts waiting for delivery; when full, new alerts are dropped (logged).
    clock : callable returning float
        Monotonic time in seconds for the dedupe window and rate limit (injectable for tests).

    Notes
    -----
    One daemon thread delivers queued alerts to the sinks in order. Suppressed and dropped
    alerts are counted, and the next alert sent carries a line
    ``(N similar alerts suppressed)``. Alerts that no sink would take (below every
    ``min_severity``) are ignored and count towards neither the dedupe window nor the rate
    limit.
    """

    def __init__(
        self,
        sinks: Iterable[AlertSink],
        *,
        dedupe_window_s: float = 3600.0,
        max_per_hour: int = 30,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        outbox: AlertOutbox | None = None,
        retry_poll_s: float = 1.0,
    ) -> None:
        if dedupe_window_s < 0 or max_per_hour < 1 or queue_size < 1:
            raise ValueError("need dedupe_window_s >= 0, max_per_hour >= 1, queue_size >= 1")
        self.sinks: tuple[AlertSink, ...] = tuple(sinks)
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique: {names}")
        self.dedupe_window_s = float(dedupe_window_s)
        self.max_per_hour = int(max_per_hour)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._sent_times: collections.deque[float] = collections.deque()
        self._suppressed_pending = 0
        self._suppressed_total = 0
        self._dropped = 0
        self._closed = False
        self._counts = {name: {"delivered": 0, "failed": 0} for name in names}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._pending = 0
        self._idle = threading.Condition()
        self._outbox = outbox
        self._retry_poll_s = float(retry_poll_s)
        self._thread = threading.Thread(target=self._run, name="rawgate-alerts", daemon=True)
        self._thread.start()

    # -- caller side

    def alert(self, alert: Alert) -> bool:
        """Queue ``alert`` for delivery unless de-duplicated or rate-limited.

        Returns
        -------
        bool
            True if queued; False if suppressed (same key inside the dedupe window, or over
            ``max_per_hour``), dropped (queue full), ignored (no sink takes its severity) or
            the alerter is closed. Never blocks on delivery and never raises for it.
        """
        rank = SEVERITY_RANK[alert.severity]
        if not any(rank >= SEVERITY_RANK[s.min_severity] for s in self.sinks):
            return False
        with self._lock:
            if self._closed:
                log.warning("alerter closed; alert %r not sent", alert.key)
                return False
            now = self._clock()
            last = self._last_sent.get(alert.key)
            while self._sent_times and now - self._sent_times[0] >= _HOUR_S:
                self._sent_times.popleft()
            if (last is not None and now - last < self.dedupe_window_s) or len(
                self._sent_times
            ) >= self.max_per_hour:
                self._suppressed_pending += 1
                self._suppressed_total += 1
                return False
            pending = self._suppressed_pending
            outgoing = alert
            if pending:
                noun = "alert" if pending == 1 else "alerts"
                outgoing = dataclasses.replace(alert, text=f"{alert.text}\n({pending} similar {noun} suppressed)")
            with self._idle:
                self._pending += 1
            try:
                self._queue.put_nowait(outgoing)
            except queue.Full:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
                self._dropped += 1
                self._suppressed_pending += 1
                log.warning("alert queue full (%d waiting); dropped alert %r", self._queue.maxsize, alert.key)
                return False
            self._suppressed_pending = 0
            self._last_sent[alert.key] = now
            self._sent_times.append(now)
            if len(self._last_sent) > 4096:  # forget keys whose window has passed
                self._last_sent = {
                    k: t for k, t in self._last_sent.items() if now - t < self.dedupe_window_s
                }
            return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued alert has been handed to its sinks.

        Parameters
        ----------
        timeout_s : float
            Longest wait, seconds (wall clock, not the injected clock).

        Returns
        -------
        bool
            True if the queue drained in time.
        """
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop accepting alerts, deliver those queued, and stop the thread.

        Parameters
        ----------
        timeout_s : float
            Longest wait for queued deliveries, seconds.

        Returns
        -------
        bool
            True if the delivery thread finished in time (it is a daemon thread either way).
        """
        with self._lock:
            already = self._closed
            self._closed = True
        if not already:
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:
                return False
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink name: ``{"delivered": n, "failed": n}`` (a copy)."""
        with self._lock:
            return {name: dict(c) for name, c in self._counts.items()}

    @property
    def suppressed(self) -> int:
        """Alerts suppressed by the dedupe window or the rate limit since start."""
        with self._lock:
            return self._suppressed_total

    @property
    def dropped(self) -> int:
        """Alerts dropped because the delivery queue was full, since start."""
        with self._lock:
            return self._dropped

    # -- delivery thread

    @property
    def undelivered(self) -> int | None:
        """Deliveries waiting in the outbox for a retry (None without an outbox). Call from the
        thread that owns the outbox only after :meth:`close`."""
        return None if self._outbox is None else self._outbox.waiting()

    def _run(self) -> None:
        if self._outbox is not None:
            gone = self._outbox.drop_sinks_other_than({s.name for s in self.sinks})
            if gone:
                log.info("dropped %d undelivered alert(s) for sinks no longer configured", gone)
        while True:
            try:
                item = self._queue.get(timeout=self._retry_poll_s if self._outbox is not None else None)
            except queue.Empty:
                item = None
            if item is _STOP:
                if self._outbox is not None:
                    self._outbox.close()  # what is left is retried at the next start
                return
            if item is not None:
                try:
                    self._deliver(item)
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()
            if self._outbox is not None:
                self._retry_due()

    def _send(self, sink: AlertSink, alert: Alert) -> str | None:
        """Hand ``alert`` to ``sink``; None when it took it, else why not."""
        try:
            sink.send(alert)
        except AlertDeliveryError as exc:
            log.warning("alert %r not delivered by %s: %s", alert.key, sink.name, exc)
            error: str | None = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken sink must not stop the others
            log.error("alert %r: sink %s failed unexpectedly: %s: %s", alert.key, sink.name, type(exc).__name__, exc)
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None
        with self._lock:
            self._counts[sink.name]["delivered" if error is None else "failed"] += 1
        return error

    def _deliver(self, alert: Alert) -> None:
        rank = SEVERITY_RANK[alert.severity]
        for sink in self.sinks:
            if rank < SEVERITY_RANK[sink.min_severity]:
                continue
            keep = self._outbox is not None and getattr(sink, "durable", True)
            row = self._outbox.add(alert.to_dict(), sink.name) if keep else None  # on disk before it is sent
            error = self._send(sink, alert)
            if row is not None:
                if error is None:
                    self._outbox.delivered(row)
                else:
                    wait = self._outbox.failed(row, error)
                    log.info("alert %r kept for %s; next try in %.1f s", alert.key, sink.name, wait)

    def _retry_due(self) -> None:
        assert self._outbox is not None
        by_name = {s.name: s for s in self.sinks}
        for row, name, data, attempts in self._outbox.due():
            sink = by_name.get(name)
            if sink is None:
                self._outbox.delivered(row)
                continue
            error = self._send(sink, Alert.from_dict(data))
            if error is None:
                self._outbox.delivered(row)
                log.info("alert %r delivered by %s after %d failed attempt(s)", data.get("key"), name, attempts)
            else:
                self._outbox.failed(row, error)


def build_alerter(
    cfg: AlertsConfig,
    *,
    environ: Mapping[str, str] | None = None,
    credentials_dir: str | os.PathLike[str] | None = None,
    logger: logging.Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
    outbox_path: str | os.PathLike[str] | None = None,
) -> Alerter:
    """Build the :class:`Alerter` an ``alerts:`` section describes, resolving its secrets.

    Parameters
    ----------
    cfg : AlertsConfig
        The validated section.
    environ : mapping, optional
        Environment for ``*_env`` secrets and ``$CREDENTIALS_DIRECTORY`` (default ``os.environ``).
    credentials_dir : path, optional
        Overrides ``$CREDENTIALS_DIRECTORY`` for ``*_credential`` secrets.
    logger : logging.Logger, optional
        For the log sink (default: ``rawgate.alerts``).
    clock : callable returning float
        Monotonic seconds for dedupe and rate limiting.
    outbox_path : path, optional
        SQLite file keeping undelivered alerts for retries, across restarts (the daemon: in its
        state folder); None: an alert a sink refuses is lost.

    Raises
    ------
    AlertConfigError
        At start-up, naming the section and the variable or file when a secret is missing.
    """
    sinks: list[AlertSink] = []
    if cfg.log:
        sinks.append(LogSink(logger))
    seen: dict[str, int] = {}
    for i, hook in enumerate(cfg.webhooks):
        try:
            url = resolve_secret(hook.url_env, hook.url_credential, environ=environ, credentials_dir=credentials_dir)
            sink = WebhookSink(url, hook.flavor, hook.timeout_s, min_severity=hook.min_severity)
        except AlertConfigError as exc:
            raise AlertConfigError(f"alerts.webhooks[{i}]: {exc}") from None
        n = seen[sink.name] = seen.get(sink.name, 0) + 1
        if n > 1:
            sink.name = f"{sink.name}#{n}"
        sinks.append(sink)
    if cfg.email is not None:
        e = cfg.email
        password = None
        if e.password_env is not None or e.password_credential is not None:
            try:
                password = resolve_secret(
                    e.password_env, e.password_credential, environ=environ, credentials_dir=credentials_dir
                )
            except AlertConfigError as exc:
                raise AlertConfigError(f"alerts.email: {exc}") from None
        sinks.append(
            EmailSink(
                e.host,
                e.port,
                e.security,
                sender=e.sender,
                recipients=e.recipients,
                username=e.username,
                password=password,
                timeout_s=e.timeout_s,
                min_severity=e.min_severity,
            )
        )
    return Alerter(
        sinks,
        dedupe_window_s=cfg.dedupe_window_s,
        max_per_hour=cfg.max_per_hour,
        queue_size=cfg.queue_size,
        clock=clock,
        outbox=None if outbox_path is None else AlertOutbox(outbox_path, retry_base_s=cfg.retry_base_s,
                                                             retry_max_s=cfg.retry_max_s),
        retry_poll_s=min(1.0, cfg.retry_base_s),
    )
