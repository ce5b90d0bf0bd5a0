"""The de-identification engine (streams/deid/): actions, policy checks, keys and
rotation, date-shift consistency, the allow-list, the leak check, fail-closed DLQ and metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from samples import envelope, first

from hl7bus.hl7v2 import parse
from hl7bus.schemas import codec, topics
from hl7bus.streams import deid
from hl7bus.streams.deid import (
    DeidConfig,
    DeidError,
    KeyConfigError,
    Policy,
    PolicyError,
    Pseudonymizer,
    deidentify,
    kr_postal3,
    load_key,
    zip3,
)
from hl7bus.streams.deid.contract import research_schema
from hl7bus.streams.deid.metrics import ACTIONS_DONE
from hl7bus.streams.parse import events_from_raw
from hl7bus.streams.steps import deidentify_step, parse_step

SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"engine-test-key-0123456789abcdef", "k1")
PROFILES = deid.PROFILES


def _message(
    pid: str = "10000001",
    name: str = "홍^길동",
    when: str = "20260305093000+0900",
    note: str = "Specimen slightly hemolyzed",
    control: str = "C0001",
) -> bytes:
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|SNUH|HL7BUS|CONS|{when}||ORU^R01^ORU_R01|{control}|P|2.5.1"
            "|||||KOR|UNICODE UTF-8",
            f"PID|1||{pid}^^^SNUH^MR||{name}||19300101|M|||마포구 월드컵로 12^^마포구^^03937"
            "||010-2345-6789|||||||300101-1234567",
            "PV1|1|I|71W^7101^2^SNUH|E|||D00077^박^서준^^^^^^SNUH^L||||||||||||V0000009^^^SNUH^VN",
            "ORC|RE|PO0001^EMR|FO0001^LIS||CM",
            f"OBR|1|PO0001^EMR|FO0001^LIS|24323-8^CMP^LN|||{when}",
            f"OBX|1|NM|GLU^Glucose^L||145|mg/dl|70-99|H|||F|||{when}",
            f"NTE|1||{note}",
        ]
    ).encode()


def _events(raw: bytes, received: datetime | None = None) -> list[Any]:
    message = parse(raw)
    env = envelope(message)
    if received is not None:
        env["received_at"] = received
    return events_from_raw(env, SEOUL)


def _one(events: list[Any], event_type: str) -> dict[str, Any]:
    return next(e.record for e in events if e.type == event_type)


def _counter(
    name: str, labels: dict[str, str] | None = None, registry: CollectorRegistry = REGISTRY
) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


# -- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_load_by_name_and_by_path(name: str, tmp_path: Path) -> None:
    by_name = Policy.load(name)
    copy = tmp_path / f"{name}.yaml"
    copy.write_text(deid.profile_text(name) + "\n# a comment changes nothing\n", "utf-8")
    by_path = Policy.load(str(copy))
    assert by_name.actions == by_path.actions
    assert by_name.digest == by_path.digest  # the hash is of the effective policy, not the text


def test_default_is_kr_pseudonym() -> None:
    assert Policy.load(None).digest == Policy.load("kr-pseudonym").digest


def _policy(**patient: str) -> dict[str, Any]:
    base = {"schema_version": "keep", "event_id": "keep", "feed": "keep"}
    base |= {"message_type": "keep", "received_at": "keep"}
    return {"name": "t", "events": {"Patient": base | patient}}


@pytest.mark.parametrize(
    ("patient", "message"),
    [
        ({"shoe_size": "keep"}, "no such field"),
        ({"sex": "blur"}, "unknown action"),
        ({"family_name": "keep"}, "direct identifier cannot be kept"),
        ({"national_id": "pseudonymize"}, "removed, never hashed"),
        ({"birth_year": "shift_date"}, "does not apply to a int field"),
        ({"sex": "generalize:age90"}, "does not apply"),
        ({"identifiers": "pseudonymize"}, "does not apply to a array field"),
        ({"deid_policy": "drop"}, "set by the engine"),
    ],
)
def test_policy_errors(patient: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_data(_policy(**patient))


def test_more_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="free text cannot be kept"):
        Policy.from_data({"events": {"Observation": {"notes": "keep"}}})
    with pytest.raises(PolicyError, match="unknown event type"):
        Policy.from_data({"events": {"Spaceship": {"x": "keep"}}})
    with pytest.raises(PolicyError, match="date_shift min_days is above"):
        Policy.from_data({"date_shift": {"min_days": 3, "max_days": 1}, "events": {}})
    with pytest.raises(PolicyError, match="unknown key"):
        Policy.from_data({"events": {}, "extends": "safe-harbor"})
    with pytest.raises(PolicyError, match="neither a profile"):
        Policy.load("no-such-profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("events: [1, 2", "utf-8")
    with pytest.raises(PolicyError, match=r"bad\.yaml at line 1, column 14: expected ','"):
        Policy.load(str(bad))


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_never_keep_direct_or_hash_national_ids(name: str) -> None:
    policy = Policy.load(name)
    for event_type, fields in policy.actions.items():
        phi = codec.schema(event_type).phi_classes()
        for field, action in fields.items():
            if phi[field] == "direct":
                assert action in ("drop", "pseudonymize"), (event_type, field)
        assert fields.get("source_control_id") == "drop"
        assert fields.get("message_identifiers") == "drop"
    assert policy.actions["Patient"]["national_id"] == "drop"
    assert policy.actions["Generic"]["segments"] == "drop"


# -- actions ----------------------------------------------------------------------------------


def test_generalizations() -> None:
    assert zip3("02139") == "021"
    assert zip3("02139-4307") == "021"
    assert zip3("203 45") is None
    assert zip3("20301") == "000"  # a 3-digit area of 20,000 people or fewer
    assert zip3("SW1A 1AA") is None
    assert kr_postal3("03937") == "039"
    assert kr_postal3("121-801") is None  # the 6-digit code before 2015: dropped
    assert kr_postal3("") is None


def test_safe_harbor_dates_ages_and_zip() -> None:
    policy = Policy.load("safe-harbor")
    [patient] = [e.record for e in _events(first("ADT^A04").to_bytes()) if e.type == "Patient"] or [
        None
    ]
    assert patient is not None
    patient = dict(patient, birth_year=1930, postal_code="03937")
    patient["event_time"] = datetime(2026, 3, 5, 1, 2, 3, tzinfo=UTC)
    out = deidentify("Patient", patient, policy, KEY)
    assert out["event_time"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert out["received_at"].month == 1 and out["received_at"].day == 1
    assert out["birth_year"] == 1936  # 96 years old: aggregated into "90 or older"
    assert "birth_date" not in out  # dropped: absent, as from the research contract
    assert out["postal_code"] == "039"
    assert "city" not in out
    young = deidentify("Patient", dict(patient, birth_year=1980), policy, KEY)
    assert young["birth_year"] == 1980
    assert out["deid_policy"] == policy.digest
    assert out["pseudonym_key_id"] == "k1"


def test_truncate_month_and_partial_dates() -> None:
    policy = Policy.from_data(
        {
            "events": {
                "Patient": {
                    **dict.fromkeys(["schema_version", "event_id", "feed", "message_type"], "keep"),
                    "received_at": "truncate_date:month",
                    "birth_date": "truncate_date:month",
                    "death_time": "shift_date",
                }
            }
        }
    )
    base = _one(_events(first("ADT^A04").to_bytes()), "Patient")
    out = deidentify("Patient", dict(base, birth_date="1930-01-17"), policy, KEY)
    assert out["birth_date"] == "1930-01"
    assert out["received_at"] == datetime(2026, 11, 1, tzinfo=UTC)
    shifted = deidentify("Patient", dict(base, birth_date="1930"), policy, KEY)
    assert shifted["birth_date"] == "1930"
    with pytest.raises(DeidError, match="no ISO date"):
        deidentify("Patient", dict(base, birth_date="17.01.1930"), policy, KEY)


def test_date_shift_keeps_intervals_per_patient_and_differs_between_patients() -> None:
    policy = Policy.load("kr-pseudonym")
    t1 = datetime(2026, 3, 5, 0, 30, tzinfo=UTC)
    first_visit = _one(_events(_message(control="A1"), t1), "Observation")
    second_visit = _one(
        _events(_message(control="A2", when="20260409101500+0900"), t1 + timedelta(days=35)),
        "Observation",
    )
    a = deidentify("Observation", first_visit, policy, KEY)
    b = deidentify("Observation", second_visit, policy, KEY)
    assert a["patient_key"] == b["patient_key"]
    assert (
        b["event_time"] - a["event_time"] == second_visit["event_time"] - first_visit["event_time"]
    )
    assert b["received_at"] - a["received_at"] == timedelta(days=35)
    offset = a["event_time"] - first_visit["event_time"]
    low, high = policy.date_shift
    assert timedelta(days=low) <= offset <= timedelta(days=high)
    assert a["received_at"] - first_visit["received_at"] == offset  # one offset for all dates

    offsets = set()
    for n in range(12):
        other = _one(_events(_message(pid=f"2000{n:04d}", control=f"B{n}"), t1), "Observation")
        out = deidentify("Observation", other, policy, KEY)
        offsets.add(out["event_time"] - other["event_time"])
    assert len(offsets) >= 8  # different patients, different shifts
    # A different key, a different shift for the same patient.
    other_key = Pseudonymizer(b"another-key-0123456789abcdef0123", "k2")
    assert (
        deidentify("Observation", first_visit, policy, other_key)["event_time"] != a["event_time"]
    )


def test_free_text_dates_follow_the_structured_shift() -> None:
    policy = Policy.load("kr-pseudonym")
    record = _one(_events(_message(note="재검 2026-03-01 예정")), "Observation")
    out = deidentify("Observation", record, policy, KEY)
    offset = (out["event_time"] - record["event_time"]).days
    expected = (datetime(2026, 3, 1) + timedelta(days=offset)).strftime("%Y-%m-%d")
    assert out["notes"] == f"재검 {expected} 예정"
    sh = deidentify("Observation", record, Policy.load("safe-harbor"), KEY)
    assert sh["notes"] == "재검 [DATE] 예정"
    limited = deidentify("Observation", record, Policy.load("limited"), KEY)
    assert limited["notes"] == "재검 2026-03-01 예정"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("주민번호 850315-1234567 확인", "850315-1234567"),  # pre-2020 RRN, with hyphen
        ("RRN 8503151234567", "8503151234567"),  # without the hyphen
        ("등록 210405-3987654 (2020-10 이후 발급)", "210405-3987654"),  # no check digit
        ("보호자 연락처 010-3456-7890", "010-3456-7890"),
        ("병동 02-2072-1234 로 연락", "02-2072-1234"),
        ("지역 031-123-4567", "031-123-4567"),
    ],
)
def test_korean_rrn_and_phone_in_free_text(text: str, gone: str) -> None:
    record = _one(_events(_message(note=text)), "Observation")
    for name in PROFILES:
        out = deidentify("Observation", record, Policy.load(name), KEY)
        assert gone not in out["notes"], (name, out["notes"])
        assert gone.replace("-", "") not in out["notes"].replace("-", "")


@pytest.mark.parametrize(
    "text",
    ["WBC 10.5 K/uL, Hb 12.6 g/dL", "reference 3.5-5.1 mmol/L", "CRP < 0.5 mg/L"],
)
def test_lab_values_are_not_taken_for_identifiers(text: str) -> None:
    record = _one(_events(_message(note=text)), "Observation")
    out = deidentify("Observation", record, Policy.load("kr-pseudonym"), KEY)
    assert out["notes"] == text


def test_free_text_uses_the_messages_own_identifiers() -> None:
    note = "홍길동님 검체 재채취. 보호자 연락 010-2345-6789, 담당 박서준 교수, HONG GILDONG"
    record = _one(_events(_message(name="홍^길동~HONG^GILDONG", note=note)), "Observation")
    assert record["message_identifiers"]  # carried from the parse stage
    out = deidentify("Observation", record, Policy.load("kr-pseudonym"), KEY)
    for value in ("홍길동", "길동", "2345", "박서준", "HONG", "GILDONG"):
        assert value not in out["notes"], out["notes"]
    assert "[NAME]님" in out["notes"] and "[PHONE]" in out["notes"]


def test_free_text_without_carried_identifiers_is_refused() -> None:
    record = _one(_events(_message()), "Observation")
    record = dict(record, message_identifiers=None)
    with pytest.raises(DeidError) as caught:
        deidentify("Observation", record, Policy.load("kr-pseudonym"), KEY)
    assert caught.value.code == "no_identifiers"
    # No free text to scrub: the event goes through.
    plain = dict(record, notes=None, value_text=None)
    out = deidentify("Observation", plain, Policy.load("kr-pseudonym"), KEY)
    assert out["notes"] is None


# -- allow-list -------------------------------------------------------------------------------


def test_a_field_the_policy_does_not_name_is_dropped() -> None:
    data = yaml.safe_load(deid.profile_text("limited"))
    del data["events"]["Patient"]["country"]  # as if "country" were a newer field
    policy = Policy.from_data(data)
    record = _one(_events(first("ADT^A04").to_bytes()), "Patient")
    record = dict(record, country="KOR", shoe_size="44")  # shoe_size: not even in the schema
    out = deidentify("Patient", record, policy, KEY)
    assert "country" not in out and "shoe_size" not in out
    contract = research_schema(policy, "Patient")
    assert "country" not in {f["name"] for f in contract.definition["fields"]}
    decoded = codec.decode(codec.encode("Patient", out, writer=contract))[1]
    assert decoded == out


def test_z_segments_and_generic_content_never_pass() -> None:
    raw = (
        "MSH|^~\\&|A|B|C|D|20260305120000||ZZZ^Z01|Z1|P|2.5.1\r"
        "PID|1||55555555^^^SNUH^MR||이^순신||19450428|M\r"
        "ZPI|1|SECRET-ZVALUE-99|이순신 장군"
    ).encode()
    [generic] = _events(raw)
    assert generic.type == "Generic"
    for name in PROFILES:
        out = deidentify("Generic", generic.record, Policy.load(name), KEY)
        assert "segments" not in out
        assert "SECRET" not in repr(out) and "순신" not in repr(out)


# -- keys -------------------------------------------------------------------------------------


def test_key_rotation_and_sink_keys(tmp_path: Path) -> None:
    old, new, lake = "o" * 32, "n" * 32, "l" * 32
    lake_file = tmp_path / "lake.key"
    lake_file.write_text(lake + "\n")
    cfg = DeidConfig(
        key_id="k2",
        keys={"k1": old, "k2": new},
        key_files={"lake1": lake_file},
        sink_keys={"lake": "lake1"},
    )
    ring = load_key(cfg)
    assert ring.key_id == "k2" and ring.key_ids() == {"k1", "k2", "lake1"}
    assert old not in repr(ring) and new not in repr(ring)
    record = _one(_events(_message()), "Observation")
    policy = Policy.load("kr-pseudonym")
    with_new = deidentify("Observation", record, policy, ring)
    with_old = deidentify("Observation", record, policy, ring.with_key("k1"))
    assert with_new["pseudonym_key_id"] == "k2" and with_old["pseudonym_key_id"] == "k1"
    assert with_new["patient_key"] != with_old["patient_key"]
    # The old key reproduces the pseudonyms made before the rotation.
    before = deidentify("Observation", record, policy, load_key(DeidConfig(key=old, key_id="k1")))
    assert before["patient_key"] == with_old["patient_key"]
    sink = load_key(cfg, sink="lake")
    assert sink.key_id == "lake1"
    assert deidentify("Observation", record, policy, sink)["patient_key"] not in (
        with_new["patient_key"],
        with_old["patient_key"],
    )
    assert load_key(cfg, sink="warehouse").key_id == "k2"  # sinks not named use key_id
    with pytest.raises(KeyConfigError, match="no key with id"):
        ring.with_key("k9")
    with pytest.raises(KeyConfigError, match="active key id 'k3'"):
        load_key(DeidConfig(key_id="k3", keys={"k1": old}))
    with pytest.raises(KeyConfigError, match=r"sink_keys\.lake"):
        load_key(DeidConfig(key=old, sink_keys={"lake": "nope"}))
    with pytest.raises(KeyConfigError, match=r"deid\.keys\.k1: .* at least 16 bytes"):
        load_key(DeidConfig(keys={"k1": "short"}))


# -- the step: fail closed, leak check, metrics ------------------------------------------------


def _identified(raw: bytes) -> list[bytes]:
    return [
        o.value for o in parse_step(None, codec.encode("RawMessage", envelope(parse(raw))), SEOUL)
    ]


def test_step_stamps_the_policy_and_counts_actions() -> None:
    policy = Policy.load("kr-pseudonym")
    # The action counts are registered where a worker is built (hl7bus worker), not on import.
    actions = CollectorRegistry()
    actions.register(ACTIONS_DONE)
    shift_label = {"action": "shift_date", "phi": "date"}
    before = _counter("hl7bus_deid_actions_total", shift_label, actions)
    scrubbed = _counter(
        "hl7bus_deid_actions_total", {"action": "scrub", "phi": "free_text"}, actions
    )
    outs = [o for v in _identified(_message()) for o in deidentify_step(v, policy, KEY, True)]
    assert all(o.topic_id.startswith("research.") for o in outs)
    for out in outs:
        assert dict(out.headers)["hl7bus.policy"] == policy.digest.encode()
        _, record = codec.decode(out.value)
        assert record["deid_policy"] == policy.digest
        assert "message_identifiers" not in record
    assert _counter("hl7bus_deid_actions_total", shift_label, actions) > before
    after = _counter("hl7bus_deid_actions_total", {"action": "scrub", "phi": "free_text"}, actions)
    assert after > scrubbed
    assert REGISTRY.get_sample_value("hl7bus_deid_actions_total", shift_label) is None


def test_step_fails_closed_with_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Policy.from_data(
        {"name": "patients-only", "events": {"Patient": {"event_id": "keep"}}}
    )
    [observation] = [v for v in _identified(_message()) if codec.decode(v)[0] == "Observation"]
    errors = _counter("hl7bus_deid_errors_total", {"code": "no_policy"})
    [out] = deidentify_step(observation, policy, KEY, True)
    assert out.topic_id == topics.DLQ
    assert dict(out.headers) == {"hl7bus.stage": b"deidentifying", "hl7bus.reason": b"no_policy"}
    assert out.value == observation  # the identified record, for a replay
    assert _counter("hl7bus_deid_errors_total", {"code": "no_policy"}) == errors + 1

    [out] = deidentify_step(b"\xc3\x01garbage", policy, KEY, True)
    assert dict(out.headers)["hl7bus.reason"] == b"undecodable_event"

    # A policy that drops a required field: the research form does not encode.
    dropping = Policy.from_data({"events": {"Observation": {"feed": "keep"}}})
    [out] = deidentify_step(observation, dropping, KEY, True)
    assert dict(out.headers)["hl7bus.reason"] == b"unencodable_research_event"

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("hl7bus.streams.deid.engine.scrub_text", boom)
    [out] = deidentify_step(observation, Policy.load("kr-pseudonym"), KEY, True)
    assert dict(out.headers)["hl7bus.reason"] == b"internal_error"


def test_leak_check_blocks_what_the_scrubber_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrubber that misses a name: the leak check finds the message's PID value and blocks."""
    from hl7bus.streams.scrub import ScrubResult

    def blind(text: str, *args: Any, **kwargs: Any) -> ScrubResult:
        return ScrubResult(text, {})

    monkeypatch.setattr("hl7bus.streams.deid.engine.scrub_text", blind)
    values = _identified(_message(note="환자 홍길동 재검 요망"))
    [observation] = [v for v in values if codec.decode(v)[0] == "Observation"]
    leaks = _counter("hl7bus_deid_leaks_total")
    [out] = deidentify_step(observation, Policy.load("kr-pseudonym"), KEY, True)
    assert out.topic_id == topics.DLQ
    assert dict(out.headers)["hl7bus.reason"] == b"leak"
    assert _counter("hl7bus_deid_leaks_total") == leaks + 1
    # Normalized for case, spaces and hyphens: the MRN written as "1000-0001" is found too.
    [observation] = [
        v
        for v in _identified(_message(note="see chart 1000 - 0001"))
        if codec.decode(v)[0] == "Observation"
    ]
    [out] = deidentify_step(observation, Policy.load("kr-pseudonym"), KEY, True)
    assert dict(out.headers)["hl7bus.reason"] == b"leak"
    # The reason names the field, never the value.
    _, record = codec.decode(observation)
    with pytest.raises(DeidError) as caught:
        deidentify("Observation", record, Policy.load("kr-pseudonym"), KEY)
    assert "1000" not in str(caught.value)


def test_values_a_policy_releases_on_purpose_are_not_leaks() -> None:
    """limited keeps city and postal code; they are also in the carried identifiers."""
    [patient] = [
        v for v in _identified(first("ADT^A04").to_bytes()) if codec.decode(v)[0] == "Patient"
    ]
    _, record = codec.decode(patient)
    record = dict(record, city="마포구", postal_code="03937")
    out = deidentify("Patient", record, Policy.load("limited"), KEY)
    assert out["city"] == "마포구"


def test_policy_file_errors_name_the_key_like_other_data_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as unknown:
        Policy.from_data({"events": {}, "extends": "safe-harbor"}, source="p.yaml")
    assert str(unknown.value) == (
        "policy p.yaml: 1 problem(s)\n  extends: unknown key; allowed here: "
        "name, description, events, date_shift, free_text_dates"
    )
    with pytest.raises(PolicyError, match=r"free_text_dates = 'blur': Input should be"):
        Policy.from_data({"free_text_dates": "blur"}, source="p.yaml")
    with pytest.raises(PolicyError, match=r"events\.Patient = 'keep': Input should be"):
        Policy.from_data({"events": {"Patient": "keep"}}, source="p.yaml")
