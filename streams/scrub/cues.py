"""Names without a list of them: people a message does not name in any field (relatives,
colleagues, other doctors), found by the words around them.

Korean (anchored on the cue word, then the token next to it is judged):

* a title or honorific after a name (:data:`NAME_TITLES`: 교수, 선생, 간호사, 님, 씨, 과장 ...;
  one space allowed): a token of a Korean surname (:data:`SURNAMES`) and one or two syllables
  (``문유진 교수``), a surname alone (``박 간호사``, ``오씨``, ``김 교수님께``), or two syllables
  before 선생/님/씨 (a given name: ``민준 선생님께``). Role words that take the same titles
  (``담당 간호사``, ``주치의 선생님``, :data:`ROLE_WORDS`) are not names;
* a relationship word before a name (:data:`RELATIONS`: 보호자, 딸, 아들, 남편, 아내, 어머니 ...):
  a token of a surname and two syllables, particles after it allowed (``딸 김서연에게``);
* a relationship in parentheses after such a token (``김서연(딸)``).

Latin script:

* a title (Dr, Prof, Mr, Mrs, Ms, Miss, Nurse) then an optional initial and one to three
  capitalized words (``Dr. J. Turner``, ``Prof. Garcia``, ``Dr. Kyung-Min Choi``);
* a relationship word (daughter, son, wife, husband, mother, ..., HCP) then one to three
  capitalized words (``daughter Emily``, ``Wife Sarah Connor``);
* one to three capitalized words before a relationship in parentheses, ``, the patient's wife``
  or a credential (``Jason Sullivan, RN``, ``Emily Smith (daughter)``).

Words that are never names in these positions (departments, ``The``, ...) stop a name; an
eponym (``Murphy's sign``) is never taken. Hangul names with no cue at all (``송수빈에게 설명함``)
are found by their shape instead (:mod:`.shape`). A Korean morphological analyzer was evaluated
for them and not adopted (kiwipiepy 0.24.1 with kiwipiepy-model 0.24.0, proper nouns (NNP) of
name shape: it finds about half of them, but costs ~420-540 us a note, 4-5x the whole scrubber,
and 218 MB installed; without the name-shape filter it also removes departments, drugs and
eponyms; figures and command in BENCHMARKS.md, scrub).
"""

from __future__ import annotations

import re

from .words import PARTICLES, eponym_at


def _words(text: str) -> list[str]:
    return text.split()


__all__ = ["LATIN_RELATIONS", "NAME_TITLES", "RELATIONS", "ROLE_WORDS", "SURNAMES", "cue_spans"]

#: Korean surnames (one syllable; the compound ones are matched as two).
SURNAMES: frozenset[str] = frozenset(
    _words(
        """
         김 이 박 최 정 강 조 윤 장 임 한 오 서 신 권 황 안 송 류 유 전 홍 고 문 양 손 배 백 허
         남 심 노 하 곽 성 차 주 우 구 민 진 나 지 엄 변 채
         원 천 방 공 현 함 염 여 추 도 소 석 선 설 마 길 연 위 표 명 기 반 왕 금 옥 육 인 맹 제
         모 탁 국 어 은 편 용 예 경 봉 사 부 황보 남궁 제갈
         선우 독고 사공 서문
        """
    )
)
#: Titles after a name (the longest first where one starts another).
NAME_TITLES: tuple[str, ...] = (
    "교수", "선생", "간호사", "과장", "원장", "부장", "전공의", "레지던트", "인턴", "여사",
    "주임", "약사", "환자", "님", "씨",
)  # fmt: skip
# Before 환자 only a surname alone or a full name is taken ("고령 환자", "전원 환자" are not);
# "이 환자", "전 환자" are "this patient", "all patients".
_PATIENT_TITLE = "환자"
_NOT_SURNAMES_BEFORE_PATIENT = frozenset({"이", "전"})
# Titles after which two syllables alone are taken as a given name.
_GIVEN_TITLES = ("선생", "님", "씨")
#: Words before a name.
RELATIONS: tuple[str, ...] = (
    "보호자", "딸", "아들", "남편", "아내", "부인", "배우자", "어머니", "아버지", "모친", "부친",
    "형", "누나", "오빠", "언니", "동생", "며느리", "사위", "손자", "손녀", "친구", "전공의",
    "주치의", "담당의", "담당 간호사",
)  # fmt: skip
#: Words that take a title but are roles, not names.
ROLE_WORDS: frozenset[str] = frozenset(
    _words(
        """
         담당 주치의 주치 전공의 담당의 전문의 해당 상기 환자 보호자 보호 간호 의사 교수 과장
         원장 수간호 병동 외래 당직 담임 선생 부모 어머 아버 고객 기사 주임
         책임 수석 인턴 레지던트 외과 내과 응급 신장 마취 영상 병리 약제 간호부 사회 복지 영양
         재활 치료 상담 협진 자문
        """
    )
)
_RELATION_IN_PARENS = (
    "딸", "아들", "보호자", "배우자", "남편", "아내", "모", "부", "형", "누나", "오빠", "언니",
    "동생", "며느리", "사위", "손자", "손녀", "친구",
)  # fmt: skip

_HANGUL = "\uac00-\ud7a3"
_TITLE_RX = re.compile("|".join(NAME_TITLES))
_RELATION_RX = re.compile("(?:" + "|".join(sorted(RELATIONS, key=len, reverse=True)) + ")\\s")
_TOKEN_BEFORE = re.compile(f"[{_HANGUL}]{{1,4}}$")
_TOKEN_AFTER = re.compile(f"[{_HANGUL}]{{2,5}}")
_PARENS = re.compile(r"\((?:" + "|".join(_RELATION_IN_PARENS) + r")\)")
_NAME_BEFORE_PARENS = re.compile(f"(?<![{_HANGUL}])[{_HANGUL}]{{3,4}} ?$")

_CAP = r"[A-Z][A-Za-z'\-]*[a-z][A-Za-z'\-]*|[A-Z]{2,}(?:-[A-Z]+)?"
_NAME_WORDS = rf"(?:{_CAP})(?:\s+(?:{_CAP})){{0,2}}"
# Literal cues first (the engine skips to them in C); "not inside a word" is checked in Python.
_LATIN_TITLE = re.compile(
    r"(?:Dr|Prof|Mr|Mrs|Ms|Miss|Mx|Nurse|Dra)\.?\s+" rf"(?P<name>(?:[A-Z]\.\s?)?{_NAME_WORDS})"
)
#: Relationship words before a Latin name (matched in any case; the Korean ones of
#: :data:`RELATIONS` are followed by a Latin name too: ``보호자 Sarah Johnson``).
LATIN_RELATIONS: tuple[str, ...] = (
    "granddaughter", "grandson", "daughter", "son", "wife", "husband", "mother", "father",
    "sister", "brother", "spouse", "partner", "friend", "neighbor", "neighbour", "caregiver",
    "guardian", "niece", "nephew", "hcp", "poa",
)  # fmt: skip
# Searched in the text as written, lower case, capitalized or upper case (daughter, Daughter,
# DAUGHTER), with a capitalized word after it (a name): each form's first letter a literal (re
# skips in C to them), "not inside a word" a lookbehind after it (Johnson is no son).
_RELATION_FORMS: dict[str, list[str]] = {}
for _w in LATIN_RELATIONS:
    for _form in dict.fromkeys((_w, _w.capitalize(), _w.upper())):
        _RELATION_FORMS.setdefault(_form[0], []).append(_form[1:])
_LATIN_RELATION = re.compile(
    "(?:"
    + "|".join(
        f"{c}(?<![A-Za-z]{c})(?:{'|'.join(sorted(rests, key=len, reverse=True))})"
        for c, rests in _RELATION_FORMS.items()
    )
    + r")(?![A-Za-z])(?=,?\s+[A-Z])"
)
_AFTER_RELATION = re.compile(rf",?\s+(?P<name>{_NAME_WORDS})")
# A role after the name: the name is looked for in the text just before it.
_ROLE_AFTER = re.compile(
    r"\((?:daughter|son|wife|husband|mother|father|sister|brother|spouse|partner|friend|"
    r"caregiver|guardian|HCP|POA)\)"
    r"|, (?:the patient's|pt's|his|her) (?:wife|husband|daughter|son|mother|father|sister|"
    r"brother)|, (?:RN|MD|PA-C|NP|DO|LPN|CNA|PharmD)(?![A-Za-z])"
)
_NAME_BEFORE = re.compile(rf"(?<![A-Za-z])(?P<name>{_NAME_WORDS}) ?$")
#: Capitalized words that end a Latin name in these positions (the sentence goes on).
LATIN_STOP_WORDS: frozenset[str] = frozenset(
    _words(
        """
         The And Or Of In On At To From With For By Was Is Were Has Had Will Pt Patient MD RN
         Internal Medicine Cardiology Nephrology Oncology Surgery Neurology Radiology Pathology ICU
         ER ED Office Clinic Hospital Dept Department Team Service Unit Ward Called Per
        """
    )
)
_ANY_HANGUL = re.compile(f"[{_HANGUL}]")
# Every Latin rule needs a capital letter (a title, or a name after a relationship word or before a
# role): a text without one is passed over.
_ANY_CAPITAL = re.compile("[A-Z]")

Span = tuple[int, int]


def _korean(text: str, spans: list[Span]) -> None:
    for m in _TITLE_RX.finditer(text):
        end = m.start()
        if end > 0 and text[end - 1] == " ":
            end -= 1
        token = _TOKEN_BEFORE.search(text, max(0, end - 4), end)
        if token is None or (token.start() > 0 and "\uac00" <= text[token.start() - 1] <= "\ud7a3"):
            continue  # no token, or a word of five syllables or more: not a name
        word = token.group()
        start = token.start()
        title = m.group()
        if word in ROLE_WORDS:
            continue
        if title == _PATIENT_TITLE:
            if (word in SURNAMES and word not in _NOT_SURNAMES_BEFORE_PATIENT) or (
                len(word) == 3 and word[:1] in SURNAMES
            ):
                spans.append((start, token.end()))
            continue
        if word in SURNAMES:  # a surname alone: 박 간호사, 남궁 씨 (그 간호사, 각 과장 are not)
            spans.append((start, token.end()))
        elif word[:1] in SURNAMES or word[:2] in SURNAMES:
            if len(word) <= 4:
                spans.append((start, token.end()))
        elif len(word) == 2 and title in _GIVEN_TITLES:
            spans.append((start, token.end()))
    for m in _RELATION_RX.finditer(text):
        if m.start() > 0 and "\uac00" <= text[m.start() - 1] <= "\ud7a3":
            continue
        token = _TOKEN_AFTER.match(text, m.end())
        if token is None:
            latin = _AFTER_RELATION.match(text, m.end() - 1)  # 보호자 Sarah Johnson
            if latin is not None:
                _latin_name(text, latin.start("name"), latin.end("name"), spans)
            continue
        word = token.group()
        for size in (3, 4):
            name, rest = word[:size], word[size:]
            if (
                len(name) == size
                and (name[:1] in SURNAMES or name[:2] in SURNAMES)
                and (not rest or rest.startswith(PARTICLES) or rest.startswith(("님", "씨")))
                and name[1:] not in ROLE_WORDS
                and name not in ROLE_WORDS
                and name[:2] not in ROLE_WORDS
            ):
                spans.append((token.start(), token.start() + size))
                break
    for m in _PARENS.finditer(text):
        found = _NAME_BEFORE_PARENS.search(text, max(0, m.start() - 6), m.start())
        if found is not None:
            name = found.group().rstrip()
            if name[:1] in SURNAMES or name[:2] in SURNAMES:
                spans.append((found.start(), found.start() + len(name)))


def _latin_name(text: str, start: int, end: int, spans: list[Span]) -> None:
    words = text[start:end].split()
    kept: list[str] = []
    for w in words:
        if w.rstrip(".,") in LATIN_STOP_WORDS:
            break
        kept.append(w)
    if not kept:
        return
    stop = start + len(" ".join(kept))  # the name's words are separated by single spaces
    if text[start:stop] != " ".join(kept):
        stop = start + text[start:end].find(kept[-1]) + len(kept[-1])
    if not eponym_at(text, stop):
        spans.append((start, stop))


def _latin(text: str, spans: list[Span]) -> None:
    for m in _LATIN_TITLE.finditer(text):
        if m.start() == 0 or not text[m.start() - 1].isalpha():
            _latin_name(text, m.start("name"), m.end("name"), spans)
    for m in _LATIN_RELATION.finditer(text):
        after = _AFTER_RELATION.match(text, m.end())
        if after is not None:
            _latin_name(text, after.start("name"), after.end("name"), spans)
    for m in _ROLE_AFTER.finditer(text):
        window = max(0, m.start() - 60)
        name = _NAME_BEFORE.search(text, window, m.start())
        if name is not None:
            _latin_name(text, name.start("name"), name.end("name"), spans)


def cue_spans(text: str) -> list[Span]:
    """Spans of names found by their cues (module docstring); they may overlap."""
    spans: list[Span] = []
    if _ANY_HANGUL.search(text):
        _korean(text, spans)
    if _ANY_CAPITAL.search(text):
        _latin(text, spans)
    return spans
