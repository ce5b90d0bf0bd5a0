"""The synthetic sample feed: deterministic, parseable, realistic in order and identifiers."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from functools import cache
from itertools import pairwise
from pathlib import Path

import hl7
import pytest
import samplefeed

FEED_FILE = Path(__file__).resolve().parents[1] / "ops" / "demo" / "sample-feed.hl7"
RRN = re.compile(r"^\d{6}-[1-4]\d{6}$")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
TS = re.compile(r"^20261127\d{6}\+0900$")
RANGE = re.compile(r"^(?P<low>[\d.]+)-(?P<high>[\d.]+)$|^<(?P<lt>[\d.]+)$|^>(?P<gt>[\d.]+)$")


@cache
def default_feed() -> tuple[str, ...]:
    return tuple(samplefeed.generate_feed())


@cache
def parsed_feed() -> tuple[hl7.Message, ...]:
    return tuple(hl7.parse(m) for m in default_feed())


def fields(message: str, segment: str) -> list[list[str]]:
    """The raw '|'-split fields of every ``segment`` in ``message`` (index = HL7 field number)."""
    return [s.split("|") for s in message.split("\r") if s.startswith(segment + "|")]


def first(message: str, segment: str) -> list[str]:
    found = fields(message, segment)
    assert found, f"no {segment}"
    return found[0]


def message_type(message: str) -> str:
    # MSH-9 sits at index 8 because MSH-1 is the separator itself.
    return first(message, "MSH")[8]


def patient_key(message: str) -> str:
    pid3 = first(message, "PID")[3]
    mrn = pid3.split("~")[0].split("^")
    return f"{mrn[3]}:{mrn[0]}"


# -- the committed file ----------------------------------------------------------------------


def test_committed_file_matches_the_default_seed() -> None:
    expected = samplefeed.feed_text(samplefeed.generate_feed(seed=7, patients=60))
    assert FEED_FILE.read_bytes() == expected.encode("utf-8"), (
        "ops/demo/sample-feed.hl7 drifted; regenerate with "
        "`python tests/samplefeed.py --seed 7 --out ops/demo/sample-feed.hl7`"
    )


def test_file_format_round_trips() -> None:
    text = FEED_FILE.read_bytes().decode("utf-8")  # read_text would translate "\r\n"
    assert not text.startswith("\ufeff")
    messages = samplefeed.split_feed(text)
    assert messages == list(default_feed())
    # Every segment ends with \r, every message is followed by \n and starts with MSH.
    assert text.endswith("\r\n")
    assert all(line.startswith("MSH|") for line in text.split("\n") if line)
    assert text.count("\n") == len(messages)


def test_write_feed_writes_the_file_form(tmp_path: Path) -> None:
    messages = samplefeed.generate_feed(seed=3, patients=4)
    out = tmp_path / "sub" / "feed.hl7"
    samplefeed.write_feed(out, messages)
    assert out.read_bytes() == samplefeed.feed_text(messages).encode("utf-8")
    assert samplefeed.split_feed(out.read_bytes().decode("utf-8")) == messages


def test_main_writes_the_feed(tmp_path: Path) -> None:
    out = tmp_path / "feed.hl7"
    assert samplefeed.main(["--seed", "11", "--patients", "5", "--out", str(out)]) == 0
    expected = samplefeed.feed_text(samplefeed.generate_feed(seed=11, patients=5))
    assert out.read_bytes().decode("utf-8") == expected


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_same_feed_and_different_seeds_differ() -> None:
    assert samplefeed.generate_feed(seed=7) == list(default_feed())
    assert samplefeed.generate_feed(seed=8) != list(default_feed())
    assert samplefeed.generate_feed(seed=123, patients=10) != samplefeed.generate_feed(
        seed=124, patients=10
    )


def test_patient_count_scales_and_zero_is_empty() -> None:
    assert samplefeed.generate_feed(patients=0) == []
    assert 3 <= len(samplefeed.generate_feed(patients=1)) <= 7
    with pytest.raises(ValueError):
        samplefeed.generate_feed(patients=-1)


# -- structure -------------------------------------------------------------------------------


def test_message_count_and_types() -> None:
    feed = default_feed()
    assert 250 <= len(feed) <= 350
    counts = Counter(message_type(m) for m in feed)
    assert set(counts) == {
        "ADT^A01^ADT_A01",
        "ADT^A04^ADT_A01",
        "ADT^A08^ADT_A01",
        "ORU^R01^ORU_R01",
    }
    assert counts["ADT^A01^ADT_A01"] + counts["ADT^A04^ADT_A01"] == 60
    assert counts["ADT^A08^ADT_A01"] >= 5
    assert 120 <= counts["ORU^R01^ORU_R01"] <= 300


def test_every_message_parses_with_python_hl7() -> None:
    for raw, msg in zip(default_feed(), parsed_feed(), strict=True):
        assert not raw.endswith("\r")
        assert str(msg.segment("MSH")[12]) == "2.5.1"
        assert str(msg.segment("MSH")[18]) == "UNICODE UTF-8"
        assert str(msg["PID.F3.R1.C4"]) in {"SNUH", "PNUH", "KNUH"}


def test_msh_header() -> None:
    for m in default_feed():
        msh = first(m, "MSH")
        app, facility = msh[2], msh[3]
        assert app == f"{facility}-EMR"
        assert msh[4:6] == ["HL7BUS", "CONSORTIUM"]
        assert TS.match(msh[6])
        assert msh[10:12] == ["P", "2.5.1"]
        assert msh[14:18] == ["", "", "KOR", "UNICODE UTF-8"]


def test_control_ids_are_unique() -> None:
    ids = [first(m, "MSH")[9] for m in default_feed()]
    assert len(set(ids)) == len(ids)
    assert all(len(i) <= 20 for i in ids)


def test_adt_segments() -> None:
    for m in default_feed():
        if not message_type(m).startswith("ADT"):
            continue
        assert [s[:3] for s in m.split("\r")] == ["MSH", "EVN", "PID", "PV1"]
        trigger = message_type(m).split("^")[1]
        evn = first(m, "EVN")
        assert evn[1] == trigger
        pv1 = first(m, "PV1")
        assert pv1[2] in {"I", "O", "E"}
        assert (trigger == "A01") == (pv1[2] == "I") or trigger == "A08"
        assert pv1[3].split("^")[0]
        doctor = pv1[7].split("^")
        assert doctor[0].startswith("D") and HANGUL.search(doctor[1] + doctor[2])
        assert pv1[19].endswith("^VN")


def test_oru_segments() -> None:
    for m in default_feed():
        if message_type(m) != "ORU^R01^ORU_R01":
            continue
        names = [s[:3] for s in m.split("\r")]
        assert names[:2] == ["MSH", "PID"]
        body = names[3:] if names[2] == "PV1" else names[2:]
        assert body[:2] == ["ORC", "OBR"]
        obx = [n for n in body[2:] if n == "OBX"]
        assert 3 <= len(obx) <= 10
        assert set(body[2:]) <= {"OBX", "NTE"}
        obr = first(m, "OBR")
        assert obr[4].endswith("^LN") and obr[25] in {"F", "P", "C"}
        assert obr[2] == first(m, "ORC")[2]
        statuses = {o[11] for o in fields(m, "OBX")}
        assert statuses <= ({"F", "C"} if obr[25] == "C" else {obr[25]})


def test_observation_values_flags_and_ranges() -> None:
    value_types: Counter[str] = Counter()
    for m in default_feed():
        for o in fields(m, "OBX"):
            value_type, value, reference, flag = o[2], o[5], o[7], o[8]
            value_types[value_type] += 1
            assert o[3].endswith("^LN") and TS.match(o[14])
            if value_type == "ST":
                assert flag == ("N" if value == reference else "A")
                continue
            if value_type == "SN":
                comparator, number = value.split("^")
                assert comparator == "<" and float(number) > 0
                assert flag == "N"
                continue
            assert value_type == "NM"
            match = RANGE.match(reference)
            assert match, reference
            x = float(value)
            if match["lt"]:
                expected = "H" if x >= float(match["lt"]) else "N"
            elif match["gt"]:
                expected = "L" if x <= float(match["gt"]) else "N"
            else:
                low, high = float(match["low"]), float(match["high"])
                expected = "L" if x < low else "H" if x > high else "N"
            assert flag == expected, o
    assert value_types["NM"] and value_types["SN"] and value_types["ST"]


def test_result_status_mix() -> None:
    statuses = Counter(first(m, "OBR")[25] for m in default_feed() if "\rOBR|" in m)
    assert statuses["F"] > statuses["P"] + statuses["C"]
    assert statuses["P"] and statuses["C"]


# -- order and time --------------------------------------------------------------------------


def test_per_patient_order() -> None:
    seen: dict[str, list[str]] = {}
    for m in default_feed():
        seen.setdefault(patient_key(m), []).append(m)
    assert len(seen) == 60
    for messages in seen.values():
        types = [message_type(m).split("^")[1] for m in messages]
        assert types[0] in {"A01", "A04"}
        assert types.count("A01") + types.count("A04") == 1
        assert types.count("A08") <= 1
        assert 2 <= types.count("R01") <= 5
        times = [first(m, "MSH")[6] for m in messages]
        assert times == sorted(times) and len(set(times)) == len(times)


def test_feed_is_in_time_order_and_interleaved() -> None:
    times = [first(m, "MSH")[6] for m in default_feed()]
    assert times == sorted(times)
    assert all(TS.match(t) for t in times)
    keys = [patient_key(m) for m in default_feed()]
    switches = sum(a != b for a, b in pairwise(keys))
    assert switches > len(keys) // 2


def test_a08_changes_phone_or_address() -> None:
    last_pid: dict[str, list[str]] = {}
    updates = 0
    for m in default_feed():
        key, pid = patient_key(m), first(m, "PID")
        if message_type(m).startswith("ADT^A08"):
            before = last_pid[key]
            assert (before[11], before[13]) != (pid[11], pid[13])
            assert before[:11] == pid[:11] and before[19] == pid[19]
            updates += 1
        last_pid[key] = pid
    assert updates >= 5


# -- identifiers -----------------------------------------------------------------------------


def test_rrn_agrees_with_birth_date_and_sex() -> None:
    ages: list[int] = []
    for m in default_feed():
        pid = first(m, "PID")
        birth, sex, rrn = pid[7], pid[8], pid[19]
        assert RRN.match(rrn), rrn
        born = datetime.strptime(birth, "%Y%m%d").date()
        assert rrn[:6] == born.strftime("%y%m%d")
        male, female = samplefeed.rrn_gender_digits(born)
        assert rrn[7] == {"M": male, "F": female}.get(sex, rrn[7])
        assert rrn[7] in (male, female)
        assert sex in {"M", "F", "U"}
        feed_day = date(2026, 11, 27)
        ages.append(
            feed_day.year - born.year - ((feed_day.month, feed_day.day) < (born.month, born.day))
        )
    assert min(ages) >= 0 and max(ages) <= 99
    assert any(a > 89 for a in ages)
    rrns = {first(m, "PID")[19] for m in default_feed()}
    assert len(rrns) == 60


def test_rrn_gender_digits() -> None:
    assert samplefeed.rrn_gender_digits(date(1999, 12, 31)) == ("1", "2")
    assert samplefeed.rrn_gender_digits(date(2000, 1, 1)) == ("3", "4")
    with pytest.raises(ValueError):
        samplefeed.rrn_gender_digits(date(1899, 1, 1))


def test_names_addresses_and_phones() -> None:
    compound = 0
    for m in default_feed():
        pid = first(m, "PID")
        mrn = pid[3].split("~")[0].split("^")
        assert re.fullmatch(r"\d{8}", mrn[0]) and mrn[4] == "MR"
        hangul, latin = pid[5].split("~")
        h = hangul.split("^")
        assert HANGUL.search(h[0]) and HANGUL.search(h[1])
        assert 2 <= len(h[0] + h[1]) <= 4 and h[6:8] == ["L", "I"]
        compound += len(h[0]) == 2
        lat = latin.split("^")
        assert re.fullmatch(r"[A-Z]+", lat[0]) and re.fullmatch(r"[A-Z]+", lat[1])
        assert lat[6:8] == ["L", "A"]
        address = pid[11].split("^")
        assert HANGUL.search(address[0]) and re.search(r"\d+$", address[0])
        assert address[2].endswith("구") and address[3].endswith(("특별시", "광역시"))
        assert re.fullmatch(r"\d{5}", address[4]) and address[5] == "KOR"
        phones = [p.split("^")[0] for p in pid[13].split("~")]
        assert re.fullmatch(r"010-\d{4}-\d{4}", phones[0])
        assert all(re.fullmatch(r"0\d{1,2}-\d{3,4}-\d{4}", p) for p in phones)
    assert compound > 0


def test_some_notes_name_the_patient() -> None:
    named = 0
    for m in default_feed():
        notes = fields(m, "NTE")
        if not notes:
            continue
        hangul = first(m, "PID")[5].split("~")[0].split("^")
        assert any(HANGUL.search(n[3]) for n in notes)
        named += any(hangul[0] + hangul[1] in n[3] for n in notes)
    assert named >= 5


def test_numeric_flag_edges() -> None:
    assert samplefeed.numeric_flag(12.0, 12.0, 16.0) == "N"
    assert samplefeed.numeric_flag(11.9, 12.0, 16.0) == "L"
    assert samplefeed.numeric_flag(16.1, 12.0, 16.0) == "H"
    assert samplefeed.numeric_flag(200, None, 200.0) == "H"
    assert samplefeed.numeric_flag(40, 40.0, None) == "L"


def test_escape() -> None:
    assert samplefeed.escape_text("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
