"""Property: a message with random synthetic identifiers in every identifier-bearing field, and
the same identifiers written into its free text, leaks none of them through any shipped profile.

An event either reaches a research topic without any of the identifiers (normalized for case,
spaces and hyphens) or is refused (DLQ); the leak check is on, as it is live by default.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hl7bus.schemas import codec
from hl7bus.streams.deid import PROFILES, Policy, Pseudonymizer
from hl7bus.streams.steps import deidentify_step, parse_step

SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"property-test-key-0123456789abcd", "p1")
POLICIES = [Policy.load(name) for name in PROFILES]

SURNAMES = list("김이박최정강조윤장임한오서신권황안송류홍")
# Given-name syllables that do not occur in the templates' words below.
SYLLABLES = list("준윤하민도예우현빈율린은채슬솔담훈혁찬겸")
LATIN = "BCDFGHJKLMNPRSTVWZ"
VOWELS = "AEIOU"

digits = st.text("0123456789", min_size=1, max_size=1)


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


hangul_name = st.tuples(
    st.sampled_from(SURNAMES), st.lists(st.sampled_from(SYLLABLES), min_size=2, max_size=2)
).map(lambda t: (t[0], "".join(t[1])))
latin_word = st.lists(
    st.tuples(st.sampled_from(LATIN), st.sampled_from(VOWELS)), min_size=2, max_size=4
).map(lambda parts: "".join(c + v for c, v in parts))
mobile = st.tuples(_digits(4), _digits(4)).map(lambda t: f"010-{t[0]}-{t[1]}")
rrn = st.tuples(
    st.integers(30, 99), st.integers(1, 12), st.integers(1, 28), st.sampled_from("1234"), _digits(6)
).map(lambda t: f"{t[0]:02d}{t[1]:02d}{t[2]:02d}-{t[3]}{t[4]}")
mrn = st.integers(10_000_000, 99_999_999).map(str)
visit = st.integers(100_000_000, 999_999_999).map(lambda n: f"V{n}")
order_no = st.integers(100_000, 999_999).map(lambda n: f"PO{n}")
email = latin_word.map(lambda w: f"{w.lower()}@example.kr")


@st.composite
def identified_message(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    patient = draw(hangul_name)
    latin_family, latin_given = draw(latin_word), draw(latin_word)
    relative = draw(hangul_name)
    doctor = draw(hangul_name)
    ids = {
        "mrn": draw(mrn),
        "rrn": draw(rrn),
        "phone": draw(mobile),
        "nk_phone": draw(mobile),
        "visit": draw(visit),
        "placer": draw(order_no),
        "email": draw(email),
        "doctor_id": f"D{draw(_digits(6))}",
    }
    full = "".join(patient)
    templates = [
        f"{full} 환자 내원. 보호자 {''.join(relative)}님 {ids['nk_phone']} 연락함.",
        f"주치의 {''.join(doctor)} 교수 확인. 등록번호 {ids['mrn']}, 주민번호 {ids['rrn']}",
        f"Pt {latin_given} {latin_family} (MRN {ids['mrn']}) called from {ids['phone']}",
        f"{patient[1]}이가 검사 거부. e-mail {ids['email']}; 방문번호 {ids['visit']}",
        f"Dr. {doctor[0]}{doctor[1]} order {ids['placer']} 재검 요망",
    ]
    note = " ".join(draw(st.lists(st.sampled_from(templates), min_size=1, max_size=5)))
    when = "20260305093000+0900"
    raw = "\r".join(
        [
            f"MSH|^~\\&|LIS|SNUH|HL7BUS|CONS|{when}||ORU^R01^ORU_R01|P{ids['mrn']}|P|2.5.1"
            "|||||KOR|UNICODE UTF-8",
            f"PID|1||{ids['mrn']}^^^SNUH^MR||{patient[0]}^{patient[1]}~"
            f"{latin_family}^{latin_given}^^^^^A||19500101|F|||"
            f"서울시 강남구 테헤란로 {draw(digits)}^^강남구^^06236"
            f"||{ids['phone']}^^^{ids['email']}|||||||{ids['rrn']}",
            f"NK1|1|{relative[0]}^{relative[1]}|SPO||{ids['nk_phone']}",
            f"PV1|1|I|71W^7101^2^SNUH|E|||{ids['doctor_id']}^{doctor[0]}^{doctor[1]}^^^^^^SNUH"
            f"||||||||||||{ids['visit']}^^^SNUH^VN",
            f"ORC|RE|{ids['placer']}^EMR|F{ids['placer']}^LIS||CM",
            f"OBR|1|{ids['placer']}^EMR|F{ids['placer']}^LIS|24323-8^CMP^LN|||{when}"
            f"|||||||||{ids['doctor_id']}^{doctor[0]}^{doctor[1]}",
            f"NTE|1||{note}",
            f"OBX|1|TX|COMMENT^Comment^L||{note}||||||F",
            f"OBX|2|NM|GLU^Glucose^L||145|mg/dl|70-99|H|||F|||{when}",
        ]
    ).encode()
    needles = [
        full,
        patient[1],
        "".join(relative),
        "".join(doctor),
        latin_family + latin_given,
        latin_given + latin_family,
        *ids.values(),
    ]
    return raw, needles


def _normalized(text: str) -> str:
    return re.sub(r"[\s\-_.()]+", "", text).casefold()


def _envelope(raw: bytes) -> bytes:
    return codec.encode(
        "RawMessage",
        {
            "schema_version": 1,
            "feed": "prop",
            "received_at": datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
            "peer": "127.0.0.1:1",
            "charset": "utf-8",
            "control_id": "P1",
            "message_type": "ORU^R01",
            "patient_key": None,
            "raw": raw,
        },
    )


OUTCOMES = {"research": 0, "dlq": 0}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identified_message())
def test_no_identifier_leaks_through_any_profile(case: tuple[bytes, list[str]]) -> None:
    raw, needles = case
    identified = parse_step(None, _envelope(raw), SEOUL)
    assert identified and all(o.topic_id == "events" for o in identified), identified
    wanted = [_normalized(n) for n in needles]
    for policy in POLICIES:
        for event in identified:
            [out] = deidentify_step(event.value, policy, KEY, leak_check=True)
            if out.topic_id == "dlq":
                OUTCOMES["dlq"] += 1
                assert dict(out.headers)["hl7bus.reason"] == b"leak"  # refused, not crashed
                continue
            OUTCOMES["research"] += 1
            _, record = codec.decode(out.value)
            text = _normalized(repr(record))
            for needle in wanted:
                assert needle not in text, (policy.name, needle, record)


def test_most_events_pass() -> None:
    """The property above must not hold vacuously (everything refused)."""
    test_no_identifier_leaks_through_any_profile()
    total = OUTCOMES["research"] + OUTCOMES["dlq"]
    assert total > 0
    assert OUTCOMES["research"] / total > 0.8, OUTCOMES
