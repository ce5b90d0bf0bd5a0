"""A seeded generator of a synthetic HL7 v2.5.1 sample feed (no real patient data).

A development tool: it wrote ops/demo/sample-feed.hl7, the feed that ``hl7bus demo`` sends and
that tests and benchmarks read; tests/test_samplefeed.py checks that it still does.

Everything is derived from one ``random.Random(seed)``: the same seed always gives the same
feed, byte for byte (no global ``random``, no clock). Names, addresses, phone numbers, MRNs and
resident registration numbers are random combinations of small built-in tables; any resemblance
to a real person is chance.

The feed is one hospital day (2026-11-27, times with a ``+0900`` offset) at three consortium
hospitals (SNUH Seoul, PNUH Busan, KNUH Daegu). Per patient, in time order:

1. ``ADT^A04`` (registration: outpatient ``O`` or emergency ``E``) or ``ADT^A01`` (admission,
   inpatient ``I``): MSH, EVN, PID, PV1;
2. sometimes an ``ADT^A08`` (update: a new mobile number or a new address), placed anywhere after
   the registration; later messages of that patient carry the updated PID;
3. 2-5 ``ORU^R01`` lab results: MSH, PID, PV1 (usually), ORC, OBR (a LOINC panel), 3-10 OBX, and
   occasionally an NTE in Korean that names the patient (and sometimes their phone number), for
   de-identification tests. Most results are final (``F``); some orders are sent preliminary
   (``P``) and then final, some final and then corrected (``C``, same order numbers).

Patients are interleaved across the day; a patient's own messages are strictly increasing in time.

Format decisions:

- ``generate_feed`` returns one ``str`` per message, segments joined by ``"\\r"`` and **no**
  trailing ``"\\r"``.
- The feed file (``write_feed`` / ``feed_text``) is UTF-8 without BOM. Every segment ends with
  ``"\\r"`` (the last one too) and every message is followed by one ``"\\n"``; i.e. each message is
  written as ``message + "\\r\\n"``. Every message starts with ``MSH``, so a batch reader can split
  at each ``MSH`` at the start of a line; ``split_feed`` does exactly that.
- MSH-10 (control id) is ``<hospital code><yyyymmdd><5-digit sequence>``, unique across the feed.
- PID-3: ``<8-digit MRN>^^^<hospital>^MR``, sometimes a second repetition
  ``P<7 digits>^^^<hospital>^PI``.
- PID-5 (XPN): the Hangul name first, then the same name in Latin script (Revised Romanization
  per syllable, conventional spellings for surnames):
  ``김^민준^^^^^L^I~KIM^MINJUN^^^^^L^A`` (XPN-7 name type ``L`` legal, XPN-8 representation
  ``I`` for the non-Latin script and ``A`` for the alphabetic one, HL7 table 0465).
- PID-11 (XAD): ``테헤란로 123^<apartment or empty>^강남구^서울특별시^06123^KOR^H``
  (street, other designation, district as city, metropolitan city as state, postal code).
- PID-13 (XTN): ``010-1234-5678^PRN^CP``, sometimes ``~02-123-4567^PRN^PH`` (area code of the
  hospital's city: 02 Seoul, 051 Busan, 053 Daegu).
- PID-19: a synthetic resident registration number ``YYMMDD-GNNNNNN``: G = 1/2 (male/female,
  born 1900-1999) or 3/4 (born 2000-2099); the six digits after G are random (post-2020 style,
  no check digit). Patients of unknown sex (``U``) get either digit of the pair.
- OBX: ``NM`` numeric results with unit, reference range and flag ``L``/``H``/``N`` computed from
  the rounded value; ``SN`` below the reporting limit (``<^0.1``); ``ST`` qualitative urine results
  (flag ``N`` or ``A``). OBX-14 is the specimen collection time.

Command line: ``python tests/samplefeed.py --seed 7 --out ops/demo/sample-feed.hl7``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone

from hl7bus.hl7v2 import DEFAULT_ENCODING, escape

# --------------------------------------------------------------------------------------------
# Data tables
# --------------------------------------------------------------------------------------------

FEED_DAY = date(2026, 11, 27)
KST = timezone(timedelta(hours=9))
RECEIVING_APP = "HL7BUS"
RECEIVING_FACILITY = "CONSORTIUM"
DEFAULT_SEED = 7
DEFAULT_PATIENTS = 60


@dataclass(frozen=True)
class Hospital:
    code: str  # MSH-4, assigning authority
    app: str  # MSH-3
    lis: str  # filler application (laboratory information system)
    city: str  # key into DISTRICTS
    landline_prefix: str


HOSPITALS: tuple[Hospital, ...] = (
    Hospital("SNUH", "SNUH-EMR", "SNUH-LIS", "서울특별시", "02"),
    Hospital("PNUH", "PNUH-EMR", "PNUH-LIS", "부산광역시", "051"),
    Hospital("KNUH", "KNUH-EMR", "KNUH-LIS", "대구광역시", "053"),
)
HOSPITAL_WEIGHTS = (5, 3, 2)

# Surname -> conventional Latin spelling. Two-syllable surnames included on purpose.
SURNAMES: dict[str, str] = {
    "김": "KIM", "이": "LEE", "박": "PARK", "최": "CHOI", "정": "JUNG", "강": "KANG",
    "조": "CHO", "윤": "YOON", "장": "JANG", "임": "LIM", "한": "HAN", "오": "OH",
    "서": "SEO", "신": "SHIN", "권": "KWON", "황": "HWANG", "안": "AHN", "송": "SONG",
    "류": "RYU", "홍": "HONG", "남궁": "NAMGUNG", "제갈": "JEGAL",
}  # fmt: skip
SURNAME_WEIGHTS: tuple[int, ...] = (
    21, 15, 8, 5, 5, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2,
)  # fmt: skip

# Given-name syllable -> Revised Romanization (no sound-change rules across syllables).
GIVEN_SYLLABLES: dict[str, str] = {
    "민": "MIN", "준": "JUN", "서": "SEO", "연": "YEON", "지": "JI", "우": "U",
    "현": "HYEON", "수": "SU", "영": "YEONG", "호": "HO", "은": "EUN", "하": "HA",
    "윤": "YUN", "도": "DO", "예": "YE", "진": "JIN", "성": "SEONG", "혜": "HYE",
    "재": "JAE", "원": "WON", "주": "JU", "아": "A", "희": "HUI", "태": "TAE",
    "경": "GYEONG", "동": "DONG", "상": "SANG", "유": "YU", "채": "CHAE", "건": "GEON",
    "승": "SEUNG", "다": "DA", "나": "NA", "소": "SO", "빈": "BIN", "석": "SEOK",
    "훈": "HUN", "미": "MI", "선": "SEON", "혁": "HYEOK", "규": "GYU", "숙": "SUK",
}  # fmt: skip


@dataclass(frozen=True)
class District:
    city: str
    name: str
    postal_prefix: str  # first 3 digits of the 5-digit postal code
    roads: tuple[str, ...]


DISTRICTS: tuple[District, ...] = (
    District("서울특별시", "강남구", "061", ("테헤란로", "도산대로", "언주로", "봉은사로")),
    District("서울특별시", "서초구", "065", ("반포대로", "서초대로", "양재대로")),
    District("서울특별시", "송파구", "056", ("올림픽로", "송파대로", "백제고분로")),
    District("서울특별시", "마포구", "040", ("마포대로", "월드컵로", "양화로")),
    District("서울특별시", "종로구", "031", ("종로", "율곡로", "대학로")),
    District("서울특별시", "노원구", "017", ("동일로", "노해로", "상계로")),
    District("서울특별시", "관악구", "087", ("관악로", "남부순환로", "봉천로")),
    District("부산광역시", "해운대구", "480", ("해운대로", "센텀중앙로", "좌동순환로")),
    District("부산광역시", "부산진구", "472", ("중앙대로", "가야대로", "서면로")),
    District("부산광역시", "서구", "492", ("구덕로", "대신공원로", "까치고개로")),
    District("부산광역시", "동래구", "477", ("충렬대로", "명륜로", "온천장로")),
    District("대구광역시", "중구", "419", ("국채보상로", "동덕로", "달구벌대로")),
    District("대구광역시", "수성구", "421", ("동대구로", "들안로", "수성로")),
    District("대구광역시", "달서구", "427", ("달서대로", "월배로", "성서로")),
    District("대구광역시", "북구", "415", ("칠곡중앙대로", "대현로", "침산로")),
)

APARTMENT_NAMES = ("래미안", "자이", "푸르지오", "힐스테이트", "e편한세상", "아이파크")


@dataclass(frozen=True)
class Visit:
    patient_class: str  # PV1-2: I inpatient, O outpatient, E emergency
    event: str  # registration trigger: A01 admit, A04 register
    service: str  # PV1-10 hospital service
    point_of_care: str  # PV1-3.1
    room_prefix: str  # "" when there are no rooms (clinics)


VISITS: tuple[Visit, ...] = (
    Visit("I", "A01", "MED", "71W", "71"),
    Visit("I", "A01", "SUR", "92W", "92"),
    Visit("I", "A01", "PED", "54W", "54"),
    Visit("O", "A04", "MED", "IMC", ""),
    Visit("O", "A04", "FM", "FMC", ""),
    Visit("O", "A04", "CAR", "CVC", ""),
    Visit("E", "A04", "EM", "ER", "E"),
)
VISIT_WEIGHTS = (3, 2, 1, 4, 2, 2, 3)


@dataclass(frozen=True)
class Analyte:
    loinc: str
    text: str
    unit: str
    low: float | None  # reference range; None: open-ended
    high: float | None
    gen_low: float  # plausible values are drawn from [gen_low, gen_high]
    gen_high: float
    decimals: int
    female: tuple[float, float] | None = None  # female reference range, if different
    reporting_limit: float | None = None  # below it: SN "<^limit"
    qualitative: tuple[str, ...] = ()  # ST results; the first one is normal


@dataclass(frozen=True)
class Panel:
    loinc: str
    text: str
    section: str  # OBR-24 diagnostic service section
    analytes: tuple[Analyte, ...]


def _nm(
    loinc: str, text: str, unit: str, ref: tuple[float | None, float | None],
    gen: tuple[float, float], decimals: int, female: tuple[float, float] | None = None,
    reporting_limit: float | None = None,
) -> Analyte:  # fmt: skip
    return Analyte(loinc, text, unit, ref[0], ref[1], gen[0], gen[1], decimals, female,
                   reporting_limit)  # fmt: skip


def _st(loinc: str, text: str, values: tuple[str, ...]) -> Analyte:
    return Analyte(loinc, text, "", None, None, 0.0, 0.0, 0, qualitative=values)


PANELS: tuple[Panel, ...] = (
    Panel("58410-2", "CBC panel - Blood by Automated count", "HM", (
        _nm("6690-2", "WBC", "10*3/uL", (4.0, 10.0), (2.5, 16.0), 1),
        _nm("789-8", "RBC", "10*6/uL", (4.5, 5.9), (3.2, 6.3), 2, female=(4.0, 5.2)),
        _nm("718-7", "Hemoglobin", "g/dL", (13.0, 17.0), (8.5, 18.5), 1, female=(12.0, 16.0)),
        _nm("4544-3", "Hematocrit", "%", (39.0, 52.0), (27.0, 55.0), 1, female=(36.0, 48.0)),
        _nm("787-2", "MCV", "fL", (80.0, 100.0), (72.0, 106.0), 1),
        _nm("785-6", "MCH", "pg", (27.0, 33.0), (24.0, 36.0), 1),
        _nm("786-4", "MCHC", "g/dL", (32.0, 36.0), (30.5, 37.0), 1),
        _nm("777-3", "Platelets", "10*3/uL", (150.0, 400.0), (70.0, 520.0), 0),
        _nm("770-8", "Neutrophils/100 leukocytes", "%", (40.0, 75.0), (30.0, 90.0), 1),
        _nm("736-9", "Lymphocytes/100 leukocytes", "%", (20.0, 45.0), (8.0, 50.0), 1),
    )),
    Panel("51990-0", "Basic metabolic panel - Blood", "CH", (
        _nm("2345-7", "Glucose", "mg/dL", (70.0, 99.0), (60.0, 240.0), 0),
        _nm("3094-0", "Urea nitrogen", "mg/dL", (7.0, 20.0), (4.0, 45.0), 0),
        _nm("2160-0", "Creatinine", "mg/dL", (0.7, 1.3), (0.4, 2.8), 2, female=(0.6, 1.1)),
        _nm("2951-2", "Sodium", "mmol/L", (135.0, 145.0), (127.0, 150.0), 0),
        _nm("2823-3", "Potassium", "mmol/L", (3.5, 5.1), (2.9, 6.0), 1),
        _nm("2075-0", "Chloride", "mmol/L", (98.0, 107.0), (92.0, 112.0), 0),
        _nm("2028-9", "Carbon dioxide", "mmol/L", (22.0, 29.0), (17.0, 33.0), 0),
        _nm("17861-6", "Calcium", "mg/dL", (8.6, 10.3), (7.6, 11.2), 1),
    )),
    Panel("24325-3", "Hepatic function 2000 panel - Serum or Plasma", "CH", (
        _nm("1742-6", "ALT", "U/L", (0.0, 40.0), (6.0, 160.0), 0),
        _nm("1920-8", "AST", "U/L", (0.0, 40.0), (10.0, 150.0), 0),
        _nm("6768-6", "Alkaline phosphatase", "U/L", (44.0, 147.0), (30.0, 260.0), 0),
        _nm("1975-2", "Bilirubin.total", "mg/dL", (0.3, 1.2), (0.2, 3.5), 1),
        _nm("1968-7", "Bilirubin.direct", "mg/dL", (0.0, 0.3), (0.02, 1.2), 1,
            reporting_limit=0.1),
        _nm("1751-7", "Albumin", "g/dL", (3.5, 5.2), (2.4, 5.4), 1),
        _nm("2885-2", "Protein", "g/dL", (6.4, 8.3), (5.2, 8.8), 1),
    )),
    Panel("24331-1", "Lipid 1996 panel - Serum or Plasma", "CH", (
        _nm("2093-3", "Cholesterol", "mg/dL", (None, 200.0), (120.0, 290.0), 0),
        _nm("2571-8", "Triglyceride", "mg/dL", (None, 150.0), (40.0, 420.0), 0),
        _nm("2085-9", "HDL Cholesterol", "mg/dL", (40.0, None), (25.0, 90.0), 0),
        _nm("13457-7", "LDL Cholesterol (calc)", "mg/dL", (None, 130.0), (50.0, 210.0), 0),
    )),
    Panel("24356-8", "Urinalysis complete panel - Urine", "UR", (
        _nm("5803-2", "pH of Urine by Test strip", "[pH]", (5.0, 8.0), (4.5, 8.5), 1),
        _nm("5811-5", "Specific gravity of Urine by Test strip", "", (1.005, 1.030),
            (1.002, 1.035), 3),
        _st("5804-0", "Protein [Mass/volume] in Urine by Test strip",
            ("Negative", "Trace", "1+", "2+")),
        _st("5792-7", "Glucose [Mass/volume] in Urine by Test strip",
            ("Negative", "Trace", "1+")),
        _st("5794-3", "Hemoglobin [Presence] in Urine by Test strip",
            ("Negative", "Trace", "1+", "2+")),
        _st("5799-2", "Leukocyte esterase [Presence] in Urine by Test strip",
            ("Negative", "1+", "2+")),
    )),
    Panel("50190-5", "Iron and Iron binding capacity panel - Serum or Plasma", "CH", (
        _nm("2498-4", "Iron", "ug/dL", (60.0, 170.0), (20.0, 210.0), 0),
        _nm("2500-7", "Iron binding capacity", "ug/dL", (250.0, 450.0), (200.0, 520.0), 0),
        _nm("2502-3", "Iron saturation", "%", (20.0, 50.0), (6.0, 60.0), 0),
    )),
)  # fmt: skip
PANEL_WEIGHTS = (6, 5, 3, 2, 2, 1)

# Korean free-text comments for NTE; {name}, {mobile} and {doctor} are filled in.
NOTE_TEMPLATES: tuple[str, ...] = (
    "{name} 환자 검체 용혈 소견 있어 재채취 권고함",
    "{name}님 공복 여부 확인 필요 (연락처 {mobile})",
    "{name} 환자 이전 결과와 비교 요망, 담당 {doctor} 교수에게 통보함",
    "{name}님 보호자에게 결과 전화 통보함 ({mobile})",
    "{name} 환자 채혈 지연으로 검체 도착 늦음",
)
CORRECTION_TEMPLATE = "{name} 환자 결과 수정: 검체 라벨 오류 확인 후 재검"

# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    surname: str
    given: str
    surname_latin: str
    given_latin: str

    @property
    def hangul(self) -> str:
        return self.surname + self.given


@dataclass(frozen=True)
class Doctor:
    id: str
    name: Person


@dataclass(frozen=True)
class Address:
    street: str  # road name and building number
    detail: str  # apartment and unit, or ""
    district: str
    city: str
    postal_code: str


@dataclass(frozen=True)
class Patient:
    index: int
    hospital: Hospital
    mrn: str
    alt_id: str | None
    name: Person
    birth: date
    sex: str
    rrn: str
    address: Address
    mobile: str
    landline: str | None
    visit: Visit
    location: str  # PV1-3 (PL)
    attending: Doctor
    visit_number: str
    registered: datetime


@dataclass(frozen=True)
class Observation:
    analyte: Analyte
    value_type: str  # NM, SN or ST
    value: str
    flag: str  # N, L, H or A
    reference: str


@dataclass(frozen=True)
class AdtEvent:
    time: datetime
    patient: Patient
    trigger: str  # A01, A04, A08


@dataclass(frozen=True)
class LabEvent:
    time: datetime
    patient: Patient
    panel: Panel
    placer: str
    filler: str
    collected: datetime
    status: str  # F, P or C (OBR-25)
    observations: tuple[Observation, ...]
    corrected: int | None  # index of the corrected OBX when status is C
    note: str | None


Event = AdtEvent | LabEvent


@dataclass
class _Counters:
    """Per-feed sequences and uniqueness sets, so generated identifiers never collide."""

    mrns: set[str]
    rrns: set[str]
    orders: int = 0
    visits: int = 0


# --------------------------------------------------------------------------------------------
# Random building blocks
# --------------------------------------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _person(rng: random.Random, compound_surname: bool = False) -> Person:
    if compound_surname:
        surname = rng.choice([s for s in SURNAMES if len(s) == 2])
    else:
        surname = rng.choices(list(SURNAMES), weights=SURNAME_WEIGHTS)[0]
    syllables = list(GIVEN_SYLLABLES)
    # 2-4 syllables in all: two-syllable surnames and one-syllable given names exist.
    count = 1 if rng.random() < 0.12 else 2
    given = [rng.choice(syllables) for _ in range(count)]
    return Person(
        surname=surname,
        given="".join(given),
        surname_latin=SURNAMES[surname],
        given_latin="".join(GIVEN_SYLLABLES[s] for s in given),
    )


def _doctors(rng: random.Random) -> dict[str, tuple[Doctor, ...]]:
    return {
        h.code: tuple(Doctor(f"D{_digits(rng, 5)}", _person(rng)) for _ in range(6))
        for h in HOSPITALS
    }


def _birth_date(rng: random.Random, age: int) -> date:
    """A birth date such that the patient is exactly ``age`` years old on FEED_DAY."""
    latest = FEED_DAY.replace(year=FEED_DAY.year - age)
    earliest = FEED_DAY.replace(year=FEED_DAY.year - age - 1) + timedelta(days=1)
    return earliest + timedelta(days=rng.randrange((latest - earliest).days + 1))


def _age(rng: random.Random, index: int) -> int:
    if index % 15 == 4:  # a few patients over 89 in every feed (Safe Harbor's 90+ rule)
        return rng.randint(90, 99)
    return rng.randint(rng.choice((0, 20, 45)), 89)  # skewed towards adults


def rrn_gender_digits(birth: date) -> tuple[str, str]:
    """The (male, female) gender digits G of a resident registration number for ``birth``."""
    if 1900 <= birth.year <= 1999:
        return "1", "2"
    if 2000 <= birth.year <= 2099:
        return "3", "4"
    raise ValueError("birth year outside 1900-2099")


def _rrn(rng: random.Random, birth: date, sex: str, taken: set[str]) -> str:
    male, female = rrn_gender_digits(birth)
    g = {"M": male, "F": female}.get(sex) or rng.choice((male, female))
    while True:
        rrn = f"{birth:%y%m%d}-{g}{_digits(rng, 6)}"
        if rrn not in taken:
            taken.add(rrn)
            return rrn


def _mrn(rng: random.Random, taken: set[str]) -> str:
    while True:
        mrn = str(rng.randrange(10_000_000, 100_000_000))
        if mrn not in taken:
            taken.add(mrn)
            return mrn


def _address(rng: random.Random, city: str) -> Address:
    district = rng.choice([d for d in DISTRICTS if d.city == city])
    street = f"{rng.choice(district.roads)} {rng.randint(1, 420)}"
    if rng.random() < 0.5:
        detail = f"{rng.choice(APARTMENT_NAMES)} {rng.randint(101, 125)}동 {rng.randint(1, 25)}{rng.randint(1, 8):02d}호"  # noqa: E501
    else:
        detail = ""
    return Address(street, detail, district.name, district.city,
                   f"{district.postal_prefix}{_digits(rng, 2)}")  # fmt: skip


def _mobile(rng: random.Random) -> str:
    return f"010-{_digits(rng, 4)}-{_digits(rng, 4)}"


def _landline(rng: random.Random, prefix: str) -> str:
    first = str(rng.randint(2, 9)) + _digits(rng, 2 if prefix == "02" else 3)
    return f"{prefix}-{first}-{_digits(rng, 4)}"


def _location(rng: random.Random, visit: Visit, hospital: Hospital) -> str:
    if not visit.room_prefix:
        return f"{visit.point_of_care}^^^{hospital.code}"
    if visit.patient_class == "E":
        return f"{visit.point_of_care}^{visit.room_prefix}{rng.randint(1, 24):02d}^^{hospital.code}"
    room = f"{visit.room_prefix}{rng.randint(1, 30):02d}"
    return f"{visit.point_of_care}^{room}^{rng.randint(1, 6)}^{hospital.code}"


def _minutes(rng: random.Random, low: int, high: int) -> timedelta:
    return timedelta(minutes=rng.randint(low, high), seconds=rng.randrange(60))


# --------------------------------------------------------------------------------------------
# Lab results
# --------------------------------------------------------------------------------------------


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _reference(analyte: Analyte, sex: str) -> tuple[float | None, float | None, str]:
    low, high = analyte.female if analyte.female and sex == "F" else (analyte.low, analyte.high)
    d = analyte.decimals
    if low is None and high is not None:
        text = f"<{_fmt(high, d)}"
    elif high is None and low is not None:
        text = f">{_fmt(low, d)}"
    else:
        text = f"{_fmt(low or 0.0, d)}-{_fmt(high or 0.0, d)}"
    return low, high, text


def numeric_flag(value: float, low: float | None, high: float | None) -> str:
    """HL7 abnormal flag for a numeric result: L below the range, H above it, else N.

    Open-ended ranges follow their text: ``<200`` flags 200 as H, ``>40`` flags 40 as L.
    """
    if low is not None and (value < low if high is not None else value <= low):
        return "L"
    if high is not None and (value > high if low is not None else value >= high):
        return "H"
    return "N"


def _observation(rng: random.Random, analyte: Analyte, sex: str) -> Observation:
    if analyte.qualitative:
        value = analyte.qualitative[0] if rng.random() < 0.7 else rng.choice(analyte.qualitative)
        flag = "N" if value == analyte.qualitative[0] else "A"
        return Observation(analyte, "ST", value, flag, analyte.qualitative[0])
    low, high, reference = _reference(analyte, sex)
    mid = ((low if low is not None else analyte.gen_low)
           + (high if high is not None else analyte.gen_high)) / 2  # fmt: skip
    mode = min(max(mid, analyte.gen_low), analyte.gen_high)
    raw = rng.triangular(analyte.gen_low, analyte.gen_high, mode)
    limit = analyte.reporting_limit
    if limit is not None and (raw < limit or rng.random() < 0.3):
        shown = _fmt(limit, analyte.decimals)
        return Observation(analyte, "SN", f"<^{shown}", numeric_flag(limit, low, high), reference)
    value = _fmt(raw, analyte.decimals)
    return Observation(analyte, "NM", value, numeric_flag(float(value), low, high), reference)


def _observations(rng: random.Random, panel: Panel, sex: str) -> tuple[Observation, ...]:
    return tuple(_observation(rng, a, sex) for a in panel.analytes)


def _correct(rng: random.Random, obs: tuple[Observation, ...], sex: str) -> tuple[int, Observation]:
    """Pick a numeric observation and give it a new value (for a corrected report)."""
    numeric = [i for i, o in enumerate(obs) if o.value_type == "NM"] or [0]
    i = rng.choice(numeric)
    return i, _observation(rng, obs[i].analyte, sex)


def _note(rng: random.Random, patient: Patient, corrected: bool) -> str | None:
    if corrected:
        return CORRECTION_TEMPLATE.format(name=patient.name.hangul)
    if rng.random() >= 0.12:
        return None
    return rng.choice(NOTE_TEMPLATES).format(
        name=patient.name.hangul, mobile=patient.mobile,
        doctor=patient.attending.name.hangul,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Planning: patients and their events
# --------------------------------------------------------------------------------------------


def _patient(
    rng: random.Random, index: int, doctors: dict[str, tuple[Doctor, ...]], counters: _Counters
) -> Patient:
    hospital = rng.choices(HOSPITALS, weights=HOSPITAL_WEIGHTS)[0]
    age = _age(rng, index)
    birth = _birth_date(rng, age)
    sex = rng.choices(("M", "F", "U"), weights=(48, 49, 3))[0]
    visit = rng.choices(VISITS, weights=VISIT_WEIGHTS)[0]
    if visit.service == "PED" and age > 18:
        visit = VISITS[0]
    counters.visits += 1
    registered = datetime.combine(FEED_DAY, datetime.min.time(), KST) + timedelta(
        hours=7, minutes=rng.randrange(6 * 60), seconds=rng.randrange(60)
    )
    return Patient(
        index=index,
        hospital=hospital,
        mrn=_mrn(rng, counters.mrns),
        alt_id=f"P{_digits(rng, 7)}" if rng.random() < 0.25 else None,
        name=_person(rng, compound_surname=index % 20 == 9),  # a few in every feed
        birth=birth,
        sex=sex,
        rrn=_rrn(rng, birth, sex, counters.rrns),
        address=_address(rng, hospital.city),
        mobile=_mobile(rng),
        landline=_landline(rng, hospital.landline_prefix) if rng.random() < 0.35 else None,
        visit=visit,
        location=_location(rng, visit, hospital),
        attending=rng.choice(doctors[hospital.code]),
        visit_number=f"V{FEED_DAY:%y%m%d}{counters.visits:05d}",
        registered=registered,
    )


def _updated(rng: random.Random, patient: Patient) -> Patient:
    """The patient after an A08: a new mobile number or a new address."""
    if rng.random() < 0.5:
        return replace(patient, mobile=_mobile(rng))
    return replace(patient, address=_address(rng, patient.hospital.city))


def _lab_events(
    rng: random.Random, patient: Patient, start: datetime, panel: Panel, counters: _Counters,
    statuses: Sequence[str],
) -> list[LabEvent]:  # fmt: skip
    """One order: one ORU per status in ``statuses`` (F, P then F, or F then C)."""
    counters.orders += 1
    placer = f"{patient.hospital.code[0]}O{FEED_DAY:%y%m%d}{counters.orders:05d}"
    filler = f"{patient.hospital.code[0]}L{FEED_DAY:%y%m%d}{counters.orders:05d}"
    collected = start - _minutes(rng, 15, 40)
    observations = _observations(rng, panel, patient.sex)
    events: list[LabEvent] = []
    time = start
    for n, status in enumerate(statuses):
        if n:
            time += _minutes(rng, 30, 90)
        corrected = None
        if status == "C":
            corrected, new = _correct(rng, observations, patient.sex)
            observations = (*observations[:corrected], new, *observations[corrected + 1 :])
        events.append(LabEvent(
            time=time, patient=patient, panel=panel, placer=placer, filler=filler,
            collected=collected, status=status, observations=observations, corrected=corrected,
            note=_note(rng, patient, status == "C"),
        ))  # fmt: skip
    return events


def _patient_events(
    rng: random.Random, patient: Patient, counters: _Counters
) -> list[tuple[int, Event]]:
    """All messages of one patient, as (step, event), strictly increasing in time."""
    events: list[Event] = [AdtEvent(patient.registered, patient, patient.visit.event)]
    remaining = rng.randint(2, 5)  # ORU messages for this patient
    update_after = rng.randrange(remaining + 1) if rng.random() < 0.35 else None
    time = patient.registered
    current = patient
    done = 0
    while done < remaining:
        if update_after == done:
            time += _minutes(rng, 5, 60)
            current = _updated(rng, current)
            events.append(AdtEvent(time, current, "A08"))
            update_after = None
        paths: tuple[tuple[str, ...], ...] = (("F",), ("P", "F"), ("F", "C"))
        statuses = rng.choices(paths, weights=(80, 10, 10))[0][: remaining - done]
        time += _minutes(rng, 40, 90)
        panel = rng.choices(PANELS, weights=PANEL_WEIGHTS)[0]
        labs = _lab_events(rng, current, time, panel, counters, statuses)
        events.extend(labs)
        time = labs[-1].time
        done += len(labs)
    if update_after is not None:
        time += _minutes(rng, 5, 60)
        events.append(AdtEvent(time, _updated(rng, current), "A08"))
    return list(enumerate(events))


def plan_feed(seed: int = DEFAULT_SEED, patients: int = DEFAULT_PATIENTS) -> list[Event]:
    """The feed's events in send order (time, then patient, then the patient's own order)."""
    if patients < 0:
        raise ValueError("patients must be >= 0")
    rng = random.Random(seed)
    doctors = _doctors(rng)
    counters = _Counters(mrns=set(), rrns=set())
    keyed: list[tuple[datetime, int, int, Event]] = []
    for index in range(patients):
        patient = _patient(rng, index, doctors, counters)
        for step, event in _patient_events(rng, patient, counters):
            keyed.append((event.time, index, step, event))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def escape_text(value: str) -> str:
    """Free text as one field value: HL7 delimiters escaped (the feed's default ones)."""
    return escape(value, DEFAULT_ENCODING)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: encoded value}; MSH counts MSH-1 as the separator."""
    first = 2 if name == "MSH" else 1
    last = max(fields, default=first - 1)
    return "|".join([name, *(fields.get(i, "") for i in range(first, last + 1))])


def _msh(event: Event, control_id: str) -> str:
    h = event.patient.hospital
    if isinstance(event, LabEvent):
        message_type = "ORU^R01^ORU_R01"
    else:
        structure = "ADT_A01"  # A01, A04 and A08 share the ADT_A01 structure
        message_type = f"ADT^{event.trigger}^{structure}"
    # MSH-15/16 empty: original acknowledgment mode (AA/AE/AR), what most EMR feeds use.
    return _segment("MSH", {
        2: "^~\\&", 3: h.app, 4: h.code, 5: RECEIVING_APP, 6: RECEIVING_FACILITY,
        7: _ts(event.time), 9: message_type, 10: control_id, 11: "P", 12: "2.5.1",
        17: "KOR", 18: "UNICODE UTF-8",
    })  # fmt: skip


def _xpn(p: Person) -> str:
    return f"{p.surname}^{p.given}^^^^^L^I~{p.surname_latin}^{p.given_latin}^^^^^L^A"


def _xcn(d: Doctor, authority: str) -> str:
    return f"{d.id}^{d.name.surname}^{d.name.given}^^^^^^{authority}^L"


def _xad(a: Address) -> str:
    return "^".join((escape_text(a.street), escape_text(a.detail), a.district, a.city,
                     a.postal_code, "KOR", "H"))  # fmt: skip


def _pid(p: Patient) -> str:
    ids = f"{p.mrn}^^^{p.hospital.code}^MR"
    if p.alt_id:
        ids += f"~{p.alt_id}^^^{p.hospital.code}^PI"
    phones = f"{p.mobile}^PRN^CP"
    if p.landline:
        phones += f"~{p.landline}^PRN^PH"
    return _segment("PID", {
        1: "1", 3: ids, 5: _xpn(p.name), 7: f"{p.birth:%Y%m%d}", 8: p.sex, 11: _xad(p.address),
        13: phones, 19: p.rrn,
    })  # fmt: skip


def _pv1(p: Patient) -> str:
    h = p.hospital.code
    return _segment("PV1", {
        1: "1", 2: p.visit.patient_class, 3: p.location,
        4: {"I": "R", "O": "R", "E": "E"}[p.visit.patient_class],
        7: _xcn(p.attending, h), 10: p.visit.service, 19: f"{p.visit_number}^^^{h}^VN",
        44: _ts(p.registered),
    })  # fmt: skip


def _render_adt(e: AdtEvent, control_id: str) -> list[str]:
    return [
        _msh(e, control_id),
        _segment("EVN", {1: e.trigger, 2: _ts(e.time), 6: _ts(e.time)}),
        _pid(e.patient),
        _pv1(e.patient),
    ]


def _obx(n: int, o: Observation, status: str, collected: datetime) -> str:
    a = o.analyte
    return _segment("OBX", {
        1: str(n), 2: o.value_type, 3: f"{a.loinc}^{a.text}^LN", 5: o.value, 6: a.unit,
        7: o.reference, 8: o.flag, 11: status, 14: _ts(collected),
    })  # fmt: skip


def _render_oru(e: LabEvent, control_id: str) -> list[str]:
    p = e.patient
    h = p.hospital
    doctor = _xcn(p.attending, h.code)
    segments = [_msh(e, control_id), _pid(p)]
    if p.index % 7 != 3:  # PV1 is optional in ORU_R01; most senders include it
        segments.append(_pv1(p))
    segments.append(_segment("ORC", {
        1: "RE", 2: f"{e.placer}^{h.app}", 3: f"{e.filler}^{h.lis}",
        5: "IP" if e.status == "P" else "CM", 9: _ts(e.time), 12: doctor,
    }))  # fmt: skip
    segments.append(_segment("OBR", {
        1: "1", 2: f"{e.placer}^{h.app}", 3: f"{e.filler}^{h.lis}",
        4: f"{e.panel.loinc}^{e.panel.text}^LN", 7: _ts(e.collected), 16: doctor,
        22: _ts(e.time), 24: e.panel.section, 25: e.status,
    }))  # fmt: skip
    for n, o in enumerate(e.observations, start=1):
        status = e.status if e.status != "C" else ("C" if n - 1 == e.corrected else "F")
        segments.append(_obx(n, o, status, e.collected))
    if e.note:
        segments.append(_segment("NTE", {1: "1", 2: "L", 3: escape_text(e.note)}))
    return segments


def render(event: Event, control_id: str) -> str:
    """One message: segments joined by "\\r", no trailing "\\r"."""
    if isinstance(event, LabEvent):
        return "\r".join(_render_oru(event, control_id))
    return "\r".join(_render_adt(event, control_id))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_feed(seed: int = DEFAULT_SEED, patients: int = DEFAULT_PATIENTS) -> list[str]:
    """The synthetic feed: one string per message, segments joined by "\\r", no trailing "\\r"."""
    return [
        render(event, f"{event.patient.hospital.code}{FEED_DAY:%Y%m%d}{n:05d}")
        for n, event in enumerate(plan_feed(seed, patients), start=1)
    ]


def feed_text(messages: Iterable[str]) -> str:
    """The file form: each message's segments end with "\\r", each message is followed by "\\n"."""
    return "".join(f"{m.rstrip(chr(13))}\r\n" for m in messages)


def split_feed(text: str) -> list[str]:
    """Split a feed file's text back into messages (inverse of ``feed_text``)."""
    parts = re.split(r"(?:\r\n|\r|\n)+(?=MSH\|)", text.lstrip("\ufeff").strip("\r\n"))
    return [p.rstrip("\r\n") for p in parts if p]


def write_feed(path: str | os.PathLike[str], messages: Iterable[str]) -> None:
    """Write the feed as UTF-8 (no BOM) in the ``feed_text`` form, creating parent folders."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(feed_text(messages).encode("utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/samplefeed.py",
        description="Write a synthetic, seeded HL7 v2.5.1 sample feed (no real patient data).",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS, help="patient count")
    parser.add_argument("--out", help="output file (default: standard output)")
    args = parser.parse_args(argv)
    messages = generate_feed(args.seed, args.patients)
    if args.out:
        write_feed(args.out, messages)
        print(f"wrote {len(messages)} messages to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(feed_text(messages).encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
