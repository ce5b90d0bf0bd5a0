"""The pure stream steps: parse (raw -> events) and deidentify (events -> research), fail closed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from samples import envelope, feed, first

from hl7bus.schemas import codec, topics
from hl7bus.streams.deid import (
    DeidConfig,
    DeidError,
    KeyConfigError,
    NoKeyError,
    Policy,
    PolicyError,
    Pseudonymizer,
    deidentify,
    load_key,
    profile_text,
)
from hl7bus.streams.normalize import iso_date, numeric_with_comparator, to_utc
from hl7bus.streams.parse import events_from_raw
from hl7bus.streams.steps import DeidSettings, deidentify_step, parse_step

SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"0123456789abcdef0123456789abcdef", "k1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20261127083000+0900", datetime(2026, 11, 26, 23, 30, tzinfo=UTC)),
        ("20261127083000", datetime(2026, 11, 26, 23, 30, tzinfo=UTC)),  # feed zone: Seoul
        ("20261127083000-0500", datetime(2026, 11, 27, 13, 30, tzinfo=UTC)),
        ("202611270830", datetime(2026, 11, 26, 23, 30, tzinfo=UTC)),
        ("20261127", datetime(2026, 11, 26, 15, 0, tzinfo=UTC)),
        ("20261127083000.25+0000", datetime(2026, 11, 27, 8, 30, 0, 250000, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("2026-11-27", None),
        ("20261327", None),
    ],
)
def test_timestamps_to_utc(value: str | None, expected: datetime | None) -> None:
    assert to_utc(value, SEOUL) == expected


def test_small_normalizers() -> None:
    assert iso_date("19630811") == "1963-08-11"
    assert iso_date("196308") == "1963-08"
    assert iso_date("x") is None
    assert numeric_with_comparator("<0.5") == (0.5, "<")
    assert numeric_with_comparator(">= 100") == (100.0, ">=")
    assert numeric_with_comparator("13.2") == (13.2, None)
    assert numeric_with_comparator("positive") == (None, None)


def test_adt_becomes_one_patient_event() -> None:
    message = first("ADT^A01")
    events = events_from_raw(envelope(message), SEOUL)
    assert [e.type for e in events] == ["Patient", "Encounter"]  # issue 5: PV1 -> Encounter
    event = events[0]
    record = event.record
    assert record["patient_key"] == f"test|SNUH|{message.get('PID-3.1')}"
    assert event.key == record["patient_key"]
    assert record["mrn"] == message.get("PID-3.1")
    assert record["family_name"] == message.get("PID-5.1")
    assert record["given_name"] == message.get("PID-5.2")
    assert record["national_id"] == message.get("PID-19")
    assert record["phone"] == message.get("PID-13.1")
    assert record["birth_year"] == int((message.get("PID-7") or "")[:4])
    assert record["sex"] == message.get("PID-8")
    assert record["event_time"] == to_utc(message.get("EVN-2"), SEOUL)
    assert record["source_control_id"] == message.control_id


def test_oru_becomes_one_observation_per_obx() -> None:
    message = first("ORU^R01")
    everything = events_from_raw(envelope(message), SEOUL)
    assert {e.type for e in everything} == {"Order", "Observation"}  # issue 5: ORC/OBR -> Order
    events = [e for e in everything if e.type == "Observation"]
    obx = list(message.segments("OBX"))
    assert len(events) == len(obx)
    for event, segment in zip(events, obx, strict=True):
        assert event.record["code"] == segment.get("3.1")
        assert event.record["code_system"] == "LN"
        assert event.record["units"] == segment.get("6.1")
        assert event.record["result_status"] == segment.get("11")
        assert event.record["order_code"] == message.get("OBR-4.1")
    assert len({e.record["event_id"] for e in events}) == len(events)


def test_sn_value_with_comparator() -> None:
    message = next(m for m in feed() if any(s.get("2") == "SN" for s in m.segments("OBX")))
    events = events_from_raw(envelope(message), SEOUL)
    sn = next(e for e in events if e.record.get("value_type") == "SN")
    assert sn.record["comparator"] == "<"
    assert sn.record["value_numeric"] is not None


def test_event_ids_are_deterministic() -> None:
    message = first("ORU^R01")
    once = [e.record["event_id"] for e in events_from_raw(envelope(message), SEOUL)]
    again = [e.record["event_id"] for e in events_from_raw(envelope(message), SEOUL)]
    other_feed = [e.record["event_id"] for e in events_from_raw(envelope(message, "other"), SEOUL)]
    assert once == again
    assert set(once).isdisjoint(other_feed)


def test_unmapped_message_types_give_one_generic_event() -> None:
    message = first("ADT^A01")
    raw = envelope(message)
    raw["raw"] = raw["raw"].replace(b"ADT^A01^ADT_A01", b"SIU^S12^SIU_S12")
    [event] = events_from_raw(raw, SEOUL)  # issue 5: nothing is lost, the tree is carried
    assert event.type == "Generic"
    assert event.record["segment_names"] == message.segment_names


def test_parse_step_routes_garbage_to_the_dlq() -> None:
    [out] = parse_step(b"k", b"not avro at all", SEOUL)
    assert out.topic_id == topics.DLQ
    assert dict(out.headers) == {
        "hl7bus.stage": b"parsing",
        "hl7bus.reason": b"undecodable_envelope",
    }

    raw = envelope(first("ADT^A01"))
    raw["raw"] = b"this is no HL7 message"
    [out] = parse_step(b"k", codec.encode("RawMessage", raw), SEOUL)
    assert out.topic_id == topics.DLQ
    assert dict(out.headers)["hl7bus.reason"] == b"hl7_parse_error"


def test_parse_step_encodes_events_keyed_by_patient() -> None:
    message = first("ADT^A04")
    outputs = parse_step(None, codec.encode("RawMessage", envelope(message)), SEOUL)
    assert [codec.decode(out.value)[0] for out in outputs] == ["Patient", "Encounter"]
    for out in outputs:
        assert out.topic_id == topics.EVENTS
        assert out.key == f"test|SNUH|{message.get('PID-3.1')}".encode()


# -- de-identification ----------------------------------------------------------------------


def _patient() -> dict[str, Any]:
    [event] = [e for e in events_from_raw(envelope(first("ADT^A01")), SEOUL) if e.type == "Patient"]
    return event.record


def test_policy_is_an_allow_list() -> None:
    policy = Policy.load(None)
    source = _patient()
    out = deidentify("Patient", source, policy, KEY)
    named = policy.actions["Patient"]
    for field in out:
        assert named.get(field, "drop") != "drop", field  # dropped fields are absent
    for field in ("mrn", "family_name", "given_name", "street", "phone", "national_id"):
        assert field not in out
    assert out["sex"] == source["sex"]
    assert out["patient_key"] == KEY(source["patient_key"])
    assert out["pseudonym_key_id"] == "k1"


def test_pseudonyms_depend_on_the_key() -> None:
    policy = Policy.load(None)
    other = Pseudonymizer(b"another key of at least 16 bytes", "k2")
    a = deidentify("Patient", _patient(), policy, KEY)
    b = deidentify("Patient", _patient(), policy, other)
    assert a["patient_key"] != b["patient_key"]
    assert b["pseudonym_key_id"] == "k2"


def _policy_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"name: t\nevents:\n  Patient:\n{body}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    phone: keep\n", "Patient.phone: a direct identifier cannot be kept"),
        ("    shoe_size: keep\n", "Patient.shoe_size: no such field"),
        ("    sex: blur\n", "Patient.sex: unknown action 'blur'"),
    ],
)
def test_bad_policies_are_refused_at_start(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.load(_policy_file(tmp_path, body))


def test_unknown_event_type_in_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: t\nevents:\n  Spaceship:\n    x: keep\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="unknown event type 'Spaceship'"):
        Policy.load(path)


def test_leak_check_blocks_an_identifier_in_kept_text() -> None:
    policy = Policy.load(None)
    source = _patient()
    source["country"] = f"KOR {source['national_id']}"  # an identifier smuggled into a kept field
    with pytest.raises(DeidError, match="national_id"):
        deidentify("Patient", source, policy, KEY)


def test_deidentify_step_fails_closed() -> None:
    policy = Policy.load(None)
    source = _patient()
    source["country"] = source["phone"]
    [out] = deidentify_step(codec.encode("Patient", source), policy, KEY, leak_check=True)
    assert out.topic_id == topics.DLQ
    assert dict(out.headers) == {"hl7bus.stage": b"deidentifying", "hl7bus.reason": b"leak"}
    assert source["phone"].encode() not in b"".join(v for _, v in out.headers)

    [out] = deidentify_step(b"garbage", policy, KEY, leak_check=True)
    assert out.topic_id == topics.DLQ


def test_no_identifier_of_the_sample_feed_reaches_research() -> None:
    """Every message of the bundled feed, through both steps: no PID value in research output."""
    policy = Policy.load(None)
    checked = 0
    for message in feed():
        identifiers = [
            value
            for path in ("PID-3.1", "PID-5.1", "PID-5.2", "PID-11.1", "PID-13.1", "PID-19")
            # A one-syllable Hangul surname alone (정, 이) is no identifier: scrubbed free text
            # now reaches research and is full of words that contain it (수정, 이상).
            if (value := message.get(path)) and len(value) > 1
        ]
        for out in parse_step(None, codec.encode("RawMessage", envelope(message)), SEOUL):
            [research] = deidentify_step(out.value, policy, KEY, leak_check=True)
            assert research.topic_id.startswith("research."), research.headers
            _, record = codec.decode(research.value)
            text = repr(record)
            for value in identifiers:
                assert value not in text
            checked += 1
    assert checked > 1000


def test_key_loading(tmp_path: Path) -> None:
    with pytest.raises(NoKeyError, match="no pseudonymization key"):
        load_key(DeidConfig())
    with pytest.raises(KeyConfigError, match="at least 16 bytes"):
        load_key(DeidConfig(key="short"))
    key_file = tmp_path / "key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    assert load_key(DeidConfig(key_file=key_file, key_id="k9")).key_id == "k9"


@pytest.mark.parametrize("profile", ["kr-pseudonym", "safe-harbor", "limited"])
def test_fused_parse_makes_the_research_form_the_deidentify_stage_makes(profile: str) -> None:
    """A worker running both stages de-identifies in the parse step, from the events in memory;
    the research records are byte for byte those of the stage that decodes hl7.events."""
    settings = DeidSettings(Policy.load(profile), KEY, leak_check=True)
    research = 0
    for message in feed():
        raw = codec.encode("RawMessage", envelope(message))
        identified = parse_step(None, raw, SEOUL)
        fused = parse_step(None, raw, SEOUL, settings)
        assert fused[: len(identified)] == identified
        separate = [
            o
            for out in identified
            for o in deidentify_step(out.value, settings.policy, KEY, leak_check=True)
        ]
        assert fused[len(identified) :] == separate
        research += sum(1 for o in separate if o.topic_id.startswith("research."))
    assert research > 1000


@pytest.mark.parametrize("profile", ["kr-pseudonym", "safe-harbor", "limited"])
def test_without_identified_output_the_parse_step_writes_only_the_research_forms(
    profile: str,
) -> None:
    """worker.identified_output: false: no hl7.events outputs; the research records (and DLQ
    records) are those the fused step makes with it on."""
    settings = DeidSettings(Policy.load(profile), KEY, leak_check=True)
    for message in feed():
        raw = codec.encode("RawMessage", envelope(message))
        identified = parse_step(None, raw, SEOUL)
        with_events = parse_step(None, raw, SEOUL, settings)
        without = parse_step(None, raw, SEOUL, settings, identified=False)
        assert all(o.topic_id != topics.EVENTS for o in without)
        if with_events[0].topic_id == topics.DLQ:  # an unparsable message: the same DLQ record
            assert without == with_events
        else:
            assert without == with_events[len(identified) :]


def test_without_identified_output_a_refused_event_still_goes_to_the_dlq_as_identified() -> None:
    raw = codec.encode("RawMessage", envelope(first("ORU^R01")))
    identified = parse_step(None, raw, SEOUL)
    shipped = yaml.safe_load(profile_text("kr-pseudonym"))
    without_orders = {**shipped, "events": {**shipped["events"]}}
    del without_orders["events"]["Order"]
    settings = DeidSettings(Policy.from_data(without_orders), KEY, leak_check=True)
    outs = parse_step(None, raw, SEOUL, settings, identified=False)
    refused = [o for o in outs if o.topic_id == topics.DLQ]
    orders = [o for o in identified if dict(o.headers)[codec.EVENT_TYPE_HEADER] == b"Order"]
    assert refused and [o.value for o in refused] == [o.value for o in orders]
    assert len(outs) == len(identified)


def test_without_identified_output_an_event_that_does_not_encode_sends_the_message_to_the_dlq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the identified output on, an event its schema refuses sends the message to the DLQ
    (normalizing) at the identified encode; with it off, the same when its research form is
    refused too (its identified form, the DLQ record's value, does not encode)."""
    raw = codec.encode("RawMessage", envelope(first("ORU^R01")))
    made = events_from_raw(codec.decode(raw)[1], SEOUL)

    def broken(envelope: dict[str, Any], zone: Any) -> list[Any]:
        made[1].record["set_id"] = "not an int"  # kept by the policy, an int in both schemas
        return made

    monkeypatch.setattr("hl7bus.streams.steps.events_from_raw", broken)
    settings = DeidSettings(Policy.load("kr-pseudonym"), KEY, leak_check=True)
    expected = [(None, raw, {"hl7bus.stage": b"normalizing", "hl7bus.reason": b"event_invalid"})]
    for identified in (True, False):
        outs = parse_step(None, raw, SEOUL, settings, identified=identified)
        assert [(o.key, o.value, dict(o.headers)) for o in outs] == expected


def test_fused_parse_fails_closed_per_event() -> None:
    """An event the policy cannot de-identify goes to the restricted DLQ as its identified
    record; the message's other events and its identified forms are written as usual."""
    raw = codec.encode("RawMessage", envelope(first("ORU^R01")))
    identified = parse_step(None, raw, SEOUL)
    shipped = yaml.safe_load(profile_text("kr-pseudonym"))
    without_orders = {**shipped, "events": {**shipped["events"]}}
    del without_orders["events"]["Order"]
    policy = Policy.from_data(without_orders)
    outs = parse_step(None, raw, SEOUL, DeidSettings(policy, KEY, leak_check=True))
    assert outs[: len(identified)] == identified
    research = outs[len(identified) :]
    assert len(research) == len(identified)
    for source, out in zip(identified, research, strict=True):
        if dict(source.headers)[codec.EVENT_TYPE_HEADER] == b"Order":
            assert out.topic_id == topics.DLQ
            assert out.value == source.value
            assert dict(out.headers) == {
                "hl7bus.stage": b"deidentifying",
                "hl7bus.reason": b"no_policy",
            }
        else:
            assert out.topic_id == topics.research("Observation")
    assert any(o.topic_id == topics.DLQ for o in research)
