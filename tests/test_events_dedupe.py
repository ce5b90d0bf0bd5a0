"""Duplicate sends: same feed and MSH-10 within the window are recognized (pure part)."""

from __future__ import annotations

from datetime import timedelta

from samples import envelope, first

from hl7bus.schemas import codec
from hl7bus.streams.steps import dedupe_check

WINDOW_US = 3600 * 1_000_000


def test_duplicate_sends_are_recognized_within_the_window() -> None:
    raw = envelope(first("ADT^A04"))
    value = codec.encode("RawMessage", raw)
    table: dict[str, int] = {}
    sighting, duplicate = dedupe_check(value, table.get, WINDOW_US)
    assert not duplicate and sighting is not None
    assert sighting.key == f"test|{raw['control_id']}"
    table[sighting.key] = sighting.received_us

    again = codec.encode("RawMessage", {**raw, "received_at": raw["received_at"] + timedelta(1)})
    assert dedupe_check(value, table.get, WINDOW_US) == (None, True)  # redelivered record
    assert dedupe_check(again, table.get, WINDOW_US)[1] is False  # a day later: outside window
    other_feed = codec.encode("RawMessage", {**raw, "feed": "other"})
    assert dedupe_check(other_feed, table.get, WINDOW_US)[1] is False


def test_records_without_control_id_or_undecodable_are_never_duplicates() -> None:
    raw = envelope(first("ADT^A04"))
    value = codec.encode("RawMessage", {**raw, "control_id": None})
    assert dedupe_check(value, lambda _: 0, WINDOW_US) == (None, False)
    assert dedupe_check(b"garbage", lambda _: 0, WINDOW_US) == (None, False)
