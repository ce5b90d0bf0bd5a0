"""Golden tests of the parse+normalize mappings: tests/golden/<name>.hl7 -> <name>.json, exactly.

Each input is a synthetic message written for this test (no real data). The expected file holds
every event of the message (type, Kafka key, record) with instants as ISO strings and bytes as
hex. After an intended mapping change, regenerate and review the diff:

    HL7BUS_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_events_golden.py

Every golden event must also encode with its schema and reach a research topic through the
default policy with the leak check on.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from samples import envelope

from hl7bus.hl7v2 import parse
from hl7bus.schemas import codec
from hl7bus.streams.deid import Policy, Pseudonymizer, deidentify
from hl7bus.streams.deid.review import jsonable
from hl7bus.streams.parse import events_from_raw
from hl7bus.streams.terminology import Terminology

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("HL7BUS_REGEN_GOLDEN") == "1"
SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"golden-test-key-0123456789abcdef", "k1")
CASES = sorted(p.stem for p in GOLDEN.glob("*.hl7"))


def golden_envelope(name: str) -> dict[str, Any]:
    message = parse((GOLDEN / f"{name}.hl7").read_bytes())
    return envelope(message, "golden", received_at=datetime(2026, 3, 5, 3, 0, tzinfo=UTC))


def terminology() -> Terminology:
    return Terminology.load([GOLDEN / "codes.csv"])


def test_every_case_has_its_expectation() -> None:
    assert len(CASES) >= 10
    for name in CASES:
        assert (GOLDEN / f"{name}.json").exists() or REGENERATE, f"{name}.json is missing"


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    events = events_from_raw(golden_envelope(name), SEOUL, terminology())
    actual = [{"type": e.type, "key": e.key, "record": jsonable(e.record)} for e in events]
    expected_file = GOLDEN / f"{name}.json"
    if REGENERATE:
        text = json.dumps(actual, indent=1, ensure_ascii=False, sort_keys=False) + "\n"
        expected_file.write_text(text, encoding="utf-8")
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    assert actual == expected

    policy = Policy.load(None)
    for event in events:
        encoded = codec.encode(event.type, event.record)
        assert codec.decode(encoded) == (event.type, event.record)
        research = deidentify(event.type, event.record, policy, KEY, leak_check=True)
        codec.encode(event.type, research)
        assert research["patient_key"] != event.record["patient_key"] or not research["patient_key"]


def test_event_ids_are_unique_and_stable() -> None:
    seen: set[str] = set()
    for name in CASES:
        once = [e.record["event_id"] for e in events_from_raw(golden_envelope(name), SEOUL)]
        again = [e.record["event_id"] for e in events_from_raw(golden_envelope(name), SEOUL)]
        assert once == again
        assert seen.isdisjoint(once), name
        seen.update(once)
        assert len(set(once)) == len(once), name
