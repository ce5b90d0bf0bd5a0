"""An annotated synthetic set of clinical free-text notes for the scrubber (issue 16, point 6).

:func:`generate` makes ``count`` notes from a seed (the same seed, the same notes). Each note is
Korean, English or mixed, written as a clinician would: sentences that name the patient and the
doctors the message holds in its person fields, relatives and colleagues it does not hold,
romanized forms of names the message holds only in Hangul, and identifiers (dates, phones,
RRNs, record and specimen numbers, addresses, ages over 89, e-mail, URLs, IPs). Every span of
PHI is annotated with its category (:data:`CATEGORIES`); decoys are annotated too: clinical
words that must survive (drug names, eponymous diseases and tests such as Wilson's disease,
Baker's cyst, Allen test, also when the patient shares the surname; lab values, doses, codes,
times, department names, Korean words that begin with a surname syllable, role words without a
name).

Each note comes with the HL7 v2 message that carries it (:attr:`Note.message`), in one of
:data:`CARRIERS`: an ORU^R01 with the note in OBX-5 of value type TX, FT or ST (OBX-16 names the
responsible observer), in an NTE after a numeric OBX, or an MDM^T02 with TXA (author TXA-9,
TXA-5 primary activity provider) and the text in OBX-5. The message's PID-5 holds the patient
in Hangul (Korean patients; no Latin repetition, so that a romanized mention is found only by
romanizing) or in Latin script (English-speaking patients); PV1-7 the attending doctor.

How a note is scored (:func:`score`): a PHI span is caught when none of its probes (the span
itself, and for a full name its given name and surname of 2 or more letters; for an address
its road and unit) is left in the scrubbed text more often than the note has it outside PHI
spans (a surname that is also a decoy's eponym, ``Wilson`` of ``Wilson's disease``, is
allowed there). Latin and digit probes match as whole words, case-insensitively; Hangul probes
anywhere. A decoy survives when it is in the scrubbed text as often as in the note.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hl7bus.hl7v2 import DEFAULT_ENCODING, escape

__all__ = [
    "CARRIERS",
    "CATEGORIES",
    "Note",
    "Score",
    "Span",
    "generate",
    "score",
]

CATEGORIES = (
    "name",  # a person of the message's person fields (patient, doctors, observer, author)
    "name_romanized",  # a Latin-script form of a name the message holds only in Hangul
    "name_unlisted",  # relatives, colleagues, other doctors: in no structured field
    "address",
    "date",
    "phone",
    "rrn",
    "id",
    "age",
    "email",
    "url",
    "ip",
)
CARRIERS = ("OBX-TX", "OBX-FT", "OBX-ST", "NTE", "MDM")


@dataclass(frozen=True)
class Span:
    category: str
    text: str
    probes: tuple[str, ...]  # what must not be left of it (see the module docstring)


@dataclass(frozen=True)
class Note:
    number: int
    language: str  # ko, en, mixed
    carrier: str  # one of CARRIERS
    text: str
    phi: tuple[Span, ...]
    decoys: tuple[str, ...]
    message: bytes  # the HL7 v2 message carrying the note (segments separated by CR)
    unlisted_cue_free: int = 0  # unlisted names with no title or relationship word near them


# -- people --------------------------------------------------------------------------------

# Surname: Hangul, romanizations in use (the first is what a Latin field would hold).
_KR_SURNAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("김", ("Kim", "Gim")),
    ("이", ("Lee", "Yi", "Rhee")),
    ("박", ("Park", "Pak", "Bak")),
    ("최", ("Choi", "Choe")),
    ("정", ("Jung", "Jeong", "Chung")),
    ("강", ("Kang", "Gang")),
    ("조", ("Cho", "Jo")),
    ("윤", ("Yoon", "Yun")),
    ("장", ("Jang", "Chang")),
    ("임", ("Lim", "Im")),
    ("한", ("Han",)),
    ("오", ("Oh",)),
    ("서", ("Seo", "Suh")),
    ("신", ("Shin", "Sin")),
    ("권", ("Kwon", "Gwon")),
    ("황", ("Hwang",)),
    ("안", ("Ahn", "An")),
    ("송", ("Song",)),
    ("류", ("Ryu", "Yoo")),
    ("홍", ("Hong",)),
    ("전", ("Jeon", "Chun")),
    ("고", ("Ko", "Go")),
    ("문", ("Moon", "Mun")),
    ("남궁", ("Namgung",)),
    ("황보", ("Hwangbo",)),
)
# Given name: Hangul, romanizations in use (written joined; the note may hyphenate or space
# them at the syllable boundary).
_KR_GIVEN: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("민준", (("Min", "jun"), ("Min", "joon"))),
    ("서연", (("Seo", "yeon"), ("Suh", "yun"))),
    ("지훈", (("Ji", "hoon"), ("Ji", "hun"))),
    ("하은", (("Ha", "eun"),)),
    ("도윤", (("Do", "yun"), ("Do", "yoon"))),
    ("수빈", (("Su", "bin"), ("Soo", "bin"))),
    ("예준", (("Ye", "jun"), ("Ye", "joon"))),
    ("현우", (("Hyeon", "u"), ("Hyun", "woo"))),
    ("유진", (("Yu", "jin"), ("Yoo", "jin"))),
    ("성호", (("Seong", "ho"), ("Sung", "ho"))),
    ("영숙", (("Yeong", "suk"), ("Young", "sook"))),
    ("정희", (("Jeong", "hui"), ("Jung", "hee"))),
    ("상철", (("Sang", "cheol"), ("Sang", "chul"))),
    ("미경", (("Mi", "gyeong"), ("Mi", "kyung"))),
    ("은지", (("Eun", "ji"),)),
    ("동현", (("Dong", "hyeon"), ("Dong", "hyun"))),
    ("재원", (("Jae", "won"),)),
    ("혜진", (("Hye", "jin"),)),
    ("광수", (("Gwang", "su"), ("Kwang", "soo"))),
    ("순자", (("Sun", "ja"), ("Soon", "ja"))),
    ("태희", (("Tae", "hui"), ("Tae", "hee"))),
    ("준서", (("Jun", "seo"), ("Joon", "seo"))),
    ("경민", (("Gyeong", "min"), ("Kyung", "min"))),
    ("다은", (("Da", "eun"),)),
    ("석", (("Seok", ""), ("Suk", ""))),
    ("훈", (("Hun", ""), ("Hoon", ""))),
)
_EN_GIVEN = (
    "Emily", "James", "Sarah", "Michael", "Olivia", "Daniel", "Grace", "Thomas", "Hannah",
    "Robert", "Laura", "Kevin", "Rachel", "Brian", "Megan", "Steven", "Claire", "Jason",
)  # fmt: skip
_EN_FAMILY = (
    "Smith", "Johnson", "Miller", "Davis", "Thompson", "Carter", "Morgan", "Hughes", "Fischer",
    "Reed", "Collins", "Turner", "Whitaker", "Sullivan", "Harper", "Bennett",
)  # fmt: skip
# Surnames that are also eponyms of the decoys below (the patient shares the surname).
_EPONYM_FAMILY = {
    "Wilson": "Wilson's disease",
    "Baker": "Baker's cyst",
    "Allen": "Allen test",
    "Parkinson": "Parkinson's disease",
    "Graves": "Graves' disease",
    "Murphy": "Murphy's sign",
    "Bell": "Bell's palsy",
    "Foley": "Foley catheter",
    "Addison": "Addison's disease",
    "Cushing": "Cushing's syndrome",
    "Hodgkin": "Hodgkin lymphoma",
}


@dataclass(frozen=True)
class Person:
    family: str  # Hangul or Latin
    given: str
    latin: tuple[str, str] | None  # (family, given) romanized, for a Korean person
    korean: bool
    variants: tuple[tuple[str, tuple[str, str]], ...] = ()  # romanizations: (family, (g1, g2))

    @property
    def full(self) -> str:
        return f"{self.family}{self.given}" if self.korean else f"{self.given} {self.family}"


def _korean(rng: random.Random) -> Person:
    family, fam_latin = rng.choice(_KR_SURNAMES)
    given, given_latin = rng.choice(_KR_GIVEN)
    variants = tuple((f, g) for f in fam_latin for g in given_latin)
    g1, g2 = given_latin[0]
    return Person(family, given, (fam_latin[0], g1 + g2.lower()), True, variants)


def _english(rng: random.Random, family: str | None = None) -> Person:
    return Person(family or rng.choice(_EN_FAMILY), rng.choice(_EN_GIVEN), None, False)


# -- decoys --------------------------------------------------------------------------------

_DRUGS = (
    "metformin 500 mg", "amlodipine 5 mg", "atorvastatin 20 mg", "warfarin 2 mg",
    "heparin 5,000 units", "insulin glargine 12 units", "ceftriaxone 2 g", "pantoprazole 40 mg",
    "타이레놀 500mg", "와파린 2mg", "메트포르민 1000mg", "아스피린 100mg",
)  # fmt: skip
_EPONYMS = (
    "Wilson's disease", "Baker's cyst", "Allen test", "Parkinson's disease", "Graves' disease",
    "Murphy's sign", "Bell's palsy", "Foley catheter", "Addison's disease", "Cushing's syndrome",
    "Hodgkin lymphoma", "Crohn's disease", "Babinski sign", "Apgar score", "Kawasaki disease",
    "Glasgow Coma Scale", "Holter monitor", "Alzheimer's disease", "Down syndrome",
)  # fmt: skip
_EPONYMS_KO = ("윌슨병", "크론병", "파킨슨병", "가와사키병", "베이커 낭종", "알렌 검사")
_LABS = (
    "Hb 11.2 g/dL", "K 5.4 mmol/L", "Cr 1.12 mg/dL", "HbA1c 7.2%", "eGFR 48", "WBC 12,300",
    "CRP 3.45 mg/dL", "Na 131", "PLT 98K", "AST/ALT 45/62", "BP 130/85", "INR 2.3",
)  # fmt: skip
_CODES = ("ICD-10 E83.01", "LOINC 2823-3", "KCD I10", "EDI C3811", "CPT 80053", "SNOMED 44054006")
_TIMES = ("14:30", "09:15", "오전 9시", "오후 3시 30분", "22:40")
_DEPARTMENTS = (
    "신장내과", "내분비내과", "응급의학과", "소화기내과", "Cardiology", "Nephrology",
    "Internal Medicine", "ICU", "정형외과",
)  # fmt: skip
# Korean words that start with a surname syllable, and role words with no name.
_KO_WORDS = (
    "이상 소견", "정상 범위", "조영제", "안정적", "신장 기능", "장기간", "고혈압", "전해질",
    "한쪽 하지", "최근", "강직", "유지", "주치의 선생님", "담당 간호사", "보호자", "환자분",
    "서명 받음", "문제 없음", "오심 없음", "송부함",
)  # fmt: skip
# Clinical phrases whose first word has the shape of a Korean name (a surname syllable and one
# or two more, then a particle), written for the name-shape rule's precision (issue 16, second
# pass) from clinical vocabulary, not from the rule's stop list.
_KO_SHAPED = (
    "이상이 없음", "정상으로 회복", "조영제를 투여", "신장이 작아짐", "방광이 팽창",
    "문진에서 확인", "안정을 취함", "전해질이 교정됨", "고혈압이 조절됨", "유지를 권함",
    "장기간 복용", "진료를 받음", "수술을 권유", "김치를 먹은 후", "노인이 많음", "오심이 있음",
    "구토가 없음", "부종이 감소", "변비가 지속", "설사가 멈춤", "기침이 심함", "편도가 부음",
    "주사를 맞음", "임상적으로", "조직검사를 시행", "강직이 있음", "소변이 감소", "차도가 없음",
    "성장이 지연", "진정제를 투여", "황달이 심해짐", "홍반이 퍼짐", "현훈이 있음", "백혈구가 증가",
    "신경과에 의뢰", "심전도가 정상", "심장이 커짐", "오한이 있음", "한기가 듦", "명치가 아픔",
    "장음이 항진", "유방에 멍울", "안구가 충혈", "지혈이 됨", "마비가 진행", "전신이 쇠약",
    "진통제를 증량", "원인이 불명", "공복에 채혈", "사지가 저림", "염증이 호전", "고지혈증이 있음",
    "도뇨관을 제거", "배뇨가 원활", "조절이 안 됨", "석회화가 보임", "경련이 멈춤", "경과를 관찰",
    "호흡이 안정", "위내시경을 시행", "소화기 증상", "혈당이 상승", "하지가 부음", "우상복부 통증",
    "연하가 곤란", "남성의 경우", "양성으로 나옴", "음성의 결과", "손목이 부음", "허리가 아픔",
    "배액이 감소", "인슐린을 증량", "방사선을 조사", "용량을 줄임", "진균이 배양", "구강이 건조",
    "민감도가 높음", "표준 치료", "반응이 없음", "기관지가 좁아짐", "천명이 들림", "전원을 고려",
    "재원 기간", "서맥이 관찰", "상처가 벌어짐", "송곳니가 흔들림", "문합부가 좁음", "장루가 정상",
    "심근경색이 의심",
)  # fmt: skip
_EN_WORDS = ("the attending", "on-call resident", "Dr. on call", "nursing staff", "the family")


# -- identifiers ---------------------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _kr_phone(rng: random.Random) -> str:
    return rng.choice(
        (
            f"010-{rng.randint(2000, 9999)}-{_digits(rng, 4)}",
            f"02-{rng.randint(200, 999)}-{_digits(rng, 4)}",
            f"031-{rng.randint(200, 999)}-{_digits(rng, 4)}",
            f"010 {rng.randint(2000, 9999)} {_digits(rng, 4)}",
        )
    )


def _us_phone(rng: random.Random) -> str:
    a, b, c = rng.randint(201, 989), rng.randint(200, 989), _digits(rng, 4)
    return rng.choice((f"1-{a}-{b}-{c}", f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"1 ({a}) {b}-{c}"))


def _rrn(rng: random.Random) -> str:
    y, m, d = rng.randint(30, 99), rng.randint(1, 12), rng.randint(1, 28)
    back = f"{rng.choice('12')}{_digits(rng, 6)}"
    sep = rng.choice(("-", " - ", " -", "- "))
    return f"{y:02d}{m:02d}{d:02d}{sep}{back}"


def _date(rng: random.Random, korean: bool) -> str:
    y, m, d = rng.choice((2025, 2026)), rng.randint(1, 12), rng.randint(1, 28)
    mon = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    forms = [
        f"{y}-{m:02d}-{d:02d}",
        f"{y}.{m}.{d}.",
        f"{d:02d}-{mon[m - 1]}-{y}",
        f"{m}/{d}",
    ]
    forms += [f"{y}년 {m}월 {d}일", f"{m}월 {d}일"] if korean else [f"{mon[m - 1]} {d}, {y}"]
    return rng.choice(forms)


_ROADS = ("월드컵로", "테헤란로", "세종대로", "중앙로", "한강대로", "판교역로", "반포대로")
_DISTRICTS = ("마포구", "강남구", "종로구", "분당구", "해운대구", "수성구", "서초구")
_STREETS = ("Elm Street", "Maple Avenue", "Oak Drive", "Pine Road", "Cedar Lane")


def _age_words(rng: random.Random, korean: bool) -> str:
    tens, units = rng.choice((9, 10)), rng.randint(0, 9)
    if korean:
        ko_units = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
        sino = ("", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구")
        if tens == 9 and rng.random() < 0.5:
            return f"아흔{ko_units[units]} 살"
        return f"{'구십' if tens == 9 else '백'}{sino[units]} 세"
    en_units = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    base = "ninety" if tens == 9 else "one hundred"
    word = f"{base}-{en_units[units]}" if units and tens == 9 else base
    if tens == 10 and units:
        word = f"one hundred and {en_units[units]}"
    return rng.choice((f"{word}-year-old", f"{word} years old"))


# -- the writer ----------------------------------------------------------------------------


@dataclass
class _Writer:
    rng: random.Random
    parts: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    decoys: list[str] = field(default_factory=list)
    cue_free: int = 0

    def t(self, text: str) -> None:
        self.parts.append(text)

    def phi(self, category: str, text: str, *probes: str) -> None:
        self.parts.append(text)
        self.spans.append(Span(category, text, (text, *probes)))

    def decoy(self, text: str) -> None:
        self.parts.append(text)
        self.decoys.append(text)


def _probes_of(person: Person, text: str) -> tuple[str, ...]:
    """A name's parts that must go with it (a full name half-removed is not caught)."""
    out = []
    for part in (person.family, person.given):
        if len(part) >= 2 and part in text and part != text:
            out.append(part)
    return tuple(out)


@dataclass
class _Cast:
    patient: Person
    doctor: Person  # PV1-7 (and TXA-9 / OBX-16 when the carrier has them)
    observer: Person  # OBX-16 responsible observer or TXA-5: read by no scrubber before
    others: list[Person]  # relatives and colleagues: no structured field


def _name(w: _Writer, category: str, person: Person, form: str) -> None:
    """One mention of ``person`` in the form ``form``."""
    if form == "full":
        text = person.full
    elif form == "spaced" and person.korean:
        text = f"{person.family} {person.given}"
    elif form == "family":
        text = person.family
    elif form == "given":
        text = person.given
    else:
        text = person.full
    w.phi(category, text, *_probes_of(person, text))


def _romanized(w: _Writer, person: Person) -> None:
    """A Latin form of a Korean name (the message holds it in Hangul only)."""
    assert person.korean
    fam, (g1, g2) = w.rng.choice(person.variants)
    given = w.rng.choice(
        (
            g1 + g2.lower(),
            f"{g1}-{g2.lower()}",
            f"{g1} {g2.capitalize()}",
            f"{g1}-{g2.capitalize()}",
        )
        if g2
        else (g1,)
    )
    form = w.rng.randrange(5)
    if form == 0:
        text = f"{fam} {given}"
    elif form == 1:
        text = f"{given} {fam}"
    elif form == 2:
        text = f"{fam}, {given}"
    elif form == 3:
        text = f"{fam} {given}".upper()
    else:
        text = f"{fam.upper()}, {given.upper()}"
    fam_probe = fam if len(fam) >= 3 else ""
    w.phi("name_romanized", text, *(p for p in (fam_probe, given) if p and p != text))


# Sentences: each writes one sentence of a language with its PHI and decoys.
Sentence = Callable[[_Writer, _Cast], None]


def _ko_patient(w: _Writer, c: _Cast) -> None:
    p = c.patient
    if not p.korean:
        w.t("환자 ")
        _name(w, "name", p, "full")
        w.t("님 외래 내원. ")
        return
    form = w.rng.choice(("full", "spaced", "family_title", "given"))
    if form == "family_title":
        _name(w, "name", p, "family")
        w.t(w.rng.choice(("님 ", "씨 ", " 환자분 ")))
    elif form == "given":
        _name(w, "name", p, "given")
        w.t(w.rng.choice(("님이 ", " 님 ")))
    else:
        _name(w, "name", p, form)
        w.t(w.rng.choice((" 환자 ", "님 ", "씨는 ")))
    w.t(w.rng.choice(("외래 내원하여 ", "응급실 경유 입원, ", "정기 추적 관찰 중. ")))
    w.decoy(w.rng.choice(_KO_WORDS))
    w.t(". ")


def _ko_doctor(w: _Writer, c: _Cast) -> None:
    d = c.doctor if w.rng.random() < 0.6 else c.observer
    w.decoy(w.rng.choice(_DEPARTMENTS))
    w.t(" ")
    form = w.rng.choice(("full", "family", "full"))
    _name(w, "name", d, form)
    w.t(w.rng.choice((" 교수님께 ", " 교수께 ", " 선생님께 ", " 과장님께 ")))
    w.t("결과 보고함 (")
    w.decoy(w.rng.choice(_TIMES))
    w.t("). ")


def _ko_other(w: _Writer, c: _Cast) -> None:
    o = w.rng.choice(c.others)
    kind = w.rng.randrange(8)
    if not o.korean:
        w.t("보호자 ")
        _name(w, "name_unlisted", o, "full")
        w.t(" 에게 설명함. ")
        return
    if kind == 0:
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice((" 교수 ", " 교수님 ", " 선생님 ")))
        w.t("협진 의뢰함. ")
    elif kind == 1:
        _name(w, "name_unlisted", o, "given")
        w.t(w.rng.choice((" 선생님께 ", " 선생님이 ", "님께 ")))
        w.t("인계함. ")
    elif kind == 2:
        w.t(w.rng.choice(("보호자 ", "딸 ", "아들 ", "남편 ", "아내 ", "며느리 ")))
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice(("에게 설명함. ", " 님 동의서 서명. ", "씨와 통화함. ")))
    elif kind == 3:
        _name(w, "name_unlisted", o, "family")
        w.t(w.rng.choice((" 간호사 ", "간호사가 ", " 교수님께 ", "씨 ", "님 ")))
        w.t("확인함. ")
    elif kind == 4:
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice(("(딸) ", "(아들) ", "(보호자) ", "(배우자) ")))
        w.t("연락처 ")
        w.phi("phone", _kr_phone(w.rng))
        w.t(". ")
    elif kind == 5:
        w.t(w.rng.choice(("어머니 ", "아버지 ", "배우자 ", "형 ", "누나 ")))
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice(("님이 ", "씨가 ", " 님 ")))
        w.t("동행함. ")
    elif kind == 6:
        w.t("전공의 ")
        _name(w, "name_unlisted", o, "full")
        w.t(" 선생님 ")
        w.decoy(w.rng.choice(_TIMES))
        w.t(" 처치함. ")
    else:
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice(("에게 설명함. ", "이 동의서 서명함. ", "와 면담함. ")))
        w.cue_free += 1


def _ko_ids(w: _Writer, c: _Cast) -> None:
    kind = w.rng.randrange(7)
    if kind == 0:
        w.t("주민번호 ")
        w.phi("rrn", _rrn(w.rng))
        w.t(" 확인. ")
    elif kind == 1:
        w.t(w.rng.choice(("등록번호 ", "병록번호 ")))
        w.phi("id", _digits(w.rng, 8))
        w.t(", 검체번호 ")
        w.phi("id", f"{w.rng.choice(('SP', 'S', 'B'))}{_digits(w.rng, 2)}-{_digits(w.rng, 6)}")
        w.t(". ")
    elif kind == 2:
        w.t("주소 서울특별시 ")
        district, road = w.rng.choice(_DISTRICTS), w.rng.choice(_ROADS)
        number = str(w.rng.randint(1, 999))
        w.phi("address", f"{district} {road} {number}", district, f"{road} {number}")
        w.t(", ")
        unit = f"{w.rng.randint(101, 120)}동 {w.rng.randint(101, 2504)}호"
        w.phi("address", unit)
        w.t(". ")
    elif kind == 3:
        w.phi("date", _date(w.rng, True))
        w.t(w.rng.choice(("에 ", "부터 ", " ")))
        w.t("증상 시작, ")
        w.decoy(w.rng.choice(_LABS))
        w.t(". ")
    elif kind == 4:
        w.t("만 " if w.rng.random() < 0.3 else "")
        age = w.rng.choice((f"{w.rng.randint(90, 104)}세", _age_words(w.rng, True)))
        w.phi("age", age)
        w.t(" 고령으로 ")
        w.decoy(w.rng.choice(_DRUGS))
        w.t(" 감량. ")
    elif kind == 5:
        w.t("연락처 ")
        w.phi("phone", _kr_phone(w.rng))
        w.t(", 이메일 ")
        w.phi(
            "email", f"{w.rng.choice(('pt', 'kim', 'care', 'family'))}{_digits(w.rng, 3)}@naver.com"
        )
        w.t(". ")
    else:
        w.decoy(w.rng.choice(_CODES))
        w.t(" 코드로 청구, ")
        w.decoy(w.rng.choice(_EPONYMS_KO))
        w.t(" 의심 하에 ")
        w.phi("date", _date(w.rng, True))
        w.t(" 재검. ")


def _ko_findings(w: _Writer, c: _Cast) -> None:
    """Findings in words that begin like names (decoys only)."""
    first, second = w.rng.sample(_KO_SHAPED, 2)
    w.t("진찰상 ")
    w.decoy(first)
    w.t(", ")
    w.decoy(second)
    w.t(". ")


def _en_patient(w: _Writer, c: _Cast) -> None:
    p = c.patient
    if p.korean:
        w.t("Pt ")
        if w.rng.random() < 0.5:
            _romanized(w, p)
        else:
            _name(w, "name", p, "full")
        w.t(" seen in clinic. ")
        return
    form = w.rng.randrange(4)
    if form == 0:
        w.t(w.rng.choice(("Mr. ", "Ms. ", "Mrs. ")))
        _name(w, "name", p, "family")
    elif form == 1:
        _name(w, "name", p, "full")
    elif form == 2:
        w.t("Patient ")
        _name(w, "name", p, "given")
    else:
        w.phi("name", f"{p.family.upper()}, {p.given.upper()}", p.family, p.given)
    w.t(w.rng.choice((" reports fatigue; ", " was admitted for ", " follows up for ")))
    eponym = _EPONYM_FAMILY.get(p.family)
    w.decoy(eponym or w.rng.choice(_EPONYMS))
    w.t(". ")


def _en_doctor(w: _Writer, c: _Cast) -> None:
    d = c.doctor if w.rng.random() < 0.6 else c.observer
    w.t("Discussed with ")
    if d.korean:
        w.t("Dr. ")
        if w.rng.random() < 0.5:
            _romanized(w, d)
        else:
            _name(w, "name", d, "full")
    else:
        w.t("Dr. ")
        _name(w, "name", d, w.rng.choice(("family", "full")))
    w.t(" (")
    w.decoy(w.rng.choice(_DEPARTMENTS))
    w.t(") at ")
    w.decoy(w.rng.choice(_TIMES[:3] + _TIMES[4:]))
    w.t(". ")


def _en_other(w: _Writer, c: _Cast) -> None:
    o = w.rng.choice(c.others)
    kind = w.rng.randrange(6)
    if o.korean:
        fam, (g1, g2) = w.rng.choice(o.variants)
        given = g1 + g2.lower()
        text = rf"{fam} {given}" if w.rng.random() < 0.5 else f"{given} {fam}"
        w.t(w.rng.choice(("Daughter ", "Son ", "Wife ", "Husband ", "Dr. ")))
        w.phi("name_unlisted", text, *(p for p in (fam, given) if len(p) >= 3))
        w.t(" was informed. ")
        return
    if kind == 0:
        w.t(w.rng.choice(("Daughter ", "daughter ", "Wife ", "wife ", "Son ", "husband ")))
        _name(w, "name_unlisted", o, w.rng.choice(("given", "full")))
        w.t(" at bedside. ")
    elif kind == 1:
        w.t("Dr. ")
        initial = f"{o.given[0]}. {o.family}"
        w.phi("name_unlisted", initial, o.family)
        w.t(" from ")
        w.decoy(w.rng.choice(_DEPARTMENTS[4:]))
        w.t(" consulted. ")
    elif kind == 2:
        w.t(w.rng.choice(("Prof. ", "Mr. ", "Ms. ", "Nurse ")))
        _name(w, "name_unlisted", o, "family")
        w.t(" notified. ")
    elif kind == 3:
        w.t("Spoke with ")
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice((" (daughter)", " (son)", ", the patient's wife,", " (HCP)")))
        w.t(" at ")
        w.phi("phone", _us_phone(w.rng))
        w.t(". ")
    elif kind == 4:
        _name(w, "name_unlisted", o, "full")
        w.t(w.rng.choice((", RN, ", ", MD, ", ", PA-C, ")))
        w.t("gave ")
        w.decoy(w.rng.choice(_DRUGS[:8]))
        w.t(". ")
    else:
        w.t("Per Dr. ")
        _name(w, "name_unlisted", o, "full")
        w.t(", continue ")
        w.decoy(w.rng.choice(_DRUGS[:8]))
        w.t(". ")


def _en_ids(w: _Writer, c: _Cast) -> None:
    kind = w.rng.randrange(8)
    if kind == 0:
        w.t("Lives at ")
        number, street = str(w.rng.randint(10, 9999)), w.rng.choice(_STREETS)
        w.phi("address", f"{number} {street}")
        w.t(", Apt ")
        w.phi("address", f"{w.rng.randint(1, 30)}{w.rng.choice('ABCD')}")
        w.t(". ")
    elif kind == 1:
        w.t(w.rng.choice(("Seen on ", "Since ", "Follow-up on ")))
        w.phi("date", _date(w.rng, False))
        w.t("; ")
        w.decoy(w.rng.choice(_LABS))
        w.t(". ")
    elif kind == 2:
        w.t("A ")
        w.phi("age", w.rng.choice((f"{w.rng.randint(90, 104)}-year-old", _age_words(w.rng, False))))
        w.t(" with ")
        w.decoy(w.rng.choice(_EPONYMS))
        w.t(". ")
    elif kind == 3:
        w.t(w.rng.choice(("MRN ", "MRN: ", "Chart No. ")))
        w.phi("id", w.rng.choice((_digits(w.rng, 8), f"{w.rng.choice('ABKH')}{_digits(w.rng, 7)}")))
        w.t(", specimen ")
        w.phi("id", f"{w.rng.choice(('S', 'SP', 'AC'))}{_digits(w.rng, 2)}-{_digits(w.rng, 5)}")
        w.t(". ")
    elif kind == 4:
        w.t("Call back ")
        w.phi("phone", _us_phone(w.rng))
        w.t(" or e-mail ")
        w.phi(
            "email",
            f"{w.rng.choice(('jsmith', 'care.team', 'family'))}{_digits(w.rng, 2)}@example.org",
        )
        w.t(". ")
    elif kind == 5:
        w.t("Images at ")
        w.phi("url", f"https://pacs.example-hospital.org/study/{_digits(w.rng, 6)}")
        w.t(" from workstation ")
        w.phi("ip", f"10.{w.rng.randint(0, 255)}.{w.rng.randint(0, 255)}.{w.rng.randint(1, 254)}")
        w.t(". ")
    elif kind == 6:
        w.t("Coded ")
        w.decoy(w.rng.choice(_CODES))
        w.t(", dose ")
        w.decoy(w.rng.choice(_DRUGS[:8]))
        w.t(" ")
        w.decoy("1/2 tab")
        w.t(", next visit ")
        w.phi("date", _date(w.rng, False))
        w.t(". ")
    else:
        w.t("SSN ")
        w.phi("id", f"{w.rng.randint(100, 665)}-{w.rng.randint(10, 99)}-{_digits(w.rng, 4)}")
        w.t(" on file. ")


_KO: tuple[Sentence, ...] = (
    _ko_patient, _ko_doctor, _ko_other, _ko_other, _ko_ids, _ko_ids, _ko_findings,
)  # fmt: skip
_EN: tuple[Sentence, ...] = (_en_patient, _en_doctor, _en_other, _en_other, _en_ids, _en_ids)


# -- messages ------------------------------------------------------------------------------


def _xpn(p: Person) -> str:
    return f"{p.family}^{p.given}"


def _xcn(ident: str, p: Person) -> str:
    return f"{ident}^{p.family}^{p.given}^^^^^^HOSP^L"


def _message(n: int, note: str, carrier: str, cast: _Cast, rng: random.Random) -> bytes:
    text = escape(note, DEFAULT_ENCODING)
    p, d, o = cast.patient, cast.doctor, cast.observer
    when = f"202603{rng.randint(1, 28):02d}{rng.randint(8, 18):02d}3000+0900"
    mrn = f"{rng.randint(10_000_000, 99_999_999)}"
    msg_type = "MDM^T02^MDM_T02" if carrier == "MDM" else "ORU^R01^ORU_R01"
    msh = f"MSH|^~\\&|EMR|HOSP|HL7BUS|HOSP|{when}||{msg_type}|SCRUB{n:05d}|P|2.5.1"
    seg = [f"{msh}|||||KOR|UNICODE UTF-8"]
    if carrier == "MDM":
        seg.append(f"EVN|T02|{when}")
    seg += [
        f"PID|1||{mrn}^^^HOSP^MR||{_xpn(p)}||19400101|U",
        f"PV1|1|O|IMC^^^HOSP|R|||{_xcn('D' + _digits(rng, 5), d)}|||IM",
    ]
    if carrier == "MDM":
        seg += [
            f"TXA|1|PN|TX|{when}|{_xcn('D' + _digits(rng, 5), o)}||{when}||"
            f"{_xcn('D' + _digits(rng, 5), d)}|||DOC{n:06d}||||||AU",
            f"OBX|1|TX|11506-3^Progress note^LN||{text}||||||F",
        ]
    else:
        seg += [
            f"ORC|RE|O{n:06d}^EMR|F{n:06d}^LIS",
            f"OBR|1|O{n:06d}^EMR|F{n:06d}^LIS|11526-1^Pathology study^LN|||{when}",
        ]
        observer = _xcn("D" + _digits(rng, 5), o)
        if carrier == "NTE":
            seg += [
                f"OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L|3.5-5.1|N|||F|||{when}||{observer}",
                f"NTE|1|L|{text}",
            ]
        else:
            vt = carrier.partition("-")[2]
            seg.append(f"OBX|1|{vt}|11526-1^Pathology study^LN||{text}||||||F|||{when}||{observer}")
    return "\r".join(seg).encode("utf-8")


def generate(count: int = 600, seed: int = 16) -> list[Note]:
    """``count`` annotated notes, the same for the same seed: a third Korean, a third English,
    a third mixed; carriers in turn."""
    rng = random.Random(seed)
    notes = []
    for n in range(count):
        language = ("ko", "en", "mixed")[n % 3]
        carrier = CARRIERS[(n // 3) % len(CARRIERS)]
        patient_korean = language == "ko" or (language == "mixed" and rng.random() < 0.8)
        if patient_korean:
            patient = _korean(rng)
        else:
            family = rng.choice((*_EPONYM_FAMILY, *_EN_FAMILY[:6]))
            patient = _english(rng, family)
        doctor_korean = language != "en" or rng.random() < 0.5
        doctor = _korean(rng) if doctor_korean else _english(rng)
        observer = _korean(rng) if doctor_korean else _english(rng)
        others = [
            _korean(rng) if (language == "ko" or rng.random() < 0.5) else _english(rng)
            for _ in range(3)
        ]
        # Nobody unlisted shares a name part with a listed person (it would count as listed).
        listed = {x for q in (patient, doctor, observer) for x in (q.family, q.given)}
        others = [q for q in others if q.given not in listed and q.family not in listed] or [
            Person("제갈", "현무", ("Jegal", "Hyeonmu"), True, (("Jegal", ("Hyeon", "mu")),))
        ]
        cast = _Cast(patient, doctor, observer, others)
        w = _Writer(rng)
        pool = _KO if language == "ko" else _EN if language == "en" else _KO + _EN
        sentences = [pool[0] if language != "mixed" else rng.choice((_ko_patient, _en_patient))]
        sentences += rng.sample(pool[1:], k=min(len(pool) - 1, rng.randint(3, 5)))
        for sentence in sentences:
            sentence(w, cast)
        text = "".join(w.parts).strip()
        notes.append(
            Note(
                n,
                language,
                carrier,
                text,
                tuple(w.spans),
                tuple(w.decoys),
                _message(n, text, carrier, cast, rng),
                w.cue_free,
            )
        )
    return notes


# -- scoring -------------------------------------------------------------------------------


def _pattern(probe: str) -> re.Pattern[str]:
    if probe.isascii():
        return re.compile(rf"(?<![A-Za-z0-9]){re.escape(probe)}(?![A-Za-z0-9])", re.IGNORECASE)
    return re.compile(re.escape(probe))


def _count(probe: str, text: str) -> int:
    return len(_pattern(probe).findall(text))


@dataclass
class Score:
    """Spans caught and decoys kept, per category, summed over notes."""

    phi: Counter[str] = field(default_factory=Counter)
    caught: Counter[str] = field(default_factory=Counter)
    decoys: int = 0
    kept: int = 0
    missed: list[tuple[int, str, str]] = field(default_factory=list)  # note, category, text
    lost: list[tuple[int, str]] = field(default_factory=list)  # note, decoy

    def add(self, note: Note, scrubbed: str) -> None:
        # The note's text outside PHI spans: what a probe may be found in legitimately.
        outside = note.text
        for span in note.phi:
            outside = outside.replace(span.text, "\x00", 1)
        left: dict[str, int] = {}
        for span in note.phi:
            for probe in span.probes:
                if probe not in left:
                    left[probe] = max(0, _count(probe, scrubbed) - _count(probe, outside))
        for span in note.phi:
            self.phi[span.category] += 1
            leaked = [p for p in span.probes if left[p] > 0]
            if leaked:
                for p in leaked:
                    left[p] -= 1
                self.missed.append((note.number, span.category, span.text))
            else:
                self.caught[span.category] += 1
        for decoy, n in Counter(note.decoys).items():
            kept = min(n, _count(decoy, scrubbed))
            self.decoys += n
            self.kept += kept
            if kept < n:
                self.lost.append((note.number, decoy))

    def recall(self) -> dict[str, float]:
        return {c: round(self.caught[c] / self.phi[c], 4) for c in CATEGORIES if self.phi[c]}

    def decoy_survival(self) -> float:
        return round(self.kept / self.decoys, 4) if self.decoys else 1.0


def score(notes: list[Note], scrubbed: list[str]) -> Score:
    """Recall per category and decoy survival of ``scrubbed`` (one text per note)."""
    s = Score()
    for note, text in zip(notes, scrubbed, strict=True):
        s.add(note, text)
    return s
