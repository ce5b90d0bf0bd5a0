"""The pure parts of `hl7bus dlq` and `hl7bus replay`: ids and bounds, redaction, where a
DLQ record is resubmitted, the diff against stored events; and the worker's replay header."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from samples import envelope, first

from hl7bus.connectors.envelope import build_envelope, dlq_headers
from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.ops.dlq import (
    REDACTED,
    Entry,
    NotResubmittable,
    parse_id,
    plan_resubmit,
    shown,
)
from hl7bus.ops.replay import Bound, Chosen, diff
from hl7bus.schemas import codec, topics
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.runtime import _is_replay
from hl7bus.streams.steps import REPLAY_HEADER, DeidSettings, parse_step

SEOUL = ZoneInfo("Asia/Seoul")
CATALOG = topics.TopicCatalog.load(topics.TopicsConfig(prefix="t."))


def _entry(value: bytes, headers: list[tuple[str, bytes]], key: bytes | None = b"lab") -> Entry:
    found = dict(headers)
    return Entry(
        0,
        7,
        datetime(2026, 12, 1, tzinfo=UTC),
        key,
        value,
        headers,
        found["hl7bus.stage"].decode(),
        found["hl7bus.reason"].decode(),
        "raw",
        "RawMessage",
        "lab",
        None,
    )


def _no_deid() -> Any:
    raise AssertionError("not needed")


def _bad_charset() -> bytes:
    """An ADT whose MSH-18 names a charset no codec knows: the listener refuses it."""
    raw = first("ADT^A01").to_bytes()
    msh, rest = raw.split(b"\r", 1)
    fields = msh.split(b"|")
    fields += [b""] * (18 - len(fields))
    fields[17] = b"NO-SUCH-CHARSET"
    return b"|".join(fields) + b"\r" + rest


def test_ids_and_bounds_parse_or_name_the_problem() -> None:
    assert parse_id("3:14") == "3:14" and parse_id("14") == "0:14"
    with pytest.raises(ValueError, match="record id 'x:1'"):
        parse_id("x:1")
    assert Bound.parse("2:10", "--from") == Bound(offset=10, partition=2)
    assert Bound.parse("10", "--from") == Bound(offset=10)
    assert Bound.parse("2026-12-04T10:00:00", "--to").time == datetime(2026, 12, 4, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="--to 'yesterday'"):
        Bound.parse("yesterday", "--to")


def test_show_redacts_every_field_not_classed_none_unless_revealed() -> None:
    message = first("ADT^A01")
    record = envelope(message, "lab") | {"patient_key": "lab|HOSP|12345"}
    entry = _entry(codec.encode("RawMessage", record), dlq_headers("parsing", "hl7_parse_error"))
    name = message.get("PID-5.1")
    assert name
    redacted = shown(entry, reveal=False)
    text = repr(redacted)
    assert name not in text and "12345" not in text
    assert redacted["value"]["patient_key"] == REDACTED
    assert redacted["value"]["raw"].startswith(f"{REDACTED} {len(record['raw'])} bytes")
    assert "PID" in redacted["value"]["raw"]
    assert redacted["value"]["feed"] == "lab"  # PHI class none
    revealed = shown(entry, reveal=True)
    assert name in revealed["value"]["raw"] and revealed["value"]["patient_key"] == "lab|HOSP|12345"


def test_a_listener_record_is_resubmitted_once_its_feed_is_fixed() -> None:
    built = build_envelope(_bad_charset(), feed="lab", peer="p", require_header=True)
    assert built.message is None and built.reason == "charset"
    entry = _entry(codec.encode("RawMessage", built.record), dlq_headers("receiving", "charset"))
    with pytest.raises(NotResubmittable, match=r"still refused .*\(charset\)"):
        plan_resubmit(entry, CATALOG, MllpConfig(feed="lab"), _no_deid)
    plan = plan_resubmit(entry, CATALOG, MllpConfig(feed="lab", charset="utf-8"), _no_deid)
    assert plan.topic == "t.hl7.raw"
    assert (REPLAY_HEADER, b"dlq/0:7") in plan.headers
    _, rebuilt = codec.decode(plan.value)
    assert rebuilt["raw"] == built.record["raw"] and rebuilt["patient_key"]
    assert plan.key == rebuilt["patient_key"].encode()


def test_cut_frames_are_not_resubmitted_and_worker_failures_go_back_as_they_are() -> None:
    value = codec.encode("RawMessage", envelope(first("ADT^A01"), "lab"))
    cut = _entry(value, dlq_headers("receiving", "oversize"))
    with pytest.raises(NotResubmittable, match="oversize keeps no whole message"):
        plan_resubmit(cut, CATALOG, MllpConfig(), _no_deid)
    parsed = _entry(value, dlq_headers("normalizing", "event_invalid"), key=b"pk")
    plan = plan_resubmit(parsed, CATALOG, MllpConfig(), _no_deid)
    assert (plan.topic, plan.key, plan.value) == ("t.hl7.raw", b"pk", value)
    sunk = _entry(
        b"research-bytes",
        [*dlq_headers("sinking", "refused"), ("hl7bus.topic", b"t.research.patient")],
    )
    plan = plan_resubmit(sunk, CATALOG, MllpConfig(), _no_deid)
    assert plan.topic == "t.research.patient"
    assert [n for n, _ in plan.headers] == ["hl7bus.event_type", REPLAY_HEADER]


def test_diff_names_changed_fields_new_events_and_failures() -> None:
    value = codec.encode("RawMessage", envelope(first("ADT^A01"), "lab"))
    events = [codec.decode(o.value)[1] for o in parse_step(None, value, SEOUL)]
    stored = {e["event_id"]: dict(e) for e in events}
    first_id = events[0]["event_id"]
    stored[first_id]["message_type"] = "OLD^MAP"
    del stored[events[-1]["event_id"]]
    broken = codec.encode("RawMessage", envelope(first("ADT^A01"), "lab") | {"raw": b"junk"})
    changes = diff([Chosen(0, 1, None, value), Chosen(0, 2, None, broken)], stored, SEOUL)
    by_id = {c.event_id: c for c in changes}
    assert by_id[first_id].status == "changed" and by_id[first_id].fields == ("message_type",)
    assert by_id[events[-1]["event_id"]].status == "new"
    assert changes[-1].status == "dlq" and changes[-1].source == "0/2"
    if len(events) > 2:
        assert by_id[events[1]["event_id"]].status == "same"


def test_the_runtime_reads_the_replay_header_from_faust_headers() -> None:
    assert _is_replay({REPLAY_HEADER: b"raw/0/1"})
    assert _is_replay([(REPLAY_HEADER.encode(), b"x")])
    assert not _is_replay({"hl7bus.event_type": b"RawMessage"}) and not _is_replay(None)


def test_a_deidentifying_record_is_de_identified_again_into_its_research_topic() -> None:
    value = codec.encode("RawMessage", envelope(first("ADT^A01"), "lab"))
    event = next(o for o in parse_step(b"k", value, SEOUL) if o.topic_id == topics.EVENTS)
    entry = _entry(event.value, dlq_headers("deidentifying", "leak")[1:], key=None)
    deid = DeidSettings(
        Policy.load("kr-pseudonym"), Pseudonymizer(b"0123456789abcdef0123456789abcdef", "k1"), True
    )
    plan = plan_resubmit(entry, CATALOG, MllpConfig(), lambda: deid)
    event_type, _ = codec.decode(event.value)
    assert plan.topic == f"t.{topics.research(event_type)}"
    names = [n for n, _ in plan.headers]
    assert "hl7bus.policy" in names and REPLAY_HEADER in names
    _, research = codec.decode(plan.value)
    assert research["patient_key"] != codec.decode(event.value)[1]["patient_key"]
