"""File names that are not UTF-8: stored losslessly, shown and archived as valid UTF-8."""

from __future__ import annotations

import os

from hypothesis import given, strategies as st

from rawgate.daemon.alerts import Alert
from rawgate.daemon.names import db_path, from_db_path, is_utf8, shown, utf8_safe

names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b)


@given(names)
def test_any_name_round_trips_and_shows_as_utf8(raw):
    name = os.fsdecode(raw)
    stored = db_path(name)
    assert from_db_path(stored) == name and os.fsencode(from_db_path(stored)) == raw
    assert isinstance(stored, str) == is_utf8(name)
    for text in (shown(name), utf8_safe(name)):
        text.encode("utf-8")  # never raises
    if is_utf8(name):
        assert shown(name) == utf8_safe(name) == name == stored


def test_examples():
    name = os.fsdecode(b"a/bad\xffname\xc3\xa9.tif")
    assert shown(name) == "a/bad\\xffnameé.tif"
    assert utf8_safe(name) == "a/bad~FFnameé.tif"
    assert db_path(name) == b"a/bad\xffname\xc3\xa9.tif"
    assert shown(3) == 3 and db_path(None) is None


def test_an_alert_about_such_a_file_can_be_sent():
    name = os.fsdecode(b"/acq/bad\xffname.tif")
    a = Alert(key=f"quarantined:{name}", severity="critical", title=f"quarantined: {name}", text=name, item=name)
    for v in (a.key, a.title, a.text, a.item):
        v.encode("utf-8")
    assert a.item == "/acq/bad\\xffname.tif"
