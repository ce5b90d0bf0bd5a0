"""scrub: free-text de-identification (issue 6, item 3). Pure functions, no I/O.

Two steps, in this order (REFERENCE "Privacy": matching the message's own identifiers first is
cheap and very effective; patterns alone have modest recall):

1. :func:`identifiers_of` collects the message's own names and identifiers into an
   :class:`Identifiers` set; :func:`scrub_text` replaces every occurrence of them in the text
   (Hangul, Hanja and Latin script; case-insensitive; numbers tolerant of spaces, hyphens, dots
   and parentheses between digits; Hangul names followed by particles or honorifics).
2. Patterns replace what any message may contain: Korean resident registration numbers, Korean
   and international phone numbers, US SSNs, e-mail addresses, URLs, IPv4/IPv6 addresses,
   labelled and long MRN-like numbers, dates (or shifts them), ages over 89, labelled postal codes.

Each replacement says what was removed (``[NAME]``, ``[ID]``, ``[RRN]``, ``[PHONE]``, ``[EMAIL]``,
``[URL]``, ``[IP]``, ``[DATE]``, ``[ADDRESS]``, ``[AGE 90+]``); :class:`ScrubResult` counts them
per :class:`Kind`, never values, for audit metrics. A US SSN is reported as ``[ID]``.

Fields read by :func:`identifiers_of` (every repetition; in every occurrence of the segment):

========  ==================================================================================
segment   fields (HL7 data type)
========  ==================================================================================
PID       2, 3, 4 patient ids (CX.1); 5 name, 6 mother's maiden name, 9 alias (XPN);
          11 address (XAD); 13 home, 14 business, 40 telecom (XTN); 18 account number (CX.1);
          19 SSN / Korean RRN; 20 driver's licence (DLN.1); 21 mother's identifier (CX.1)
PD1       4 primary care provider (XCN)
MRG       1-6 prior identifiers and account/visit numbers (CX.1); 7 prior name (XPN)
NK1       2 name, 30 contact person (XPN); 4, 32 addresses (XAD); 5, 6, 31, 40, 41 phones
          (XTN); 13 organization name (XON.1, XON.10); 33 identifiers (CX.1); 37 SSN
PV1       7 attending, 8 referring, 9 consulting, 17 admitting, 52 other provider (XCN: id and
          name); 19 visit number, 50 alternate visit id (CX.1)
GT1       2 guarantor number, 19 employee id (CX.1); 3 name, 4 spouse, 16 employer name (XPN);
          5, 17 addresses (XAD); 6, 7, 18 phones (XTN); 12 SSN
IN1       16 name of insured (XPN); 19 insured's address (XAD); 36 policy number;
          49 insured's id (CX.1)
IN2       1 employee id, 61 member number (CX.1); 2 SSN; 6 Medicare, 8 Medicaid number
ORC       2, 3, 4 placer/filler/group order numbers (EI.1); 10 entered by, 11 verified by,
          12 ordering provider, 19 action by (XCN); 14 call-back phone (XTN)
OBR       2, 3 order numbers (EI.1); 10 collector, 16 ordering provider, 28 copies to (XCN);
          17 call-back phone (XTN); 32-35 interpreters and technicians (NDL: CNN id and name)
========  ==================================================================================

From each data type: XPN family (FN.1), given, further given names; XCN/CNN id, family, given,
further given names (an XCN-1 written in Hangul is taken as a name); CX/EI id; XTN-1 formatted
number, XTN-4 e-mail, XTN-6 + XTN-7 area code and local number, XTN-12 unformatted number;
XAD-1 street (SAD.1, and SAD.2 + SAD.3), XAD-2 other designation (apartment and unit),
XAD-3 city or district, XAD-5 postal code. Not read: XAD-4 (state/province level, which Safe
Harbor allows), dates (the date patterns handle them), codes and assigning authorities.

Needle rules (applied to every needle, so :meth:`Identifiers.of` obeys them too):

* **Hangul/Hanja names and places**, 3 syllables or more (``김민준``, ``남궁도윤``, ``마포구``):
  matched anywhere, so a following particle or honorific stays (``[NAME]님``). Full names also
  match with one space between surname and given name (``김 민준``).
* **2 syllables** (``김석``, given name ``민준``, compound surname ``남궁``): whole token only: not
  preceded by a letter or digit, and followed by a non-letter, a particle (:data:`PARTICLES`: 은
  는 이 가 을 를 의 에게 에게서 께 께서 한테 와 과 도 만 아 야 이랑 랑 이나) or a title
  (:data:`TITLES`: 님 씨 환자 환아 보호자 교수 선생 간호사 원장 과장 ...; one space before the
  title is allowed). When the two syllables are
  a common Korean word (``이상``, ``정상``, ``이전``, ... :data:`COMMON_WORDS`) only a title
  makes the match (``이상 환자`` is scrubbed, ``이상 소견`` is not).
* **1 syllable** (surnames ``김``, given names ``석``) is never matched alone.
* **Latin names**: whole words, case-insensitive, with up to three separators (space, hyphen,
  apostrophe, comma, period) anywhere between letters (``MINJUN`` matches ``Min-jun`` and
  ``Min Jun``); full names in both orders (``KIM MINJUN``, ``Minjun Kim``, ``Kim, Min-jun``),
  4 letters or more; a single part alone when it has 3 letters or more and is not a common
  English word (:data:`LATIN_COMMON_WORDS`: ``MIN``, ``JUN``, ``SON``, ``YOUNG``, ...).
* **Numbers and ids** (ids, phones, RRNs, postal codes): 5 characters or more (phones: 7 digits
  or more), case-insensitive, any of space, hyphen, period, comma, parentheses (up to three) between
  characters, not inside a longer number or word and not after a decimal point; phones also
  without their area code and in ``+82`` form.
* **Other text** (streets, apartments, e-mail addresses): 4 characters or more; as written
  (case-insensitive for ASCII) or without its spaces.

How (speed): the identifier step compiles nothing per message. CPython's ``re`` compiler is
written in Python: an alternation of one message's ~25 needles took 4-40 ms to compile, 250-2000
times the cost of parsing the message. Instead the text is lower-cased once, the separators
between ASCII letters and digits are squeezed out by one static regex (positions mapped back by
bisection), and every needle is found with ``str.find`` (C) in that string or in the text itself;
only hits run Python checks (boundaries, particles). The pattern step is one precompiled regex
(:mod:`hl7bus.streams.scrub_patterns`).

Caches: needles per raw field value and search tables per identifier set are kept in bounded LRU
caches (they hold identifiers in process memory, like the messages themselves; never logged);
:func:`clear_caches` empties them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import NamedTuple

from hl7bus.hl7v2 import HL7_NULL, Encoding, Message, unescape

from .scrub_patterns import PLACEHOLDERS, Kind, ScrubOptions, apply_patterns

__all__ = [
    "COMMON_WORDS",
    "DEFAULT_OPTIONS",
    "LATIN_COMMON_WORDS",
    "PARTICLES",
    "PLACEHOLDERS",
    "TITLES",
    "Identifiers",
    "Kind",
    "ScrubOptions",
    "ScrubResult",
    "clear_caches",
    "identifiers_of",
    "scrub_text",
]


class ScrubResult(NamedTuple):
    text: str
    replacements: dict[Kind, int]  # kind -> count; kinds with no replacement are absent


DEFAULT_OPTIONS = ScrubOptions()

# --------------------------------------------------------------------------------------------
# Word lists (data, documented in the module docstring)
# --------------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Titles and honorifics after a name (one space before them is allowed).
TITLES: tuple[str, ...] = (
    "님", "씨", "환자", "환아", "보호자", "교수", "선생", "간호사", "원장", "과장", "부장",
    "전공의", "주치의", "담당의", "전문의", "레지던트", "인턴", "어르신", "여사", "할머니",
    "할아버지", "어머니", "아버지",
)  # fmt: skip

#: Case particles and vocative endings that may follow a name directly.
PARTICLES: tuple[str, ...] = (
    "은", "는", "이", "가", "을", "를", "의", "에게", "에게서", "께", "께서", "한테", "와", "과",
    "도", "만", "아", "야", "이랑", "랑", "이나",
)  # fmt: skip

#: Two-syllable words common in Korean clinical text that are also possible names (a surname and
#: a one-syllable given name, or a given name). As a 2-syllable needle they only match before a
#: title (``이상 환자``), never before a particle or alone (``이상이 있음``, ``정상 범위``).
COMMON_WORDS: frozenset[str] = _words(
    """
    이상 이하 이내 이전 이후 이번 이미 이유 이용 이동 이식 이완 이명 이물 이뇨 이차 이송 이해
    정상 정도 정맥 정리 정확 정기 정신 정밀 정지 정량 정성 정보 정해 조기 조직 조절 조영 조사
    조금 조치 장기 장애 장염 장관 안정 안내 안과 안전 신장 신경 신체 신규 신속 신청 한번 한쪽
    한국 오전 오후 오른 오늘 유지 유발 유무 유의 유사 전체 전신 전일 전원 전화 전달 전반 주의
    주사 주기 주말 주치 진단 진료 최근 최대 최소 최초 최종 황달 홍반 송부 권고 문제 변화 우측
    좌측 소견 수술 수치 수정 수액 지속 지원 현재 감소 증가 확인 재검 채혈 결과 검사 검체 환자
    보호 방문 방법 고열 고지 강도 강화 서면 서명 남자 여자 성인 양성 음성 동의 동일 동반 동시
    하루 하지 상지 상태 상기 상승 하강 기준 기간 원인 원래 연락 연속 도착 도움 대기 대상 임상
    임신 배양 차트 처방 통증 통보 지연 채취 용혈 재채 비교 요망 담당 공복 여부 필요 반복 제거
    """
)

#: Latin name parts that are common English or clinical words; they only match as part of a
#: full name (``Kim Min``), never alone.
LATIN_COMMON_WORDS: frozenset[str] = _words(
    """
    MIN MAX MON SUN JUN MAY SON MAN WON BIN GUN TAN PAN RAN SIN HAM BAN NAN YOUNG SUNG HUNG
    SEE DOE TAE AND THE FOR ARE
    """
)

_SYL = "\uac00-\ud7a3\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Hangul syllables, CJK ideographs
_SYL_RE = re.compile(f"[{_SYL}]")
_SYL_ONLY = re.compile(f"[{_SYL}]+")
_LATIN_ONLY = re.compile(r"[A-Za-z]+")
_KOREAN_COMPOUND_SURNAMES = _words(
    "남궁 제갈 선우 독고 황보 사공 서문 동방 어금 망절 장곡 소봉 황목"
)

# --------------------------------------------------------------------------------------------
# Identifiers
# --------------------------------------------------------------------------------------------

_NUMERIC_KINDS = frozenset({Kind.ID, Kind.RRN, Kind.PHONE})


@dataclass(frozen=True, repr=False)
class Identifiers:
    """One message's own names and identifiers, as needles ``(kind, literal)``.

    Hashable and immutable; the search tables are built once per distinct set (cached). The
    repr shows counts only: values are PHI and must not reach logs.
    """

    needles: frozenset[tuple[Kind, str]] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        names: Iterable[str | tuple[str, ...]] = (),
        ids: Iterable[str] = (),
        national_ids: Iterable[str] = (),
        phones: Iterable[str] = (),
        emails: Iterable[str] = (),
        addresses: Iterable[str] = (),
    ) -> Identifiers:
        """Build a set from plain values, with the same expansions as :func:`identifiers_of`.

        ``names``: a full name as written (``"김민준"``, ``"KIM MINJUN"``, ``"Kim, Minjun"``) or a
        tuple ``(family, given[, further given])``. ``national_ids``: SSNs or Korean RRNs
        (``[RRN]`` when shaped like one, else ``[ID]``). ``addresses``: street lines, districts,
        postal codes.
        """
        c = _Collector()
        for n in names:
            if isinstance(n, tuple):
                c.person(*[*n, "", ""][:3])
            else:
                c.person(n, "", "")
        for v in ids:
            c.ident(v)
        for v in national_ids:
            c.national(v)
        for v in phones:
            c.phone(v)
        for v in emails:
            c.email(v)
        for v in addresses:
            c.place(v)
        return cls(frozenset(c.needles))

    def __or__(self, other: Identifiers) -> Identifiers:
        return Identifiers(self.needles | other.needles)

    def __len__(self) -> int:
        return len(self.needles)

    def __bool__(self) -> bool:
        return bool(self.needles)

    def counts(self) -> dict[Kind, int]:
        """Needles per kind (safe to log)."""
        out: dict[Kind, int] = {}
        for kind, _ in self.needles:
            out[kind] = out.get(kind, 0) + 1
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k.value}={n}" for k, n in sorted(self.counts().items()))
        return f"Identifiers({inner})"


def _clean(value: str | None) -> str:
    if not value or value == HL7_NULL:
        return ""
    if "  " in value or value[0].isspace() or value[-1].isspace() or "\t" in value:
        return " ".join(value.split())
    return value


def _is_syllabic(text: str) -> bool:
    return bool(text) and _SYL_ONLY.fullmatch(text.replace(" ", "")) is not None


def _is_latin(text: str) -> bool:
    return bool(text) and _LATIN_ONLY.fullmatch(_NAME_SEPARATORS.sub("", text)) is not None


_NON_ALNUM = re.compile("[^0-9A-Za-z]+")
_NON_DIGIT = re.compile("[^0-9]+")
_NAME_SEPARATORS = re.compile(r"[\s\-'.]+")
_POSTAL = re.compile(r"[0-9\-]+")
_ROAD = re.compile(rf"([{_SYL}]+(?:로|길|가|동|리))\s*[0-9][0-9\-]*(?:\s.*)?")
_KR_PHONE = re.compile(r"(01[016789]|02|0[3-6][1-5]|070|050\d|080)(\d{7,8})")
_RRN_SHAPE = re.compile(r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{7}")


class _Collector:
    """Turns field values into needles; applies the expansions (name orders, phone forms)."""

    def __init__(self) -> None:
        self.needles: set[tuple[Kind, str]] = set()

    def _add(self, kind: Kind, literal: str) -> None:
        if literal and _spec(kind, literal) is not None:
            self.needles.add((kind, literal))

    def person(self, family: str, given: str, middle: str) -> None:
        family, given, middle = _clean(family), _clean(given), _clean(middle)
        if family and not given and not middle:
            family, given = _split_full_name(family)
        parts = [p for p in (family, given, middle) if p]
        if not parts:
            return
        syllabic = [p for p in parts if _is_syllabic(p)]
        latin = [p.upper() for p in parts if _is_latin(p)]
        if syllabic:
            joined = [p.replace(" ", "") for p in syllabic]
            # Surname, then given names, with a space that the pattern makes optional.
            self._add(Kind.NAME, " ".join(joined))
            if len(joined) > 2:
                self._add(Kind.NAME, " ".join(joined[1:]))
            for p in joined:
                self._add(Kind.NAME, p)
        if latin:
            tokens = [_NAME_SEPARATORS.sub("", p) for p in latin]
            if len(tokens) > 1:
                self._add(Kind.NAME, " ".join(tokens))
                self._add(Kind.NAME, " ".join([*tokens[1:], tokens[0]]))
                if len(tokens) > 2:
                    self._add(Kind.NAME, f"{tokens[0]} {tokens[1]}")
                    self._add(Kind.NAME, f"{tokens[1]} {tokens[0]}")
            for t in tokens:
                self._add(Kind.NAME, t)
        for p in parts:
            if not _is_syllabic(p) and not _is_latin(p):
                self._add(Kind.NAME, p.upper())  # mixed script: matched as text

    def organization(self, name: str) -> None:
        name = _clean(name)
        if name:
            self._add(Kind.NAME, name.upper())

    def ident(self, value: str | None, kind: Kind = Kind.ID) -> None:
        v = _clean(value)
        if v:
            self._add(kind, _NON_ALNUM.sub("", v).upper())

    def national(self, value: str | None) -> None:
        digits = _NON_ALNUM.sub("", _clean(value)).upper()
        kind = Kind.RRN if _RRN_SHAPE.fullmatch(digits) else Kind.ID
        self._add(kind, digits)

    def phone(self, value: str | None) -> None:
        v = _clean(value)
        digits = _NON_DIGIT.sub("", v)
        if len(digits) < 7:
            return
        if v.startswith("+82"):
            digits = "0" + digits[2:]
        elif digits.startswith("0082"):
            digits = "0" + digits[4:]
        self._add(Kind.PHONE, digits)
        m = _KR_PHONE.fullmatch(digits)
        if m:
            self._add(Kind.PHONE, m[2])  # without the area code
            self._add(Kind.PHONE, "+82" + digits[1:])
        elif digits.startswith("0") and len(digits) >= 9:
            self._add(Kind.PHONE, "+82" + digits[1:])

    def email(self, value: str | None) -> None:
        v = _clean(value)
        if "@" in v:
            self._add(Kind.EMAIL, v.lower())

    def place(self, value: str | None) -> None:
        v = _clean(value)
        if not v:
            return
        if _POSTAL.fullmatch(v):
            self._add(Kind.ADDRESS, v.replace("-", ""))
            return
        self._add(Kind.ADDRESS, v.upper())
        # The road name alone ("월드컵로" of "월드컵로 381"), which names a small area too.
        road = _ROAD.fullmatch(v)
        if road:
            self._add(Kind.ADDRESS, road[1])


def _split_full_name(name: str) -> tuple[str, str]:
    """Family and given name of a name sent in one component."""
    if _is_syllabic(name):
        if " " in name:
            family, _, given = name.partition(" ")
            return family, given.replace(" ", "")
        if len(name) >= 3 and name[:2] in _KOREAN_COMPOUND_SURNAMES:
            return name[:2], name[2:]
        return (name[:1], name[1:]) if len(name) >= 2 else (name, "")
    if "," in name:
        family, _, given = name.partition(",")
        return family.strip(), given.strip()
    if " " in name:
        family, _, given = name.partition(" ")
        return family, given
    return name, ""


# -- needle rules and search ---------------------------------------------------------------------

_LONG, _SHORT, _SHORT_COMMON = 0, 1, 2
_MINIMUM_CHARS = {Kind.PHONE: 7, Kind.RRN: 13}  # other numbers and ids: 5
# Separators dropped between two ASCII letters/digits for the tolerant search ("squeezing").
_SEP_CLASS = "[ \t\u00a0\u3000.,'()\\-]"
# A letter or digit, then the separators to drop (the match starts one character early so that
# the engine can skip everything but ASCII letters and digits in C).
_SQUEEZE = re.compile(f"[0-9a-z]{_SEP_CLASS}{{1,3}}(?=[0-9a-z])")
_SEPARATORS = re.compile(r"[ \t\u00a0\u3000.,'()\-]+")
_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(65, 91)})


def _ascii_lower(text: str) -> str:
    """Lower-cased with the length kept (``str.lower`` is C-fast but may change the length of a
    few non-ASCII characters, such as U+0130)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(_LOWER)


def _squeezed(literal: str) -> str:
    return _SEPARATORS.sub("", literal.lower())


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


class _Spec(NamedTuple):
    """How one needle is searched: ``alnum`` in the squeezed text, ``syllabic`` and ``plain``
    in the text (``plain`` case-insensitively); ``rule`` for syllabic needles, ``plus`` for
    ``+82`` phone forms."""

    how: str
    variants: tuple[str, ...]
    rule: int = _LONG
    plus: bool = False


@lru_cache(maxsize=65536)
def _spec(kind: Kind, literal: str) -> _Spec | None:
    """The search of one needle, or None when it is too short to be safe (module docstring)."""
    if kind == Kind.EMAIL:
        return _Spec("plain", (_ascii_lower(literal),)) if len(literal) >= 6 else None
    if kind in _NUMERIC_KINDS or literal.isdigit():
        chars = _NON_ALNUM.sub("", literal).lower()
        minimum = _MINIMUM_CHARS.get(kind, 5)
        if len(chars) < minimum:
            return None
        return _Spec("alnum", (chars,), plus=kind is Kind.PHONE)
    tokens = literal.split()
    if _is_syllabic(literal):
        joined = "".join(tokens)
        if len(joined) < 2:
            return None
        variants = (joined,) if len(tokens) == 1 else (joined, " ".join(tokens))
        if len(joined) >= 3:
            return _Spec("syllabic", variants, _LONG)
        return _Spec("syllabic", variants, _SHORT_COMMON if joined in COMMON_WORDS else _SHORT)
    if kind == Kind.NAME and _is_latin(literal):
        squeezed = _squeezed(literal)
        if len(tokens) == 1 and (len(squeezed) < 3 or literal.upper() in LATIN_COMMON_WORDS):
            return None
        if len(squeezed) < 4 and len(tokens) > 1:
            return None
        return _Spec("alnum", (squeezed,))
    if sum(1 for ch in literal if ch.isalnum()) < 4:
        return None
    lowered = _ascii_lower(literal)
    variants = (lowered,) if len(tokens) == 1 else (lowered, "".join(lowered.split()))
    return _Spec("plain", variants)


_PRIORITY = {k: i for i, k in enumerate((Kind.RRN, Kind.PHONE, Kind.ID, Kind.EMAIL,
                                         Kind.ADDRESS, Kind.NAME))}  # fmt: skip


@dataclass(frozen=True)
class _Tables:
    alnum: tuple[tuple[str, Kind, bool], ...]  # squeezed needle, kind, +82 form
    syllabic: tuple[tuple[str, Kind, int], ...]  # variant, kind, rule
    plain: tuple[tuple[str, Kind], ...]  # ASCII-lower-cased variant, kind


@lru_cache(maxsize=4096)
def _tables(needles: frozenset[tuple[Kind, str]]) -> _Tables:
    alnum: dict[str, tuple[Kind, bool]] = {}
    syllabic: dict[str, tuple[Kind, int]] = {}
    plain: dict[str, Kind] = {}
    for kind, literal in sorted(needles, key=lambda n: (_PRIORITY.get(n[0], 9), n[1])):
        spec = _spec(kind, literal)
        if spec is None:
            continue
        for v in spec.variants:
            if spec.how == "alnum":
                alnum.setdefault(v, (kind, spec.plus))
            elif spec.how == "syllabic":
                syllabic.setdefault(v, (kind, spec.rule))
            else:
                plain.setdefault(v, kind)
    # Shortest first, so that a search stops at the first needle longer than the text (the
    # order within a table never changes the result: two needles of one table cannot yield
    # the same span).
    return _Tables(
        tuple(sorted(((v, k, p) for v, (k, p) in alnum.items()), key=lambda e: len(e[0]))),
        tuple(sorted(((v, k, r) for v, (k, r) in syllabic.items()), key=lambda e: len(e[0]))),
        tuple(sorted(plain.items(), key=lambda e: len(e[0]))),
    )


def _edges_ok(text: str, start: int, end: int) -> bool:
    """A number or Latin needle must not continue a longer number or word: the character before
    (after) it is not of its first (last) character's class, and a number is not the decimal part
    (or the integer part) of a decimal."""
    first, last = text[start], text[end - 1]
    if start > 0:
        prev = text[start - 1]
        if _is_digit(first):
            if _is_digit(prev) or (prev in ".," and start > 1 and _is_digit(text[start - 2])):
                return False
        elif _is_ascii_alnum(first) and _is_ascii_alnum(prev):
            return False
    if end < len(text):
        nxt = text[end]
        if _is_digit(last):
            if _is_digit(nxt) or (nxt in ".," and end + 1 < len(text) and _is_digit(text[end + 1])):
                return False
        elif _is_ascii_alnum(last) and _is_ascii_alnum(nxt):
            return False
    return True


def _short_ok(text: str, start: int, end: int, rule: int) -> bool:
    """A 2-syllable needle: a whole token, or followed by a particle or a title."""
    if start > 0 and text[start - 1].isalnum():
        return False
    if text.startswith(TITLES, end) or (
        text[end : end + 1].isspace() and text.startswith(TITLES, end + 1)
    ):
        return True
    if rule == _SHORT_COMMON:
        return False
    return end == len(text) or not text[end].isalnum() or text.startswith(PARTICLES, end)


Span = tuple[int, int, Kind]


def _identifier_spans(text: str, tables: _Tables) -> list[Span]:
    spans: list[Span] = []
    lowered = _ascii_lower(text) if tables.alnum or tables.plain else text
    if tables.alnum:
        # The text without separators inside runs of letters and digits; a position p in it is
        # p + shifts[k - 1] in the text, k being the number of cuts at or before p.
        cuts: list[int] = []
        shifts: list[int] = []
        pieces: list[str] = []
        removed = pos = 0
        for m in _SQUEEZE.finditer(lowered):
            a, b = m.start() + 1, m.end()
            pieces.append(lowered[pos:a])
            cuts.append(a - removed)
            removed += b - a
            shifts.append(removed)
            pos = b
        squeezed = "".join(pieces) + lowered[pos:] if cuts else lowered

        def original(p: int) -> int:
            k = bisect_right(cuts, p)
            return p + shifts[k - 1] if k else p

        for needle, kind, plus in tables.alnum:
            if len(needle) > len(squeezed):
                break
            i = squeezed.find(needle)
            while i >= 0:
                start, end = original(i), original(i + len(needle) - 1) + 1
                if _edges_ok(text, start, end):
                    if start > 0 and (
                        (plus and text[start - 1] == "+")
                        or (text[start - 1] == "(" and ")" in text[start:end])
                    ):
                        start -= 1  # +82 10-..., (02)123-4567
                    spans.append((start, end, kind))
                i = squeezed.find(needle, i + 1)
    for variant, kind, rule in tables.syllabic:
        if len(variant) > len(text):
            break
        i = text.find(variant)
        while i >= 0:
            end = i + len(variant)
            if rule == _LONG or _short_ok(text, i, end, rule):
                spans.append((i, end, kind))
            i = text.find(variant, i + 1)
    for variant, kind in tables.plain:
        if len(variant) > len(lowered):
            break
        i = lowered.find(variant)
        while i >= 0:
            end = i + len(variant)
            if _edges_ok(text, i, end):
                spans.append((i, end, kind))
            i = lowered.find(variant, i + 1)
    return spans


def _replace(text: str, spans: list[Span], counts: dict[Kind, int]) -> str:
    """Replace the leftmost-longest non-overlapping spans."""
    spans.sort(key=lambda s: (s[0], -s[1], _PRIORITY.get(s[2], 9)))
    out: list[str] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(PLACEHOLDERS[kind])
        counts[kind] = counts.get(kind, 0) + 1
        pos = end
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def scrub_text(
    text: str,
    identifiers: Identifiers | None = None,
    *,
    shift_date: Callable[[date], date] | None = None,
    options: ScrubOptions = DEFAULT_OPTIONS,
) -> ScrubResult:
    """Free text with the message's own identifiers, then pattern matches, replaced.

    ``shift_date`` (a date -> date function, e.g. the patient's consistent offset) shifts full
    dates instead of replacing them, keeping their format; partial dates (no year or no day) are
    always ``[DATE]``. Pure; raises only what ``shift_date`` raises.
    """
    counts: dict[Kind, int] = {}
    if not text:
        return ScrubResult(text, counts)
    if identifiers:
        spans = _identifier_spans(text, _tables(identifiers.needles))
        if spans:
            text = _replace(text, spans, counts)
    text = apply_patterns(text, counts, shift_date, options)
    return ScrubResult(text, counts)


# -- reading the message -------------------------------------------------------------------------

# segment -> ((field, type), ...); see the module docstring.
_FIELDS: dict[str, tuple[tuple[int, str], ...]] = {
    "PID": (
        (2, "CX"), (3, "CX"), (4, "CX"), (5, "XPN"), (6, "XPN"), (9, "XPN"), (11, "XAD"),
        (13, "XTN"), (14, "XTN"), (18, "CX"), (19, "NID"), (20, "CX"), (21, "CX"), (40, "XTN"),
    ),
    "PD1": ((4, "XCN"),),
    "MRG": ((1, "CX"), (2, "CX"), (3, "CX"), (4, "CX"), (5, "CX"), (6, "CX"), (7, "XPN")),
    "NK1": (
        (2, "XPN"), (4, "XAD"), (5, "XTN"), (6, "XTN"), (13, "XON"), (30, "XPN"), (31, "XTN"),
        (32, "XAD"), (33, "CX"), (37, "NID"), (40, "XTN"), (41, "XTN"),
    ),
    "PV1": (
        (7, "XCN"), (8, "XCN"), (9, "XCN"), (17, "XCN"), (19, "CX"), (50, "CX"), (52, "XCN"),
    ),
    "GT1": (
        (2, "CX"), (3, "XPN"), (4, "XPN"), (5, "XAD"), (6, "XTN"), (7, "XTN"), (12, "NID"),
        (16, "XPN"), (17, "XAD"), (18, "XTN"), (19, "CX"),
    ),
    "IN1": ((16, "XPN"), (19, "XAD"), (36, "CX"), (49, "CX")),
    "IN2": ((1, "CX"), (2, "NID"), (6, "CX"), (8, "CX"), (61, "CX")),
    "ORC": (
        (2, "CX"), (3, "CX"), (4, "CX"), (10, "XCN"), (11, "XCN"), (12, "XCN"), (14, "XTN"),
        (19, "XCN"),
    ),
    "OBR": (
        (2, "CX"), (3, "CX"), (10, "XCN"), (16, "XCN"), (17, "XTN"), (28, "XCN"), (32, "NDL"),
        (33, "NDL"), (34, "NDL"), (35, "NDL"),
    ),
}  # fmt: skip

Components = list[list[str]]  # components -> subcomponents, decoded


def _repetitions(raw: str, enc: Encoding, codec: str) -> list[Components]:
    if not raw:
        return []
    reps = raw.split(enc.repetition) if enc.repetition else [raw]
    out: list[Components] = []
    esc, ss = enc.escape, enc.subcomponent
    for rep in reps:
        if not (esc and esc in rep) and not (ss and ss in rep):
            out.append([[c] for c in (rep.split(enc.component) if enc.component else [rep])])
            continue
        comps = rep.split(enc.component) if enc.component else [rep]
        out.append(
            [
                [
                    unescape(s, enc, codec) if enc.escape and enc.escape in s else s
                    for s in (c.split(enc.subcomponent) if enc.subcomponent else [c])
                ]
                for c in comps
            ]
        )
    return out


def _at(comps: Components, n: int, sub: int = 0) -> str:
    """Component n (0-based), subcomponent ``sub``; "" when absent."""
    if n < len(comps) and sub < len(comps[n]):
        return comps[n][sub]
    return ""


def _comp(comps: Components, n: int) -> str:
    """Component n with its subcomponents joined by spaces."""
    return " ".join(s for s in comps[n] if s) if n < len(comps) else ""


def _collect(c: _Collector, dtype: str, comps: Components) -> None:
    if dtype == "CX":
        c.ident(_at(comps, 0))
    elif dtype == "NID":
        c.national(_comp(comps, 0))
    elif dtype == "XPN":
        c.person(_at(comps, 0), _comp(comps, 1), _comp(comps, 2))
    elif dtype == "XCN":
        ident = _at(comps, 0)
        if _SYL_RE.search(ident):
            c.person(ident, "", "")
        else:
            c.ident(ident)
        c.person(_at(comps, 1), _comp(comps, 2), _comp(comps, 3))
    elif dtype == "NDL":
        cnn = comps[0] if comps else []
        c.ident(cnn[0] if cnn else "")
        c.person(*[*cnn[1:4], "", "", ""][:3])
    elif dtype == "XTN":
        c.phone(_at(comps, 0))
        c.email(_at(comps, 3))
        area, local = _at(comps, 5), _at(comps, 6)
        if local:
            c.phone(area + local)
            c.phone(local)
        c.phone(_at(comps, 11))
    elif dtype == "XAD":
        c.place(_at(comps, 0))
        c.place(" ".join(s for s in (_at(comps, 0, 1), _at(comps, 0, 2)) if s))
        c.place(_comp(comps, 1))
        c.place(_comp(comps, 2))
        c.place(_comp(comps, 4))
    elif dtype == "XON":
        c.organization(_at(comps, 0))
        c.ident(_at(comps, 9))


@lru_cache(maxsize=8192)
def _field_needles(dtype: str, raw: str, enc: Encoding, codec: str) -> frozenset[tuple[Kind, str]]:
    """Needles of one raw field (all repetitions). Cached: the same doctor, patient or address
    recurs across messages, so most fields of a message cost one dictionary lookup."""
    c = _Collector()
    for comps in _repetitions(raw, enc, codec):
        _collect(c, dtype, comps)
    return frozenset(c.needles)


def identifiers_of(message: Message) -> Identifiers:
    """The message's own names and identifiers (fields in the module docstring)."""
    enc = message.encoding
    codec = message.charset
    needles: set[tuple[Kind, str]] = set()
    for name, fields in _FIELDS.items():
        for seg in message.segments(name):
            raw = seg.fields
            size = len(raw)
            for n, dtype in fields:
                if n < size:
                    value = raw[n]
                    if value and value != HL7_NULL:
                        needles |= _field_needles(dtype, value, enc, codec)
    return Identifiers(frozenset(needles))


def clear_caches() -> None:
    """Forget cached field values and search tables (they hold identifiers in memory; bounded
    LRU caches, cleared here e.g. between test cases or on a key rotation)."""
    _field_needles.cache_clear()
    _tables.cache_clear()
    _spec.cache_clear()
