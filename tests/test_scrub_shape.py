"""Korean names with no cue, found by their shape (streams/scrub/shape.py)."""

from __future__ import annotations

import pytest

from hl7bus.streams.scrub import scrub_text
from hl7bus.streams.scrub.shape import GIVEN_SYLLABLES, NOT_NAMES, shape_spans


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("송수빈에게 설명함.", "[NAME]에게 설명함."),
        ("황정희와 면담함", "[NAME]와 면담함"),
        ("오후에 김민준이 동의서 서명함", "오후에 [NAME]이 동의서 서명함"),
        ("남궁상철의 요청으로", "[NAME]의 요청으로"),
        ("황보서연하고 통화함", "[NAME]하고 통화함"),
        ("김석에게 설명함", "[NAME]에게 설명함"),
        ("(박지훈께서 확인)", "([NAME]께서 확인)"),
    ],
)
def test_names_with_no_cue_are_removed(text: str, expected: str) -> None:
    assert scrub_text(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "이상이 없음",
        "조영제를 투여함",
        "신장이 작아짐",
        "안정을 취함",
        "오한이 있음",  # two syllables before 이: never a name by shape alone
        "현훈이 있음",
        "진정제를 증량",
        "문진에서 확인",  # 에서 is no particle of a person
        "고혈압이 조절됨",
        "소화기의 증상",
    ],
)
def test_clinical_words_of_name_shape_stay(text: str) -> None:
    assert shape_spans(text) == []


def test_data_file_is_read() -> None:
    assert {"민", "준", "서", "연"} <= GIVEN_SYLLABLES
    assert {"조영제", "이상", "담당"} <= NOT_NAMES  # the file's words, common and role words
