"""`hl7bus parse FILE...`: tree, --json, --path, --validate, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hl7v2_samples import ADT_A01, ORU_R01
from typer.testing import CliRunner

from hl7bus.ops.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
BATCH = FIXTURES / "python-hl7_sample_file.hl7"

runner = CliRunner()


@pytest.fixture
def two_messages(tmp_path: Path) -> Path:
    path = tmp_path / "two.hl7"
    path.write_bytes((ADT_A01 + "\n" + ORU_R01).replace("\r", "\r\n").encode())
    return path


def test_tree(two_messages: Path) -> None:
    result = runner.invoke(app, ["parse", str(two_messages)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "#1" in out and "#2" in out and "ADT^A01" in out and "ORU^R01" in out
    assert "PID-3[2].4" in out  # repetitions and components are numbered
    assert "홍" in out  # decoded text, not bytes
    assert "Fe^Hb ratio & note" in out  # escapes decoded in the tree


def test_json(two_messages: Path) -> None:
    result = runner.invoke(app, ["parse", "--json", str(two_messages), str(BATCH)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data) == 3
    adt = data[0]
    assert adt[0][:3] == ["MSH", "|", "^~\\&"]
    pid = next(s for s in adt if s[0] == "PID")
    assert pid[3][1] == ["900101-1234567", "", "", "KOR", "NI"]
    assert data[2][0][9] == [["ADT", "A04", "ADT_A01"]]


def test_path_one_line_per_message(two_messages: Path) -> None:
    result = runner.invoke(app, ["parse", "--path", "PID-3[2].1", str(two_messages), str(BATCH)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\n") == ["900101-1234567", "", "", ""]
    result = runner.invoke(app, ["parse", "--path", "MSH-9.2", str(two_messages)])
    assert result.stdout == "A01\nR01\n"


def test_bad_path_is_a_usage_error(two_messages: Path) -> None:
    result = runner.invoke(app, ["parse", "--path", "PID.3", str(two_messages)])
    assert result.exit_code == 2
    assert "not an HL7 path" in result.output


def test_malformed_input_names_file_and_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(b"MSH|^~\\&|A|B\r\nPID|1||SECRET\r\n x continued text\r\n")
    result = runner.invoke(app, ["parse", str(bad)])
    assert result.exit_code == 1
    err = result.stderr
    assert "bad.hl7" in err and "invalid segment id" in err
    assert "segment 2" in err and "byte offset 29" in err
    assert "SECRET" not in err and "continued" not in err


def test_undecodable_bytes_name_the_offset(tmp_path: Path) -> None:
    bad = tmp_path / "latin.hl7"
    bad.write_bytes(b"MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5|||||||UNICODE UTF-8\rPID|1||\xe9\r")
    result = runner.invoke(app, ["parse", "--json", str(bad), str(BATCH)])
    assert result.exit_code == 1
    assert "latin.hl7" in result.stderr and "byte offset 60" in result.stderr
    assert result.stderr.count("byte offset") == 1
    assert len(json.loads(result.stdout)) == 1  # the good file is still printed


def test_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.hl7"
    good.write_text(ADT_A01.replace("ZPD|1|custom^stuff|\r", ""))
    result = runner.invoke(app, ["parse", "--validate", "tolerant", "--path", "MSH-10", str(good)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "CTRL0001\n"
    no_pv1 = tmp_path / "no_pv1.hl7"
    no_pv1.write_bytes(b"\r".join(s for s in good.read_bytes().split(b"\r") if s[:3] != b"PV1"))
    result = runner.invoke(app, ["parse", "--validate", "strict", "--json", str(no_pv1)])
    assert result.exit_code == 1
    assert "PV1: required segment PV1 is missing" in result.stderr
    result = runner.invoke(app, ["parse", "--validate", "lenient", str(good)])
    assert result.exit_code == 2
