"""The pattern rules: identifiers any text may contain, whatever its message.

One regex, compiled once per :class:`ScrubOptions`, scanned once per text. Built for speed in
CPython's ``re``: every top-level alternative starts with a literal or a character class (so the
engine skips it with one C check at positions where it cannot start), lookbehinds come after that
first character, no alternative is wrapped in a group (an empty marker group at its *end* names
it), and no ``IGNORECASE`` (letters are written ``[Mm]``; a case-insensitive class over Hangul
would cost milliseconds to compile and slow every match). Candidates that need more than a regex
(a real calendar date, a valid IP address) are checked in Python on the match only.

Three passes: network identifiers (e-mail, URL, IPv6) only when the text has their marks, the
main pass, then a second pass for Korean road addresses and ages in Korean or English words, each
only when the text has its mark (로/길, 아흔/구십/백, ninety/hundred). In the main pass the order
of alternatives decides between matches starting at the same character: IPv4, RRN, phone
numbers, US SSN, dates, ages, labelled ids, labelled postal codes, long numbers, then the shapes
added for issue 16 that start with a digit or a Latin letter (``_add_issue16_shapes``: dates with
a month name between day and year or without a year, apartment units, US street numbers, units,
alphanumeric record numbers; they were a second pass of their own, one regex a shape, folded in
to scan the text once).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from .checks import CHECKS, DD, DIGITS, MM, RRN_VALUE, plausible_rrn, shift, valid_ip
from .kinds import PLACEHOLDERS, Kind

__all__ = ["ScrubOptions", "apply_patterns"]


@dataclass(frozen=True)
class ScrubOptions:
    """Pattern settings (the identifier step has none)."""

    #: Any run of at least this many digits that is not a date or part of a decimal -> ``[ID]``
    #: (MRNs, accession and insurance numbers). None: only labelled numbers are removed.
    long_number_digits: int | None = 8
    #: Digits needed after an MRN label (``MRN``, ``등록번호``, ``병록번호``, ``ID``, ...).
    labelled_id_digits: int = 6

    def __post_init__(self) -> None:
        if self.long_number_digits is not None and self.long_number_digits < 5:
            raise ValueError("long_number_digits must be at least 5 (or None)")
        if self.labelled_id_digits < 3:
            raise ValueError("labelled_id_digits must be at least 3")


# -- building blocks --------------------------------------------------------------------------


def ci(text: str) -> str:
    """A regex matching ``text`` with ASCII letters in either case; a space matches 0-1 spaces."""
    out = []
    for ch in text:
        if ch == " ":
            out.append(r"\s?")
        elif ch.isascii() and ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _ci_rx(rx: str) -> str:
    """A regex with its ASCII letters made case-insensitive (``ay`` -> ``[Aa][Yy]``)."""
    return re.sub("[A-Za-z]", lambda m: f"[{m[0].upper()}{m[0].lower()}]", rx)


def _cases(text: str) -> str:
    """The first characters that start ``text``: both cases of an ASCII letter."""
    return text + text.swapcase() if text.isascii() and text.isalpha() else text


_DIGITS_STR = "0123456789"
_M = "(?:1[0-2]|0?[1-9])"
_DAY = "(?:3[01]|[12][0-9]|0?[1-9])"
_YEAR_REST = {"1": "9[0-9]{2}", "2": "0[0-9]{2}"}  # 19xx and 20xx after the first digit
_Y4 = "(?:19|20)[0-9]{2}"
_TIME = "(?:(?:[01][0-9]|2[0-3])[0-5][0-9](?:[0-5][0-9](?:\\.[0-9]{1,4})?)?)?"
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"
_URL_END = r"[A-Za-z0-9\-_~/#=&%+]"
_TLD_LIST = "com net org edu gov mil int info biz kr io me us uk jp cn de fr ca au"
_TLDS = "(?:" + "|".join(ci(t) for t in _TLD_LIST.split(" ")) + ")"
_MONTH_RX = {
    "january": "an(?:uary)?", "february": "eb(?:ruary)?", "march": "ar(?:ch)?",
    "april": "pr(?:il)?", "may": "ay", "june": "une?", "july": "uly?", "august": "ug(?:ust)?",
    "september": "ep(?:t(?:ember)?)?", "october": "ct(?:ober)?", "november": "ov(?:ember)?",
    "december": "ec(?:ember)?",
}  # fmt: skip
_ANY_MONTH = "(?:" + "|".join(ci(m[0]) + _ci_rx(r) for m, r in _MONTH_RX.items()) + ")"
_ORDINAL = "(?:st|nd|rd|th)?"
_AGE_NUMBER = "(?:9[0-9]|1[0-4][0-9])"
_AGE_TAIL = (
    r"(?:\s?(?:세|살)"
    rf"|\s?-?\s?(?:{ci('years')}|{ci('year')}|{ci('yrs')}|{ci('yr')})(?:[\s\-]?{ci('old')}"
    rf"|\s+{ci('of')}\s+{ci('age')})"
    rf"|\s?(?:{ci('y/o')}|{ci('yo')}|{ci('y.o.')})(?![A-Za-z])"
    r"|\s?/\s?[MFmf남여](?![A-Za-z]))"
)
_SEP = r"[\s.\-]?"
_HYPHENS = "\\-\u2010\u2011\u2013"

_ID_LABELS = (
    "MRN", "MR No", "MR #", "Chart No", "Chart #", "Chart number", "Medical record No",
    "Medical record number", "Hospital No", "Hospital number", "Patient ID", "Pt ID", "Pt. ID",
    "ID", "등록번호", "병록번호", "환자번호", "차트번호", "의무기록번호", "진료번호", "환자 ID",
)  # fmt: skip
_PHONE_LABELS = (
    "연락처", "전화번호", "전화", "휴대폰", "휴대전화", "핸드폰", "폰번호", "팩스", "HP", "H.P.",
    "Tel", "Tel.", "Phone", "Mobile", "Cell", "Fax",
)  # fmt: skip
_ZIP_LABELS = ("우편번호", "우편", "(우)", "우)", "ZIP", "ZIP code", "Postal code", "Postcode")


@dataclass(frozen=True)
class _Alt:
    """One alternative: a literal character of ``first``, then the one-character regex
    ``second``, then ``rest``; it may not start right after a character of class ``not_after``.
    ``{g}`` in ``rest`` becomes a unique group-name prefix; a group ``{g}v`` is the value (the
    text before it is a label that stays)."""

    key: str
    first: str
    second: str
    rest: str
    not_after: str | None = None


def _alternatives(options: ScrubOptions) -> list[_Alt]:
    """The main pass, in priority order (first wins between matches at the same character).

    Each alternative is written as first character, second character, rest, so that the
    engine can reject it with one C comparison per character (see ``_compiled``)."""
    alts: list[_Alt] = []

    def add(key: str, first: str, second: str, rest: str, not_after: str | None = None) -> None:
        alts.append(_Alt(key, first, second, rest, not_after))

    d, dd = _DIGITS_STR, "[0-9]"
    ip_end = r"(?![0-9]|\.[0-9])"
    add("ipv4", d, dd, r"[0-9]?\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}" + ip_end, "[0-9.]")
    add("ipv4", d, r"\.", r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}" + ip_end, "[0-9.]")
    # RRN: YYMMDD, a hyphen and 7 digits (or the masked 1****** / *******); without the hyphen
    # (or with a space) the 13 digits need a real date for the century of the gender digit.
    mmdd = f"{MM}{DD}"
    add(
        "rrn",
        d,
        dd,
        mmdd + rf"\s{{0,2}}[{_HYPHENS}]\s{{0,2}}(?:[0-9]{{7}}|[0-9]\*{{6}}|\*{{7}})(?![0-9*])",
        "[0-9]",
    )
    add("rrn_plain", d, dd, mmdd + r"\s?[0-9]{7}(?![0-9])", "[0-9]")
    # Korean phones: mobile 010/011/016-019, Seoul 02, regional 0NN, VoIP 070, safe 050x, 080.
    local = rf"{_SEP}[0-9]{{3,4}}{_SEP}[0-9]{{4}}(?![0-9])"
    areas = {"1": "[016789]", "2": "", "3": "[1-3]", "4": "[1-4]", "5": "(?:[1-5]|0[2-8]?)",
             "6": "[1-4]", "7": "0", "8": "0"}  # fmt: skip
    for second, tail in areas.items():
        add("phone", "0", second, tail + r"\)?" + local, "[0-9]")
    area = "(?:1[016789]|2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|50[2-8]?|80)"
    add("phone", "(", "0", area + r"\)" + local)
    add("phone", "+", "8", rf"2{_SEP}(?:\(0\)\s?)?\(?{area}\)?" + local)
    add("phone", "+", r"\s", rf"82{_SEP}(?:\(0\)\s?)?\(?{area}\)?" + local)
    add("phone", "0", "0", rf"\s?82{_SEP}(?:\(0\)\s?)?\(?{area}\)?" + local, "[0-9]")
    add(
        "phone_intl",
        "+",
        "[1-9]",
        r"[0-9]{0,2}(?:[\s.\-]?\(?[0-9]{1,4}\)?){2,5}(?![0-9]|[.,][0-9])",
    )
    us_tail = r"[2-9][0-9]{2}[\s.\-][0-9]{4}(?![0-9]|-[0-9])"
    add("phone", "23456789", dd, r"[0-9][\s.\-]" + us_tail, r"[0-9\-.]")
    add("phone", "(", "[2-9]", r"[0-9]{2}\)\s?" + us_tail)
    # 1-212-555-0187, 1 (212) 555-0187: the US country code without a plus
    add(
        "phone",
        "1",
        r"[\s.\-]",
        r"(?:[2-9][0-9]{2}[\s.\-]|\([2-9][0-9]{2}\)\s?)" + us_tail,
        "[0-9+]",
    )
    add(
        "ssn",
        "012345678",
        dd,
        r"[0-9](?P<{g}a>[\s\-])[0-9]{2}(?P={g}a)[0-9]{4}(?![0-9]|-[0-9])",
        r"[0-9\-]",
    )
    # Dates, years 1900-2099.
    for first, second in (("1", "9"), ("2", "0")):
        y = "[0-9]{2}"
        add("date_compact", first, second, y + f"{MM}{DD}{_TIME}(?![0-9])", "[0-9]")
        for sep in (r"\.", "-", "/"):
            # 2026. 11. 27. (Korean style): the final dot belongs to the date
            end = r"(?:(?<=\.\s[0-9])\.|(?<=\.\s[0-9]{2})\.)?" if sep == r"\." else ""
            add(
                "date_sep",
                first,
                second,
                y + rf"(?P<{{g}}s>\s?{sep}\s?){_M}(?P={{g}}s){_DAY}(?![0-9]){end}",
                "[0-9.]",
            )
        add("date_kr", first, second, y + rf"\s*년\s*{_M}\s*월\s*{_DAY}\s*일", "[0-9]")
        add("date_partial", first, second, y + rf"\s*년\s*{_M}\s*월(?!\s*[0-9])", "[0-9]")
    day_month = rf"\s*월\s*{_DAY}\s*일"
    add("date_partial", d, dd, day_month, "[0-9]")
    add("date_partial", d, "월", rf"\s*{_DAY}\s*일", "[0-9]")
    add("date_partial", d, r"\s", day_month, "[0-9]")
    for sep in (r"\.", "/", "-"):
        dmy = rf"[0-3]?[0-9]{sep}{_Y4}(?![0-9])"
        add("date_dmy", "0123", dd, sep + dmy, r"[0-9./\-]")
        add("date_dmy", d, sep, dmy, r"[0-9./\-]")
    for name, rx in _MONTH_RX.items():
        second, tail = _ci_rx(rx[0]), _ci_rx(rx[1:])
        rest = tail + rf"\.?(?:\s+{_DAY}{_ORDINAL},?)?\s+{_Y4}(?![0-9])"
        add("date_en", _cases(name[0]), second, rest, "[A-Za-z]")
    months_year = rf"{_ANY_MONTH}\.?,?\s+{_Y4}(?![0-9])"
    add("date_en", "0123", dd, rf"{_ORDINAL}\s+{months_year}", "[0-9]")
    add("date_en", d, r"\s", rf"\s*{months_year}", "[0-9]")
    add("date_en", d, "[sSnNrRtT]", rf"[tTdDhH]\s+{months_year}", "[0-9]")
    add("date_yy", d, dd, rf"\.{MM}\.{DD}(?![0-9]|\.[0-9])", "[0-9.]")
    # Ages over 89.
    add("age", "만", r"\s", rf"{_AGE_NUMBER}\s?(?:세|살)")
    add("age", "만", "9", r"[0-9]\s?(?:세|살)")
    add("age", "만", "1", r"[0-4][0-9]\s?(?:세|살)")
    add("age", "9", dd, _AGE_TAIL, "[0-9.]")
    add("age", "1", "[0-4]", "[0-9]" + _AGE_TAIL, "[0-9.]")
    add(
        "age",
        "Aa",
        "[Gg]",
        rf"[Ee][Dd]?\s*(?:of\s*)?[:=]?\s*{_AGE_NUMBER}(?![0-9])",
        r"[A-Za-z\[]",
    )
    add("age", "MFmf남여", "/", rf"\s?{_AGE_NUMBER}(?![0-9])", "[A-Za-z]")
    add("age", "MFmf남여", r"\s", rf"/\s?{_AGE_NUMBER}(?![0-9])", "[A-Za-z]")
    # Labelled numbers: the label stays.
    n = options.labelled_id_digits
    for label in _ID_LABELS:
        value = rf"(?P<{{g}}v>(?:[A-Za-z]{{1,3}}-?)?[0-9]{{{n},}}(?:-[0-9]+)*)(?![0-9])"
        _labelled(add, "id_labelled", label, rf"\s*[:#.]?\s*(?:[Nn][Oo]\.?\s*)?{value}")
    for label in _PHONE_LABELS:
        value = r"(?P<{g}v>[0-9]{3,4}[\s.\-][0-9]{4})(?![0-9]|[.\-][0-9])"
        _labelled(add, "phone_labelled", label, rf"\s*[:.)]?\s*(?:번호\s*)?{value}")
    for label in _ZIP_LABELS:
        value = r"(?P<{g}v>[0-9]{5}(?:-[0-9]{4})?|[0-9]{3}-[0-9]{3})(?![0-9])"
        _labelled(add, "zip_labelled", label, rf"\s*[:.]?\s*{value}")
    if options.long_number_digits is not None:
        more = options.long_number_digits - 2
        add(
            "long_number",
            d,
            dd,
            rf"(?<![0-9][.,][0-9][0-9])[0-9]{{{more},}}(?![0-9]|[.,][0-9])",
            "[0-9]",
        )
    _add_issue16_shapes(add)
    return alts


# Shapes added for issue 16 that start with a digit or a Latin letter, in the main pass after the
# others (an older shape wins at the same character); their checks are made on the match
# (_shape_ok). Dates with a month name between day and year (23-Feb-2026, 7/Mar/26), month/day
# without a year (5/17, 3/13에; fractions and scores stay: _md_is_date), apartment units
# (101동 1203호), US street numbers (12 Oak Street), units (Apt 5B: the label stays) and
# alphanumeric record and specimen numbers (SP26-004512).
_MONTH_ABBR = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)"
_DIGIT_SHAPES = {
    "dmon": rf"[\-/ ](?i:{_MONTH_ABBR})[\-/ ](?:(?:19|20)[0-9]{{2}}|[0-9]{{2}})(?![0-9])",
    "md": r"/[0-9]{1,2}(?![0-9/]|\.[0-9])",
    "apt": r"\s?동\s?[0-9]{1,4}\s?호",
    "street": r"\s(?:[A-Z][a-z]+\s){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Drive|Lane|Ln|"
    r"Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Circle)\.?(?![A-Za-z])",
}
_DIGIT_SHAPES_NOT_AFTER = {"md": "[0-9/.,]"}
_UNIT_VALUE = r"\.?\s?#?\s?(?P<{g}v>[0-9]{1,5}[A-Z]?|[A-Z][0-9]{1,4})(?![A-Za-z0-9])"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _add_issue16_shapes(add: Callable[[str, str, str, str, str | None], None]) -> None:
    for key, tail in _DIGIT_SHAPES.items():
        # the digit run (up to 5 digits; its size and range checked in _digits_fit), then the tail
        add(key, _DIGITS_STR, "", "[0-9]{0,4}" + tail, _DIGIT_SHAPES_NOT_AFTER.get(key, "[0-9]"))
    for first, second, rest in (("A", "p", "t(?:artment)?"), ("U", "n", "it"), ("S", "u", "ite"),
                                ("S", "t", "e")):  # fmt: skip
        add("unit", first, second, rest + _UNIT_VALUE, "[A-Za-z]")
    add("alnum_id", _UPPER, "[A-Z]", r"[A-Z]?[0-9]{2}-[0-9]{4,}(?![0-9])", r"[A-Za-z0-9\-]")
    add("alnum_id", _UPPER, "[0-9]", r"[0-9]-[0-9]{4,}(?![0-9])", r"[A-Za-z0-9\-]")


def _labelled(
    add: Callable[[str, str, str, str, str | None], None], key: str, label: str, tail: str
) -> None:
    """A labelled alternative: its label (a Latin one must start a word), then ``tail``."""
    head = label[0]
    latin = head.isascii() and head.isalpha()
    add(key, _cases(head), ci(label[1]), ci(label[2:]) + tail, "[A-Za-z]" if latin else None)


# Network identifiers, in a separate pass that runs only when the text has their marks
# (``@``, ``://``, ``www.``, ``::``, many colons, a known top-level domain).
_EMAIL_CHAR = r"[A-Za-z0-9._%+\-]"
_HEX = "[0-9A-Fa-f]"
_NET_ALTERNATIVES = (
    (
        "email",
        rf"{_EMAIL_CHAR}(?<!{_EMAIL_CHAR}{_EMAIL_CHAR}){_EMAIL_CHAR}*@[A-Za-z0-9\-]+"
        r"(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
    ),
    (
        "url",
        # A scheme, www. or a bare domain. Their first character as one class (re skips in C
        # to letters and digits; with a lookbehind first it tried every position of the text)
        # and "not after a letter", which all three need, checked once after it.
        rf"[A-Za-z0-9](?<![A-Za-z].)(?:"
        rf"(?:(?<=[Hh])[Tt][Tt][Pp][Ss]?|(?<=[Ff])[Tt][Pp])://{_URL_CHARS}*{_URL_END}"
        rf"|(?<=[Ww])(?<![0-9.].)[Ww][Ww]\.{_URL_CHARS}*{_URL_END}"
        rf"|(?<![0-9@.\-].)[A-Za-z0-9\-]*(?:\.[A-Za-z0-9\-]+)*\.{_TLDS}"
        rf"(?![A-Za-z0-9\-])(?:/{_URL_CHARS}*{_URL_END})?)",
    ),
    (
        "ipv6",
        rf"(?<![0-9A-Za-z:]){_HEX}{{1,4}}(?::{_HEX}{{0,4}}){{2,7}}(?![0-9A-Za-z:])"
        rf"|(?<![0-9A-Za-z:])::{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{0,6}}(?![0-9A-Za-z:])",
    ),
)
# One regex a kind, each run only on texts with its marks (_net_pass): one regex of the three
# had no first character for re to skip to, so it tried every position of every text with a mark.
_NET = {key: re.compile(f"(?:{rx})(?P<{key}>)") for key, rx in _NET_ALTERNATIVES}
# Permissive on purpose (any ".xx" to ".xxxx"): the pass itself checks the domain.
_TLD_GATE = re.compile(r"\.[A-Za-z]{2,4}(?![A-Za-z0-9\-])")


_KEY_KIND: dict[str, Kind] = {
    "email": Kind.EMAIL,
    "url": Kind.URL,
    "ipv4": Kind.IP,
    "ipv6": Kind.IP,
    "rrn": Kind.RRN,
    "rrn_plain": Kind.RRN,
    "phone": Kind.PHONE,
    "phone_intl": Kind.PHONE,
    "phone_labelled": Kind.PHONE,
    "ssn": Kind.ID,
    "date_compact": Kind.DATE,
    "date_sep": Kind.DATE,
    "date_kr": Kind.DATE,
    "date_partial": Kind.DATE,
    "date_dmy": Kind.DATE,
    "date_en": Kind.DATE,
    "date_yy": Kind.DATE,
    "age": Kind.AGE,
    "id_labelled": Kind.ID,
    "zip_labelled": Kind.ADDRESS,
    "long_number": Kind.ID,
    "dmon": Kind.DATE,
    "md": Kind.DATE,
    "apt": Kind.ADDRESS,
    "street": Kind.ADDRESS,
    "unit": Kind.ADDRESS,
    "alnum_id": Kind.ID,
}


@dataclass(frozen=True)
class _Compiled:
    regex: re.Pattern[str]
    keys: dict[str, tuple[str, str | None]]  # marker group -> (handler key, value group)


def _hoisted(befores: list[str]) -> str | None:
    """A check all alternatives of one first character make, done once for them: digits never
    start inside a number, Latin letters never inside a word."""
    for cls in ("[0-9]", "[A-Za-z]"):
        if all(cls[1:-1] in b for b in befores):
            return cls
    return None


@lru_cache(maxsize=16)
def _compiled(options: ScrubOptions) -> _Compiled:
    """Group the alternatives by first character: ``c(?:rest1|rest2...)`` for each ``c``.

    Every top-level alternative then starts with a literal, so ``re`` skips characters that
    start nothing (most Hangul) in C, and tries only the few alternatives of the others."""
    by_first: dict[str, list[str]] = {}
    befores: dict[str, list[str]] = {}
    keys: dict[str, tuple[str, str | None]] = {}
    alternatives = _alternatives(options)
    for alt in alternatives:
        for c in alt.first:
            befores.setdefault(c, []).append(alt.not_after or "")
    for n, alt in enumerate(alternatives):
        for c in alt.first:
            g = f"g{n}_{ord(c)}_"
            rest = alt.rest.replace("{g}", g)
            behind = ""
            hoisted = _hoisted(befores[c])
            if alt.not_after and alt.not_after != hoisted:
                behind = f"(?<!{alt.not_after}{re.escape(c)}{alt.second})"
            by_first.setdefault(c, []).append(f"{alt.second}{behind}{rest}(?P<{g}m>)")
            keys[f"{g}m"] = (alt.key, f"{g}v" if f"(?P<{g}v>" in rest else None)
    parts = []
    for c, rests in by_first.items():
        hoisted = _hoisted(befores[c])
        behind = f"(?<!{hoisted}{re.escape(c)})" if hoisted else ""
        parts.append(f"{re.escape(c)}{behind}(?:{'|'.join(rests)})")
    return _Compiled(re.compile("|".join(parts)), keys)


def _net_pass(text: str, counts: dict[Kind, int]) -> str:
    """E-mail addresses, then URLs, then IPv6 addresses, each only when the text has its marks
    (``@``; ``://``, ``www.`` or a dot and two to four letters; ``::`` or seven colons)."""

    def replace(m: re.Match[str]) -> str:
        key = m.lastgroup or ""
        if key == "ipv6" and not valid_ip(m.group()):
            return m.group()
        kind = _KEY_KIND[key]
        counts[kind] = counts.get(kind, 0) + 1
        return PLACEHOLDERS[kind]

    if "@" in text:
        text = _NET["email"].sub(replace, text)
    if "://" in text or "www." in text or "WWW." in text or _TLD_GATE.search(text) is not None:
        text = _NET["url"].sub(replace, text)
    if "::" in text or text.count(":") >= 7:
        text = _NET["ipv6"].sub(replace, text)
    return text


_CODE_LABEL = re.compile(
    r"(?:SNOMED(?:\s?CT)?|SCTID|LOINC|ICD(?:-?1[01])?(?:-CM)?|CPT|KCD|EDI|ATC|RxNorm|NDC|HCPCS)"
    r"[\s:#]{0,3}$"
)

# -- the second pass: Korean road addresses and ages in words (issue 16) ----------------------
# Each regex runs only on texts with its mark (see _extra_pass). A road address is found from its
# 로/길 and a number; the road's name and district before it are taken in Python (_ROAD_BEFORE).
# the end of a Korean road address: 월드컵로 381, 판교역로 12-3, 34번길 5
_EXTRA_ROAD = re.compile(
    r"(?P<road>(?:로|길)\s?[0-9]{1,4}(?:-[0-9]{1,4})?(?![0-9]|\s?(?:mg|mL|ml|g|kg|일|회|개|"
    r"시간|분|주|세|번|%|정|cc|단위|mmHg|cm|mm|명|병|차)))"
)
# ages over 89 in Korean words: 아흔두 살, 구십이 세, 백팔 세
_EXTRA_AGE = re.compile(
    r"(?P<age>아흔(?:한|두|세|네|다섯|여섯|일곱|여덟|아홉)?\s?(?:살|세)"
    r"|(?:구십|백)(?:일|이|삼|사|오|육|칠|팔|구|십)?\s?(?:세|살))"
)
# English ages in words, searched only in texts that have "ninety" or "hundred".
_AGE_WORDS = re.compile(
    r"(?<![A-Za-z])(?P<age>(?i:ninety|one\s+hundred)(?:[\s\-](?:and\s)?(?i:one|two|three|four|"
    r"five|six|seven|eight|nine))?[\s\-](?i:years?[\s\-]old|y/?o)(?![A-Za-z]))"
)
_ROAD_BEFORE = re.compile(
    "(?:[\uac00-\ud7a3]{1,6}(?:구|군|시)\\s)?[\uac00-\ud7a3]{1,8}[0-9]{0,3}(?:번)?$"
)
# Around a month/day that is a fraction, a score or a dose (1/2 tab, 5/5 strength, VAS 7/10).
_MD_CUE_BEFORE = re.compile(
    r"(?i:on|since|from|until|till|by|before|after|seen|visit|dated|due|next|last)\s$|~\s?$"
)
_MD_AFTER_DATE = re.compile(r"\s?(?:에|부터|까지|경|일|자|;|,|\.|\)|$)")
_MD_SCORE_BEFORE = re.compile(
    r"(?i:pain|vas|nrs|score|power|strength|grade|motor|gcs|ratio|bp|fraction)[\s:=]{0,3}$"
)
_MD_DOSE_AFTER = re.compile(r"\s?(?i:tab|t\b|cap|amp|vial|of|정|캡슐|포|앰플|바이알|병|회)")


def _md_is_date(text: str, start: int, end: int) -> bool:
    """A month/day without a year, told from fractions (``1/2 tab``), scores (``5/5``,
    ``VAS 7/10``) and ratios: a date cue before it or a date-like ending after it, and no
    score word before or dose unit after it."""
    before = text[max(0, start - 12) : start]
    if _MD_SCORE_BEFORE.search(before) or _MD_DOSE_AFTER.match(text, end):
        return False
    if _MD_CUE_BEFORE.search(before) or _MD_AFTER_DATE.match(text, end):
        return True
    month, day = (int(x) for x in text[start:end].split("/"))
    return day > 5 or month > day  # 1/2, 2/3, 3/4, 4/5: fractions unless a cue says otherwise


_DIGITS_FIRST = frozenset({"dmon", "md", "apt", "street"})


def _age_words(text: str, counts: dict[Kind, int]) -> str:
    def replace(m: re.Match[str]) -> str:
        counts[Kind.AGE] = counts.get(Kind.AGE, 0) + 1
        return PLACEHOLDERS[Kind.AGE]

    return _AGE_WORDS.sub(replace, text)


def _digits_fit(key: str, digits: str, tail: str) -> bool:
    """The digit run before a date's tail has the right size and range."""
    if key == "dmon":
        return len(digits) <= 2 and 1 <= int(digits) <= 31
    if key == "md":
        return len(digits) <= 2 and 1 <= int(digits) <= 12 and 1 <= int(tail[1:]) <= 31
    return True


def _shape_ok(key: str, text: str, start: int, s: str) -> bool:
    """A main-pass match of a shape that starts with a digit run passes its checks."""
    digits = DIGITS.match(s)
    assert digits is not None  # these shapes start with a digit
    if not _digits_fit(key, digits.group(), s[digits.end() :]):
        return False
    return key != "md" or _md_is_date(text, start, start + len(s))


def _extra_pass(text: str, counts: dict[Kind, int]) -> str:
    if "inety" in text or "undred" in text or "INETY" in text or "UNDRED" in text:
        text = _age_words(text, counts)
    found: list[tuple[int, int, Kind]] = []
    # Marks tested inline (a generator over a tuple of marks cost more than the searches).
    if "로" in text or "길" in text:
        for m in _EXTRA_ROAD.finditer(text):
            road = _ROAD_BEFORE.search(text, max(0, m.start() - 24), m.start())
            if road is not None:  # "로 5" alone: a particle before a number, not a road
                found.append((road.start(), m.end(), Kind.ADDRESS))
    if "아흔" in text or "구십" in text or "백" in text:
        found.extend((m.start(), m.end(), Kind.AGE) for m in _EXTRA_AGE.finditer(text))
    if not found:
        return text
    found.sort()
    out: list[str] = []
    pos = 0
    for start, end, kind in found:
        if start < pos:
            continue
        counts[kind] = counts.get(kind, 0) + 1
        out.append(text[pos:start])
        out.append(PLACEHOLDERS[kind])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def apply_patterns(
    text: str,
    counts: dict[Kind, int],
    shift_date: Callable[[date], date] | None,
    options: ScrubOptions,
) -> str:
    """Replace pattern matches in ``text``, adding to ``counts``."""
    text = _net_pass(text, counts)
    compiled = _compiled(options)
    keys = compiled.keys
    long_n = options.long_number_digits

    def replace(m: re.Match[str]) -> str:
        key, value_group = keys[m.lastgroup or ""]
        s = m.group()
        kind = _KEY_KIND[key]
        if key == "long_number" and _CODE_LABEL.search(m.string, 0, m.start()):
            return s  # SNOMED 44054006: a code, not an identifier
        if key == "rrn_plain" and not plausible_rrn(s):
            if long_n is None or long_n > 13 or not s.isdigit():
                return s
            kind = Kind.ID  # a long number, not an RRN
        elif (key in CHECKS and not CHECKS[key](s)) or (
            key in _DIGITS_FIRST and not _shape_ok(key, m.string, m.start(), s)
        ):
            return s
        elif kind == Kind.DATE and shift_date is not None:
            shifted = shift(key, s, shift_date)
            if shifted is not None:
                counts[kind] = counts.get(kind, 0) + 1
                return shifted
        if value_group is not None:
            cut = m.start(value_group) - m.start()
            if key == "id_labelled" and RRN_VALUE.fullmatch(s[cut:]) and plausible_rrn(s[cut:]):
                kind = Kind.RRN  # 주민등록번호 1234561234567: an RRN behind an id label
            counts[kind] = counts.get(kind, 0) + 1
            return s[:cut] + PLACEHOLDERS[kind]
        counts[kind] = counts.get(kind, 0) + 1
        return PLACEHOLDERS[kind]

    return _extra_pass(compiled.regex.sub(replace, text), counts)
