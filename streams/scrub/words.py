"""Word lists and scripts: what tells a name from a common word (the needle rules of
:mod:`.needles` and the name splitting of :mod:`.collector`)."""

from __future__ import annotations

import re

__all__ = [
    "COMMON_WORDS",
    "HANGUL_ONLY",
    "KOREAN_COMPOUND_SURNAMES",
    "LATIN_COMMON_WORDS",
    "NAME_SEPARATORS",
    "PARTICLES",
    "SYLLABLE",
    "SYLLABLES",
    "TITLES",
    "eponym_at",
    "is_latin",
    "is_syllabic",
]


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

#: Two-syllable surnames: a Hangul name sent in one piece splits after them, not after one.
KOREAN_COMPOUND_SURNAMES: frozenset[str] = _words(
    "남궁 제갈 선우 독고 황보 사공 서문 동방 어금 망절 장곡 소봉 황목"
)

#: Hangul syllables and CJK ideographs (Hanja), as the inside of a regex character class.
SYLLABLES = "\uac00-\ud7a3\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
SYLLABLE = re.compile(f"[{SYLLABLES}]")
_SYLLABIC = re.compile(f"[{SYLLABLES}]+")
_LATIN = re.compile(r"[A-Za-z]+")
#: What may stand between the letters of a Latin name (``Min-jun``, ``O'Neil``, ``Min Jun``).
NAME_SEPARATORS = re.compile(r"[\s\-'.]+")


def is_syllabic(text: str) -> bool:
    """Hangul or Hanja only (spaces allowed)."""
    return bool(text) and _SYLLABIC.fullmatch(text.replace(" ", "")) is not None


def is_latin(text: str) -> bool:
    """ASCII letters only (name separators allowed)."""
    return bool(text) and _LATIN.fullmatch(NAME_SEPARATORS.sub("", text)) is not None


#: Hangul syllables and spaces only (romanizable names; Hanja are not).
HANGUL_ONLY = re.compile("[\uac00-\ud7a3 ]+")

# What follows a surname used as an eponym: Wilson's disease, Baker's cyst, Allen test, Foley
# catheter, Hodgkin lymphoma (a patient or doctor with that surname leaves them as they are).
_EPONYM = re.compile(
    r"(?:'s|s'|\u2019s|')?\s?(?:disease|syndrome|sign|test|cyst|palsy|catheter|lymphoma|"
    r"maneuver|manoeuvre|reflex|phenomenon|score|scale|criteria|classification|fracture|ulcer|"
    r"nodes?|procedure|operation|monitor|tube|gland|duct|canal|triad|law|bodies|body|cells?|"
    r"hernia|tumou?r|sarcoma|index|position|incision|method|anomaly|aneurysm|deformity|"
    r"contracture|dystrophy|encephalopathy|neuralgia|neuroma|thyroiditis|coma)(?![A-Za-z])",
    re.IGNORECASE,
)


def eponym_at(text: str, end: int) -> bool:
    """The name ending at ``end`` is an eponym's (followed by disease, cyst, test, ...)."""
    return _EPONYM.match(text, end) is not None
