"""Free-text scrubbing (streams/scrub/): the message's own identifiers, then patterns."""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hl7bus.hl7v2 import Message, parse, parse_batch
from hl7bus.streams.scrub import (
    COMMON_WORDS,
    DEFAULT_OPTIONS,
    TITLES,
    Identifiers,
    Kind,
    ScrubOptions,
    identifiers_of,
    scrub_text,
)

FEED_FILE = Path(__file__).resolve().parents[1] / "ops" / "demo" / "sample-feed.hl7"


def kinds(
    text: str, ids: Identifiers | None = None, *, options: ScrubOptions = DEFAULT_OPTIONS
) -> tuple[str, dict[str, int]]:
    """The scrubbed text and its counts keyed by kind name."""
    r = scrub_text(text, ids, options=options)
    return r.text, {k.value: n for k, n in r.replacements.items()}


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# -- Korean resident registration numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "주민번호 651013-1726516 확인",  # born 1965, check digit not checked
        "환자 주민등록번호는 6510131726516 입니다",  # no hyphen, in a sentence
        "RRN:650101-2000000.",
        "보호자 010101-3123456",  # born 2001 (G = 3)
        "0501014123456로 조회",  # no hyphen, 2005 (G = 4), followed by a particle
        "외국인 850505-5123456",  # foreigner (G = 5-8)
        "221031-4987654 (2020년 10월 이후 발급: 무작위 번호)",  # post-2020, no valid check digit
        "991231 - 1234567",  # spaced hyphen
        "680216 2935288",  # a space instead of the hyphen (date checked)
        "651013-1******",  # masked, birth date and sex still identify
        "651013–1726516",  # en dash
        "주민등록번호: 5001011234567",  # behind an id label: still reported as an RRN
        "번호651013-1726516입니다",  # glued to Hangul on both sides
    ],
)
def test_rrn_true_positives(text: str) -> None:
    out, counts = kinds(text)
    assert counts.get("RRN") == 1, out
    assert not re.search(r"\d{6}\s*[-–]?\s*\d", out), out


@pytest.mark.parametrize(
    "text",
    [
        "Hb 13.2 g/dL",
        "pH 7.35-7.45",
        "참고치 135-145 mmol/L",
        "WBC 4.0-10.0 x10^3/uL",
        "Cr 1.005-1.030",
        "08:30 채혈, 10:30-11:00 재채혈",
        "오더번호 ORD-4471",
        "처방번호 P1234567",
        "검체 2611-0042",
        "K 4.1 mmol/L (3.5-5.1)",
        "BP 120/80, 1/2 tab",
        "3회 이상, 1:2 희석",
        "HL7 2.5.1",
        "12.5%",
    ],
)
def test_values_that_must_survive(text: str) -> None:
    assert kinds(text) == (text, {})


def test_thirteen_digits_that_are_no_date_are_no_rrn() -> None:
    # Month 34: not a date; an order/lab number, not an RRN.
    assert kinds("검체번호 1234567890123") == ("검체번호 [ID]", {"ID": 1})
    no_long = ScrubOptions(long_number_digits=None)
    assert kinds("1234567890123 검체", options=no_long) == ("1234567890123 검체", {})
    # 650230: Feb 30 does not exist (without a hyphen the date must).
    assert kinds("6502301234567", options=no_long) == ("6502301234567", {})
    # A control id: its 13 digits start "2026" (no month 26).
    assert kinds("SNUH2026112700001", options=no_long) == ("SNUH2026112700001", {})


def test_an_iso_date_is_a_date_not_an_rrn() -> None:
    assert kinds("2026-11-27 채혈") == ("[DATE] 채혈", {"DATE": 1})
    assert kinds("20261127083000+0900") == ("[DATE]+0900", {"DATE": 1})


# -- phones ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "연락처 010-1234-5678",
        "01012345678로 연락",
        "010 1234 5678",
        "010.1234.5678",
        "011-234-5678",
        "016-2345-6789",
        "019 234 5678",
        "02-123-4567",
        "(02) 123-4567",
        "(02)123-4567",
        "0212345678",
        "031-123-4567",
        "051-234-5678",
        "053-6856-7113",
        "064 712 3456",
        "070-1234-5678",
        "0505-123-4567",
        "0507-1234-5678",
        "080-123-4567",
        "+82-10-1234-5678",
        "+82 10 1234 5678",
        "+82 (0)2 123 4567",
        "0082-10-1234-5678",
        "전화 1234-5678",  # local number behind a label
        "+1 555 234 5678",
        "(555) 234-5678",
        "555-234-5678",
        "phone: 555.234.5678",
    ],
)
def test_phone_true_positives(text: str) -> None:
    out, counts = kinds(text)
    assert counts.get("PHONE") == 1, out
    assert len(digits(out)) < 4, out


@pytest.mark.parametrize(
    "text",
    [
        "0.2-1.2 mg/dL",
        "검사 1234-5678 비교",  # no label, no area code: a range or an order number
        "135-145",
        "2026-11-27",
        "10:30",
        "090-1234-5678",  # 09x is no Korean prefix
        "555-123-4567",  # a US exchange never starts with 1
    ],
)
def test_phone_false_positives(text: str) -> None:
    assert "PHONE" not in kinds(text)[1]


# -- the other patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SSN 123-45-6789", "SSN [ID]"),
        ("ssn 000-12-3456", "ssn 000-12-3456"),  # never issued
        ("메일 minjun.kim@example.co.kr 로", "메일 [EMAIL] 로"),
        ("https://emr.snuh.org/patient?id=1 참조", "[URL] 참조"),
        ("www.example.com 에서", "[URL] 에서"),
        ("snuh.ac.kr 홈페이지", "[URL] 홈페이지"),
        ("접속 IP 192.168.10.1 에서", "접속 IP [IP] 에서"),
        ("fe80::1ff:fe23:4567:890a 주소", "[IP] 주소"),
        ("2001:db8::8a2e:370:7334", "[IP]"),
        ("300.1.2.3", "300.1.2.3"),
        ("08:30:15", "08:30:15"),
        ("MRN: 97641229", "MRN: [ID]"),
        ("등록번호 1234567", "등록번호 [ID]"),
        ("병록번호: 123456", "병록번호: [ID]"),
        ("환자번호 AB-123456", "환자번호 [ID]"),
        ("등록번호 12345", "등록번호 12345"),  # fewer than 6 digits
        ("검체 12345678 확인", "검체 [ID] 확인"),  # any 8+ digits
        ("0.12345678", "0.12345678"),  # a decimal
        ("우편번호 06123", "우편번호 [ADDRESS]"),
        ("(우) 06123", "(우) [ADDRESS]"),
        ("12345 units", "12345 units"),  # unlabelled: not a postal code
    ],
)
def test_patterns(text: str, expected: str) -> None:
    assert scrub_text(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27",
        "2026.11.27",
        "2026. 11. 27.",
        "2026/11/27",
        "20261127",
        "202611270830",
        "2026년 11월 27일",
        "2026년11월27일",
        "11/27/2026",
        "27.11.2026",
        "Nov 27, 2026",
        "27 November 2026",
        "26.11.27",
        # partial dates: month and day are date elements too
        "11월 27일",
        "2026년 11월",
        "November 2026",
    ],
)
def test_dates(text: str) -> None:
    assert kinds(f"내원 {text} 오전") == ("내원 [DATE] 오전", {"DATE": 1})


@pytest.mark.parametrize(
    ("text", "shifted"),
    [
        ("2026-11-27", "2026-12-07"),
        ("2026.1.5", "2026.1.15"),
        ("2026. 11. 27.", "2026. 12. 07."),
        ("20261127083000", "20261207083000"),
        ("2026년 11월 27일", "2026년 12월 7일"),
        ("11/27/2026", "12/07/2026"),
        ("27.11.2026", "07.12.2026"),
        ("Nov 27, 2026", "Dec 7, 2026"),
        ("27 NOVEMBER 2026", "7 DECEMBER 2026"),
        ("26.11.27", "26.12.07"),
        ("2026-12-25", "2027-01-04"),
        ("11월 27일", "[DATE]"),  # no year: not shifted, removed
        ("2026-02-31", "[DATE]"),  # no such day
    ],
)
def test_date_shift_keeps_the_format(text: str, shifted: str) -> None:
    r = scrub_text(text, shift_date=lambda d: d + timedelta(days=10))
    assert r.text == shifted
    assert r.replacements == {Kind.DATE: 1}


def test_date_shift_is_consistent_within_a_text() -> None:
    text = "입원 2026-11-20, 퇴원 2026-11-27"
    out = scrub_text(text, shift_date=lambda d: d - timedelta(days=400)).text
    found = [date.fromisoformat(s) for s in re.findall(r"\d{4}-\d{2}-\d{2}", out)]
    assert found == [date(2025, 10, 16), date(2025, 10, 23)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("92세 여자", "[AGE 90+] 여자"),
        ("만 95세", "[AGE 90+]"),
        ("100세 어르신", "[AGE 90+] 어르신"),
        ("age 93", "[AGE 90+]"),
        ("Age: 91", "[AGE 90+]"),
        ("a 93-year-old man", "a [AGE 90+] man"),
        ("94 years old", "[AGE 90+]"),
        ("95 yo", "[AGE 90+]"),
        ("F/92", "[AGE 90+]"),
        ("(여/96)", "([AGE 90+])"),
        ("89세 남자", "89세 남자"),
        ("age 45", "age 45"),
        ("9세 환아", "9세 환아"),
        ("PLT 92 x10^3/uL", "PLT 92 x10^3/uL"),
    ],
)
def test_ages_over_89(text: str, expected: str) -> None:
    assert scrub_text(text).text == expected


# -- the message's own names ----------------------------------------------------------------------

PEOPLE = Identifiers.of(
    names=[("김", "민준"), ("KIM", "MINJUN"), ("이", "상"), ("정", "연"), ("남궁", "도윤")],
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("김민준님 내원", "[NAME]님 내원"),
        ("김민준 환자 귀가", "[NAME] 환자 귀가"),
        ("김 민준 환자", "[NAME] 환자"),
        ("김민준은 귀가", "[NAME]은 귀가"),
        ("김민준의 보호자", "[NAME]의 보호자"),
        ("김민준에게 설명", "[NAME]에게 설명"),
        ("김민준씨", "[NAME]씨"),
        ("보호자(김민준)", "보호자([NAME])"),
        ("민준이가 울었다", "[NAME]이가 울었다"),  # given name alone, 2 syllables
        ("민준아 일어나", "[NAME]아 일어나"),
        ("민준 씨", "[NAME] 씨"),
        ("민준기 선생", "[NAME] 선생"),  # surname 민 + 준기 before a title: a cue
        ("남궁도윤 환자", "[NAME] 환자"),
        ("남궁 씨", "[NAME] 씨"),  # two-syllable surname alone
        ("도윤이", "[NAME]이"),
        ("정연 환자", "[NAME] 환자"),  # full name of two syllables
        ("정연은 귀가", "[NAME]은 귀가"),
        ("정연구 결과", "정연구 결과"),
        ("이상 환자", "[NAME] 환자"),  # a common word as a name: only before a title
        ("이상님", "[NAME]님"),
        ("이상 소견 없음", "이상 소견 없음"),
        ("이상이 있음", "이상이 있음"),
        ("3회 이상", "3회 이상"),
        ("김 교수", "[NAME] 교수"),  # a surname alone before a title: a cue (issue 16)
        ("Kim Minjun called", "[NAME] called"),
        ("MINJUN KIM", "[NAME]"),
        ("kim, min-jun", "[NAME]"),
        ("Min Jun", "[NAME]"),
        ("Mr. kim", "Mr. [NAME]"),
        ("min-jun's mother", "[NAME]'s mother"),
        ("5 min 후", "5 min 후"),  # MIN alone is a common word
    ],
)
def test_names(text: str, expected: str) -> None:
    assert scrub_text(text, PEOPLE).text == expected


def test_short_needles_are_refused() -> None:
    ids = Identifiers.of(names=[("O", "U"), "이"], ids=["12", "ABC"], phones=["1234"])
    assert len(ids) == 0
    assert scrub_text("Oh, U is 12 ABC 1234 이", ids).text == "Oh, U is 12 ABC 1234 이"


def test_identifier_numbers_tolerate_separators() -> None:
    ids = Identifiers.of(
        ids=["97641229", "P7317587"],
        phones=["010-2029-7299", "02-900-5950"],
        national_ids=["651013-1726516"],
        addresses=["월드컵로 381", "마포구", "04022"],
        emails=["Minjun.Kim@example.com"],
    )
    no_long = ScrubOptions(long_number_digits=None)
    table = [
        ("MRN 9764-1229", "MRN [ID]"),
        ("9764 1229번", "[ID]번"),
        ("p-7317587", "[ID]"),
        ("0.97641229", "0.97641229"),  # a decimal, not the id
        ("1976412290", "1976412290"),  # a longer number
        ("010 2029 7299", "[PHONE]"),
        ("+82 10-2029-7299", "[PHONE]"),
        ("2029-7299로", "[PHONE]로"),  # without the area code
        ("(02)900-5950", "[PHONE]"),
        ("6510131726516", "[RRN]"),
        ("월드컵로 381번지", "[ADDRESS]번지"),
        ("월드컵로381", "[ADDRESS]"),
        ("월드컵로 인근", "[ADDRESS] 인근"),  # the road name alone
        ("마포구 거주", "[ADDRESS] 거주"),
        ("MINJUN.KIM@EXAMPLE.COM", "[EMAIL]"),
    ]
    for text, expected in table:
        assert scrub_text(text, ids, options=no_long).text == expected, text


def test_identifiers_repr_shows_no_values() -> None:
    ids = Identifiers.of(names=["김민준"], phones=["010-2029-7299"])
    assert "김" not in repr(ids) and "2029" not in repr(ids)
    assert repr(ids).startswith("Identifiers(")


def test_counts_never_values() -> None:
    r = scrub_text("김민준님 010-2029-7299, 2026-11-27", Identifiers.of(names=["김민준"]))
    assert r.replacements == {Kind.NAME: 1, Kind.PHONE: 1, Kind.DATE: 1}
    assert all(isinstance(k, Kind) and isinstance(v, int) for k, v in r.replacements.items())


# -- identifiers_of -------------------------------------------------------------------------------


def _segment(name: str, fields: dict[int, str]) -> str:
    return "|".join([name, *(fields.get(i, "") for i in range(1, max(fields) + 1))])


FULL_MESSAGE = "\r".join(
    [
        "MSH|^~\\&|EMR|SNUH|HL7BUS|CONSORTIUM|20261127083000+0900||ORU^R01|C1|P|2.5.1|||||KOR"
        "|UNICODE UTF-8",
        _segment(
            "PID",
            {
                1: "1",
                2: "OLD778899",
                3: "12345678^^^SNUH^MR~P7654321^^^SNUH^PI",
                5: "홍^길동^^^^^L^I~HONG^GILDONG^^^^^L^A",
                6: "박^순자",
                7: "19500101",
                11: "테헤란로 123^래미안 101동 1203호^강남구^서울특별시^06123^KOR^H",
                13: "010-1111-2222^PRN^CP~^NET^Internet^gildong@example.com",
                14: "02-333-4444^WPN^PH",
                18: "ACC998877",
                19: "500101-1234567",
            },
        ),
        _segment(
            "NK1",
            {
                1: "1",
                2: "홍^길순",
                3: "SPO",
                4: "언주로 45^^강남구^서울특별시^06234",
                5: "010-5555-6666",
                30: "Jones^Mary",
                31: "+1 555 234 5678",
            },
        ),
        _segment(
            "PV1",
            {
                1: "1",
                2: "I",
                7: "D11111^김^주치^^^^^^SNUH^L",
                8: "D22222^이^의뢰",
                9: "D33333^박^협진~D44444^최^두번째",
                17: "D55555^윤^입원",
                19: "V2611270001",
            },
        ),
        _segment(
            "GT1", {1: "1", 2: "G556677", 3: "홍^보증인", 6: "010-7777-8888", 12: "123-45-6789"}
        ),
        _segment(
            "IN1", {1: "1", 2: "NHIS", 16: "홍^가입자", 36: "POL-20261127-99", 49: "INS55667788"}
        ),
        _segment(
            "ORC",
            {
                1: "RE",
                2: "PO12345^EMR",
                3: "FL67890^LIS",
                10: "N1234^강^입력",
                12: "D66666^서^처방",
                14: "031-765-4321",
            },
        ),
        _segment(
            "OBR",
            {
                1: "1",
                2: "PO12345^EMR",
                3: "FL67890^LIS",
                16: "D66666^서^처방",
                32: "D77777&황&판독&&&&",
            },
        ),
        _segment("NTE", {1: "1", 3: "free text"}),
    ]
)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("OLD778899", "ID"),  # PID-2
        ("12345678", "ID"),  # PID-3
        ("P7654321", "ID"),
        ("홍길동", "NAME"),  # PID-5, both scripts
        ("Gildong Hong", "NAME"),
        ("HONG, GILDONG", "NAME"),
        ("순자", "NAME"),  # PID-6 given name (the 1-syllable surname alone is not)
        ("테헤란로 123", "ADDRESS"),  # PID-11
        ("래미안 101동 1203호", "ADDRESS"),
        ("강남구", "ADDRESS"),
        ("06123", "ADDRESS"),
        ("010-1111-2222", "PHONE"),  # PID-13
        ("gildong@example.com", "EMAIL"),
        ("02 333 4444", "PHONE"),  # PID-14
        ("ACC998877", "ID"),  # PID-18
        ("500101-1234567", "RRN"),  # PID-19
        ("홍길순", "NAME"),  # NK1
        ("언주로 45", "ADDRESS"),
        ("010-5555-6666", "PHONE"),
        ("Mary Jones", "NAME"),
        ("+1 555 234 5678", "PHONE"),
        ("D11111", "ID"),  # PV1-7/8/9/17
        ("김주치", "NAME"),
        ("이의뢰", "NAME"),
        ("박협진", "NAME"),
        ("최두번째", "NAME"),
        ("윤입원", "NAME"),
        ("V2611270001", "ID"),  # PV1-19
        ("G556677", "ID"),  # GT1
        ("홍보증인", "NAME"),
        ("010-7777-8888", "PHONE"),
        ("123-45-6789", "ID"),
        ("홍가입자", "NAME"),  # IN1
        ("POL-20261127-99", "ID"),
        ("INS55667788", "ID"),
        ("PO12345", "ID"),  # ORC/OBR
        ("FL67890", "ID"),
        ("강입력", "NAME"),
        ("서처방", "NAME"),
        ("031-765-4321", "PHONE"),
        ("D77777", "ID"),  # OBR-32 (NDL)
        ("황판독", "NAME"),
    ],
)
def test_identifiers_of_reads_every_identifying_field(value: str, kind: str) -> None:
    ids = identifiers_of(parse(FULL_MESSAGE))
    no_patterns = ScrubOptions(long_number_digits=None)
    text = f"메모: {value} 확인"
    r = scrub_text(text, ids, options=no_patterns)
    assert r.text == f"메모: [{kind}] 확인"


def test_identifiers_of_ignores_codes_and_authorities() -> None:
    ids = identifiers_of(parse(FULL_MESSAGE))
    text = "SNUH NHIS SPO MR PI KOR 서울특별시 EMR LIS"
    assert scrub_text(text, ids).text == text


# -- the bundled sample feed ----------------------------------------------------------------------


@cache
def sample_feed() -> tuple[Message, ...]:
    return tuple(parse_batch(FEED_FILE.read_bytes()))


def test_every_note_of_the_sample_feed_is_scrubbed() -> None:
    notes = 0
    for message in sample_feed():
        ids = identifiers_of(message)
        for nte in message.segments("NTE"):
            text = nte.get("3") or ""
            out = scrub_text(text, ids).text
            notes += 1
            pid = message.segment("PID")
            assert pid is not None
            secrets = [
                (pid.get("5[1].1") or "") + (pid.get("5[1].2") or ""),
                digits(pid.get("3.1") or ""),
                digits(pid.get("19") or ""),
                *(digits(p.split("^")[0]) for p in (pid.fields[13].split("~"))),
            ]
            pv1 = message.segment("PV1")
            if pv1 is not None:
                secrets.append((pv1.get("7.2") or "") + (pv1.get("7.3") or ""))
                secrets.append(pv1.get("7.1") or "")
            for secret in filter(None, secrets):
                haystack = digits(out) if secret.isdigit() else out
                assert secret not in haystack, f"{message.control_id}: {out}"
            assert "[NAME]" in out
    assert notes >= 30


# -- properties -----------------------------------------------------------------------------------

SURNAMES = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오", "서", "신",
            "권", "황", "안", "송", "류", "홍", "남궁", "제갈", "선우", "황보"]  # fmt: skip
SYLLABLES = st.integers(0xAC00, 0xD7A3).map(chr)
FRAGMENTS = [
    "검체 용혈 소견 있어 재채취 권고함",
    "공복 여부 확인 필요",
    "보호자에게 결과 전화 통보함",
    "이전 결과와 비교 요망",
    "채혈 지연으로 검체 도착 늦음",
    "결과 수정: 라벨 오류 확인 후 재검",
    "담당 교수에게 통보함",
    "내일 오전 재검 예정",
]
FRAGMENT_TEXT = " ".join(FRAGMENTS)
SUFFIXES = ["", "님", "씨", " 환자", " 님", "은", "는", "이", "가", "의", "에게", "께서", " 보호자"]


@st.composite
def korean_names(draw: st.DrawFn) -> tuple[str, str]:
    surname = draw(st.sampled_from(SURNAMES))
    given = "".join(draw(st.lists(SYLLABLES, min_size=1, max_size=2)))
    return surname, given


PREFIXES = ["010", "011", "016", "017", "018", "019", "02", "031", "032", "042", "051", "053",
            "055", "062", "064", "070", "0505"]  # fmt: skip


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str]:
    """(canonical, as written in the text)."""
    prefix = draw(st.sampled_from(PREFIXES))
    middle_rx = r"[1-9][0-9]{3}" if prefix.startswith("01") else r"[2-9][0-9]{2,3}"
    middle = draw(st.from_regex(middle_rx, fullmatch=True))
    last = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    sep = draw(st.sampled_from(["-", " ", ".", ""]))
    canonical = f"{prefix}-{middle}-{last}"
    forms = [
        f"{prefix}{sep}{middle}{sep}{last}",
        f"({prefix}) {middle}-{last}",
        f"+82 {prefix[1:]}-{middle}-{last}",
    ]
    return canonical, draw(st.sampled_from(forms))


@st.composite
def rrns(draw: st.DrawFn) -> tuple[str, str]:
    born = draw(st.dates(date(1880, 1, 1), date(2029, 12, 31)))
    genders = {18: "90", 19: "1256", 20: "3478"}[born.year // 100]
    g = draw(st.sampled_from(genders))
    rest = draw(st.from_regex(r"[0-9]{6}", fullmatch=True))
    canonical = f"{born:%y%m%d}-{g}{rest}"
    written = draw(
        st.sampled_from([canonical, canonical.replace("-", ""), canonical.replace("-", " - ")])
    )
    return canonical, written


def _sentence(data: st.DataObject, values: list[str]) -> str:
    parts = []
    for v in values:
        parts.append(data.draw(st.sampled_from(FRAGMENTS)))
        parts.append(v)
    parts.append(data.draw(st.sampled_from(FRAGMENTS)))
    glue = data.draw(st.sampled_from([" ", ", ", " (", ": "]))
    return glue.join(parts)


@settings(max_examples=300, deadline=None)
@given(st.data(), korean_names(), phones(), rrns())
def test_own_identifiers_never_survive(
    data: st.DataObject, name: tuple[str, str], phone: tuple[str, str], rrn: tuple[str, str]
) -> None:
    full = name[0] + name[1]
    suffix = data.draw(st.sampled_from(SUFFIXES))
    if len(full) == 2 and full in COMMON_WORDS:
        assume(suffix.strip() in TITLES)  # the documented rule for common words
    assume(full not in FRAGMENT_TEXT)
    ids = Identifiers.of(names=[name], phones=[phone[0]], national_ids=[rrn[0]])
    text = _sentence(data, [full + suffix, phone[1], rrn[1]])
    out = scrub_text(text, ids).text
    assert full not in out, out
    assert not any(ch.isdigit() for ch in out), out


@settings(max_examples=300, deadline=None)
@given(st.data(), phones(), rrns())
def test_rrns_and_phones_never_survive_even_unknown(
    data: st.DataObject, phone: tuple[str, str], rrn: tuple[str, str]
) -> None:
    text = _sentence(data, [phone[1], rrn[1]])
    r = scrub_text(text)
    assert not any(ch.isdigit() for ch in r.text), r.text
    assert r.replacements.get(Kind.PHONE) == 1 and r.replacements.get(Kind.RRN) == 1


@settings(max_examples=200, deadline=None)
@given(st.data(), korean_names(), phones(), rrns())
def test_scrubbing_twice_changes_nothing(
    data: st.DataObject, name: tuple[str, str], phone: tuple[str, str], rrn: tuple[str, str]
) -> None:
    ids = Identifiers.of(names=[name], phones=[phone[0]], national_ids=[rrn[0]])
    extra = data.draw(st.sampled_from(["92세", "2026-11-27", "age 95", "MRN 12345678", ""]))
    text = _sentence(data, [name[0] + name[1] + "님", phone[1], rrn[1], extra])
    once = scrub_text(text, ids).text
    assert scrub_text(once, ids).text == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.-/: 가나다ab"), max_size=60))
def test_any_text_scrubs_without_error(text: str) -> None:
    r = scrub_text(text, PEOPLE, shift_date=lambda d: d + timedelta(days=3))
    assert all(n > 0 for n in r.replacements.values())


def _lab_values() -> list[str]:
    """Every text the scrub step leaves unsearched: up to 4 characters of digits and .,+-<>=,
    not 4 digits."""
    from itertools import product

    from hl7bus.streams.scrub.step import _too_short_to_identify

    alphabet = "0123456789.,+-<>="
    texts = ["".join(p) for n in range(1, 5) for p in product(alphabet, repeat=n)]
    inert = [t for t in texts if _too_short_to_identify(t)]
    assert "118" in inert and "5.4" in inert and "<0.5" in inert and "12.6" in inert
    assert "1234" not in inert and "12345" not in inert and "1a" not in inert
    return inert


def test_lab_values_hold_no_pattern() -> None:
    """The patterns never match a text the scrub step skips, even with the smallest number
    settings and with dates shifted (every such text would be searched unchanged)."""
    from hl7bus.streams.scrub.patterns import apply_patterns

    smallest = ScrubOptions(long_number_digits=5, labelled_id_digits=3)
    for text in _lab_values():
        for options in (DEFAULT_OPTIONS, smallest):
            counts: dict[Kind, int] = {}
            assert apply_patterns(text, counts, lambda d: d + timedelta(days=3), options) == text
            assert counts == {}, text


def test_lab_values_hold_no_needle() -> None:
    """No needle fits in a text the scrub step skips: needles made of the same digits and
    marks, of every kind, are refused or too long; the same needles are found in longer text."""
    from hl7bus.streams.scrub.needles import tables
    from hl7bus.streams.scrub.search import identifier_spans

    literals = [
        "1", "12", "118", "1234", "12345", "1 2", "12 34", "1 234", "1.2", "5.4", "12.34",
        "1-2-3-4", "1,234", "<0.5", ">=1", "+82", "0.5", "1.17", "4 1 . 7",
    ]  # fmt: skip
    needles = frozenset((kind, literal) for kind in Kind for literal in literals)
    found = tables(needles)
    for text in _lab_values():
        assert identifier_spans(text, found) == [], text
    # The needles that are kept do match where they fit: the test above can fail.
    assert identifier_spans("MRN 12345 and 12 34", found)
    assert scrub_text("12345", Identifiers(needles)).text == "[ID]"


# -- issue 16: names without a list, romanized names, pattern misses, eponyms ----------------

KOREAN_ONLY = Identifiers.of(names=[("김", "민준"), ("이", "서연"), ("최", "경민")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pt KIM MINJUN seen", "Pt [NAME] seen"),
        ("Kim, Min-jun called", "[NAME] called"),
        ("Minjoon Gim was informed", "[NAME] was informed"),
        ("Dr. Rhee Seo-yeon", "Dr. [NAME]"),
        ("LEE, SUH YUN", "[NAME]"),
        ("Yi Seoyeon", "[NAME]"),
        ("Choe Kyung-Min and Choi Gyeongmin", "[NAME] and [NAME]"),
        ("Seo-yeon at bedside", "[NAME] at bedside"),
        ("Kim was seen", "Kim was seen"),  # a surname alone in Latin script is too common
    ],
)
def test_romanized_forms_of_hangul_names(text: str, expected: str) -> None:
    assert scrub_text(text, KOREAN_ONLY).text == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("문유진 교수 협진 의뢰함", "[NAME] 교수 협진 의뢰함"),
        ("민준 선생님께 인계함", "[NAME] 선생님께 인계함"),
        ("박 간호사 확인함", "[NAME] 간호사 확인함"),
        ("오씨 내원", "[NAME]씨 내원"),
        ("딸 김서연에게 설명함", "딸 [NAME]에게 설명함"),
        ("고영숙(배우자) 연락처", "[NAME](배우자) 연락처"),
        ("주치의 선생님께 보고", "주치의 선생님께 보고"),
        ("담당 간호사 확인", "담당 간호사 확인"),
        ("이 환자는 고령 환자로", "이 환자는 고령 환자로"),
        ("그 간호사가 확인, 각 과장 및 간호사", "그 간호사가 확인, 각 과장 및 간호사"),
        ("Dr. J. Turner consulted", "Dr. [NAME] consulted"),
        ("daughter Emily at bedside", "daughter [NAME] at bedside"),
        ("Spoke with Sarah Johnson (daughter)", "Spoke with [NAME] (daughter)"),
        ("Jason Sullivan, RN, gave", "[NAME], RN, gave"),
        ("보호자 Sarah Johnson 에게", "보호자 [NAME] 에게"),
        ("Dr. on call notified; son was informed", "Dr. on call notified; son was informed"),
        ("Mason and Johnson's", "Mason and Johnson's"),
    ],
)
def test_names_found_by_cues(text: str, expected: str) -> None:
    assert scrub_text(text).text == expected


@pytest.mark.parametrize(
    "eponym",
    ["Wilson's disease", "Baker's cyst", "Allen test", "Foley catheter", "Hodgkin lymphoma"],
)
def test_eponyms_survive_a_shared_surname(eponym: str) -> None:
    surname = eponym.split("'")[0].split()[0]
    ids = Identifiers.of(names=[(surname, "Anna")])
    text = f"Mr. {surname} has {eponym}."
    assert scrub_text(text, ids).text == f"Mr. [NAME] has {eponym}."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("서울 마포구 월드컵로 381, 101동 1203호", "서울 [ADDRESS], [ADDRESS]"),
        ("Lives at 1234 Elm Street, Apt 5B.", "Lives at [ADDRESS], Apt [ADDRESS]."),
        ("seen on 5/17; 3/13에 내원", "seen on [DATE]; [DATE]에 내원"),
        ("23-Feb-2026 재검", "[DATE] 재검"),
        ("1/2 tab, motor 5/5, VAS 7/10", "1/2 tab, motor 5/5, VAS 7/10"),
        ("800101 - 1234567", "[RRN]"),
        ("call 1-212-555-0187", "call [PHONE]"),
        ("a ninety-two-year-old man", "a [AGE 90+] man"),
        ("아흔두 살, 백팔 세", "[AGE 90+], [AGE 90+]"),
        ("specimen SP26-004512", "specimen [ID]"),
        ("SNOMED 44054006, 경구로 500 mg", "SNOMED 44054006, 경구로 500 mg"),
    ],
)
def test_pattern_misses_of_issue_16(text: str, expected: str) -> None:
    assert scrub_text(text).text == expected


# -- the cheaper searches keep their boundaries (issue 16, scrub cost) -------------------------

_FAST_PATH_IDS = Identifiers.of(
    names=[("김", "민준"), ("이", "서연")], ids=["97641229"], phones=["010-2029-7299"]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # literal search in the squeezed text: up to three separators between characters, hit
        # positions mapped back after many cuts
        ("MRN 9764 - 1229", "MRN [ID]"),
        ("MRN 9764 -- 1229", "MRN 9764 -- 1229"),
        ("9.7.6.4.1.2.2.9", "[ID]"),
        (
            "a, b. c d-e (f) MRN 9764-1229, tel 010 2029 7299.",
            "a, b. c d-e (f) MRN [ID], tel [PHONE].",
        ),
        # romanized names: from a word that starts with a capital, up to three separators
        ("KIM  MINJUN called", "[NAME] called"),
        ("Lee,  Seo-Yeon", "[NAME]"),
        ("Min Jun Kim", "[NAME]"),
        ("Kim -- , Minjun", "Kim -- , [NAME]"),
        ("McKim Minjun", "McKim [NAME]"),
        ("seoyeon lee", "seoyeon lee"),
        # URLs: a scheme after a digit but not after a letter, www. and bare domains
        ("1http://snuh.org/a", "1[URL]"),
        ("ahttp://snuh.org/a", "ahttp://[URL]"),
        ("FTP://files.snuh.ac.kr/x", "[URL]"),
        ("see www.snuh.org.", "see [URL]."),
        ("@snuh.org", "@snuh.org"),
        # name shape: compound surnames (독 is one only as 독고), not inside a word
        ("남궁민수에게 설명함", "[NAME]에게 설명함"),
        ("독고준에게 설명", "[NAME]에게 설명"),
        ("김남궁민에게", "김남궁민에게"),
        ("A송수빈에게", "A[NAME]에게"),
    ],
)
def test_fast_paths_keep_their_boundaries(text: str, expected: str) -> None:
    options = ScrubOptions(long_number_digits=None)
    assert scrub_text(text, _FAST_PATH_IDS, options=options).text == expected
