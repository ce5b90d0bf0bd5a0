"""Duplicate sends: same feed, MSH-10 and content within the window are recognized, a reused
control id with other content is not, and the same raw record again is a redelivery (pure
part)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from samples import envelope, first

from hl7bus.schemas import codec
from hl7bus.streams.steps import Sighting, Verdict, dedupe_check

Store = dict[str, list[Sighting]]


def _envelope(value: bytes) -> dict[str, Any] | None:
    """The value as the worker hands it to the check: decoded, None when it does not decode."""
    try:
        return codec.decode(value)[1]
    except codec.CodecError:
        return None


def _seen(table: Store) -> Callable[[str], list[Sighting]]:
    return lambda key: table.get(key, [])


WINDOW_US = 3600 * 1_000_000


def test_duplicate_sends_are_recognized_within_the_window() -> None:
    raw = envelope(first("ADT^A04"))
    value = codec.encode("RawMessage", raw)
    table: Store = {}
    sighting, verdict = dedupe_check(_envelope(value), (0, 7), _seen(table), WINDOW_US)
    assert verdict is Verdict.NEW and sighting is not None
    assert sighting.key == f"test|{raw['control_id']}" and sighting.feed == "test"
    table[sighting.key] = [sighting]

    later = raw["received_at"] + timedelta(seconds=30)
    resent = codec.encode("RawMessage", {**raw, "received_at": later})
    assert dedupe_check(_envelope(resent), (1, 3), _seen(table), WINDOW_US)[1] is Verdict.RESENT
    assert dedupe_check(_envelope(value), (0, 7), _seen(table), WINDOW_US)[1] is Verdict.REDELIVERED
    a_day_later = codec.encode("RawMessage", {**raw, "received_at": later + timedelta(1)})
    assert dedupe_check(_envelope(a_day_later), (0, 9), _seen(table), WINDOW_US)[1] is Verdict.NEW
    other_feed = codec.encode("RawMessage", {**raw, "feed": "other"})
    assert dedupe_check(_envelope(other_feed), (0, 9), _seen(table), WINDOW_US)[1] is Verdict.NEW


def test_a_reused_control_id_with_other_content_is_new_content() -> None:
    raw = envelope(first("ADT^A04"))
    table: Store = {}
    sighting, _ = dedupe_check(
        _envelope(codec.encode("RawMessage", raw)), (0, 1), _seen(table), WINDOW_US
    )
    assert sighting is not None
    table[sighting.key] = [sighting]
    changed = {**raw, "raw": raw["raw"].replace(b"ADT^A04", b"ADT^A08", 1)}
    again, verdict = dedupe_check(
        _envelope(codec.encode("RawMessage", changed)), (0, 2), _seen(table), WINDOW_US
    )
    assert verdict is Verdict.REUSED and again is not None and again.digest != sighting.digest
    # A sighting kept before digests were (digest None) is taken as the same content.
    table[sighting.key] = [Sighting(sighting.key, "test", sighting.received_us, None)]
    assert (
        dedupe_check(
            _envelope(codec.encode("RawMessage", changed)), (0, 2), _seen(table), WINDOW_US
        )[1]
        is Verdict.RESENT
    )


def test_records_without_control_id_or_undecodable_are_never_duplicates() -> None:
    raw = envelope(first("ADT^A04"))
    value = codec.encode("RawMessage", {**raw, "control_id": None})
    seen = [Sighting("test|x", "test", 0, None)]
    assert dedupe_check(_envelope(value), None, lambda _: seen, WINDOW_US) == (None, Verdict.NEW)
    assert dedupe_check(_envelope(b"garbage"), None, lambda _: seen, WINDOW_US) == (
        None,
        Verdict.NEW,
    )
