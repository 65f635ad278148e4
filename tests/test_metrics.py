"""Prometheus metrics: scraped over real HTTP on 127.0.0.1 and parsed with prometheus_client."""

from __future__ import annotations

import math
import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from rawgate.daemon.metrics import Metrics, MetricsConfig, write_textfile


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


@pytest.fixture
def served():
    m = Metrics(MetricsConfig(port=0))
    port = m.serve()
    try:
        yield m, port
    finally:
        m.close()


def test_scrape_over_http(served):
    m, port = served
    m.set_items_by_state({"discovered": 3, "archived": 5, "quarantined": 0})
    m.add_bytes(1000, 250)
    m.add_bytes(1000, 250)
    m.observe_item("approved", 0.3)
    m.observe_item("approved", 42.0)
    m.observe_item("quarantined", None)
    m.set_epsilon("ks", "jpegxl", 0.012)
    m.set_epsilon("iou", "zstd", math.inf)
    m.set_epsilon("dice", "zstd", math.nan)
    m.set_queue_depth(7)
    m.set_calibration_age("cam0", 12.5)
    m.count_alert("warning")
    m.count_alert("warning")
    m.set_up("observer:/data", True)
    m.set_up("workers", False)

    s = _samples(_scrape(port))
    assert _value(s, "rawgate_items", state="discovered") == 3
    assert _value(s, "rawgate_items", state="archived") == 5
    assert _value(s, "rawgate_items", state="quarantined") == 0  # zeros are exposed too
    assert _value(s, "rawgate_raw_bytes_total") == 2000
    assert _value(s, "rawgate_archived_bytes_total") == 500
    assert _value(s, "rawgate_compression_ratio") == pytest.approx(4.0)
    assert _value(s, "rawgate_items_processed_total", outcome="approved") == 2
    assert _value(s, "rawgate_items_processed_total", outcome="quarantined") == 1
    assert _value(s, "rawgate_complete_to_archived_seconds_count") == 2
    assert _value(s, "rawgate_complete_to_archived_seconds_sum") == pytest.approx(42.3)
    assert _value(s, "rawgate_complete_to_archived_seconds_bucket", le="0.5") == 1
    assert _value(s, "rawgate_complete_to_archived_seconds_bucket", le="3600.0") == 2
    assert _value(s, "rawgate_epsilon", family="jpegxl", statistic="ks") == pytest.approx(0.012)
    assert _value(s, "rawgate_epsilon", family="zstd", statistic="iou") == math.inf
    assert math.isnan(_value(s, "rawgate_epsilon", family="zstd", statistic="dice"))
    assert _value(s, "rawgate_queue_depth") == 7
    assert _value(s, "rawgate_calibration_age_days", camera="cam0") == 12.5
    assert _value(s, "rawgate_alerts_total", severity="warning") == 2
    assert _value(s, "rawgate_component_up", component="observer:/data") == 1
    assert _value(s, "rawgate_component_up", component="workers") == 0

    # a later update shows in the next scrape
    m.set_items_by_state({"discovered": 0})
    assert _value(_samples(_scrape(port)), "rawgate_items", state="discovered") == 0


def test_compression_ratio_without_archived_bytes():
    m = Metrics()
    assert math.isnan(_value(_samples(m.render().decode()), "rawgate_compression_ratio"))
    m.add_bytes(100, 0)  # no division by zero
    assert math.isnan(_value(_samples(m.render().decode()), "rawgate_compression_ratio"))
    m.add_bytes(0, 50)
    assert _value(_samples(m.render().decode()), "rawgate_compression_ratio") == pytest.approx(2.0)
    with pytest.raises(ValueError):
        m.add_bytes(-1, 0)
    assert _value(_samples(m.render().decode()), "rawgate_raw_bytes_total") == 100


def test_listens_on_localhost_only_by_default():
    assert MetricsConfig().host == "127.0.0.1" and MetricsConfig().is_loopback
    m = Metrics(MetricsConfig(port=0))
    port = m.serve()
    try:
        assert m.address == ("127.0.0.1", port)
        assert m._server.socket.getsockname() == ("127.0.0.1", port)
        with pytest.raises(RuntimeError):
            m.serve()
    finally:
        m.close()
    assert m.address is None
    m.close()  # idempotent


def test_two_instances_do_not_clash():
    with Metrics(MetricsConfig(port=0)) as a, Metrics(MetricsConfig(port=0)) as b:
        pa, pb = a.serve(), b.serve()
        assert pa != pb
        a.set_queue_depth(1)
        b.set_queue_depth(2)
        a.count_alert("critical")
        assert _value(_samples(_scrape(pa)), "rawgate_queue_depth") == 1
        sb = _samples(_scrape(pb))
        assert _value(sb, "rawgate_queue_depth") == 2
        assert ("rawgate_alerts_total", frozenset({("severity", "critical")})) not in sb


def test_write_textfile_atomic(tmp_path):
    m = Metrics()
    m.set_calibration_age("cam0", 3.0)
    path = tmp_path / "rawgate.prom"
    path.write_text("stale half-written junk {")
    before = os.stat(path).st_ino
    write_textfile(m, path)
    assert os.stat(path).st_ino != before  # replaced by a rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rawgate.prom"]  # no temp file left
    s = _samples(path.read_text())
    assert _value(s, "rawgate_calibration_age_days", camera="cam0") == 3.0

    with pytest.raises(OSError):
        write_textfile(m, tmp_path / "missing-dir" / "rawgate.prom")


def test_config():
    c = MetricsConfig()
    assert (c.enabled, c.host, c.port) == (True, "127.0.0.1", 9464)
    assert MetricsConfig(port=0).port == 0
    # a host that is not loopback needs consent; a malformed one is refused
    with pytest.raises(ValidationError, match="allow_remote"):
        MetricsConfig(host="0.0.0.0")
    exposed = MetricsConfig(host="0.0.0.0", allow_remote=True)
    assert not exposed.is_loopback
    assert MetricsConfig(host="::1").is_loopback and MetricsConfig(host=" localhost ").host == "localhost"
    assert MetricsConfig(host="scope-pc.lab.example", allow_remote=True).host == "scope-pc.lab.example"
    with pytest.raises(ValidationError, match="neither an IP address nor a host name"):
        MetricsConfig(host="not a host!!", allow_remote=True)
    assert "expose" in MetricsConfig.model_fields["host"].description
    for bad in ({"port": -1}, {"port": 65536}, {"prt": 1}):
        with pytest.raises(ValidationError):
            MetricsConfig(**bad)
    with pytest.raises(ValidationError):
        c.port = 1  # frozen
