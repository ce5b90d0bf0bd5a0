"""validate(): hl7apy's structure checks as a list of value-free findings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hl7v2_samples import ADT_A01, CORPUS

from hl7bus.hl7v2 import Finding, Message, parse, parse_batch, validate

FIXTURES = Path(__file__).parent / "fixtures"

# An ADT^A01 that hl7apy finds valid, and the PHI-looking values we plant in it.
NAME = "HONGGILDONG"
VALID = ADT_A01.replace("ZPD|1|custom^stuff|\r", "")


def test_valid_message_has_no_findings() -> None:
    assert validate(VALID) == []
    assert all(f.severity == "warning" for f in validate(VALID, "strict"))


def test_missing_required_segment_is_located() -> None:
    text = VALID.replace(next(s for s in VALID.split("\r") if s.startswith("PV1")) + "\r", "")
    findings = validate(text)
    assert Finding("error", "PV1", None, None, "required segment PV1 is missing") in findings


def test_missing_required_field_is_located() -> None:
    text = (
        "MSH|^~\\&|A|B|C|D|20240301||ADT^A03^ADT_A03||P|2.5\rEVN|A03|20240301\rPID|1||1\rPV1|1|I\r"
    )
    findings = validate(text)
    assert any(f.location == "MSH-10" and "required field" in f.problem for f in findings)
    assert any(f.location == "PID-5" for f in findings)


def test_strict_adds_table_warnings_without_values() -> None:
    text = VALID.replace("|19900101|M|", f"|19900101|{NAME}|")
    tolerant = validate(text, "tolerant")
    strict = validate(text, "strict")
    sex = [f for f in strict if f.location == "PID-8"]
    assert sex and sex[0].severity == "warning" and "table" in sex[0].problem
    assert not [f for f in tolerant if f.location == "PID-8"]
    for finding in strict:
        assert NAME not in str(finding)


def test_no_values_in_any_finding() -> None:
    # Every value of every fixture is absent from every finding text.
    for path in sorted(FIXTURES.glob("*.hl7")):
        for msg in parse_batch(path.read_bytes()):
            values = _values(msg)
            for finding in validate(msg, "strict"):
                words = set(finding.problem.replace(":", " ").replace("(", " ").split())
                leaked = {v for v in values & words if not v.isdigit() and len(v) > 3}
                assert not leaked, (path.name, str(finding))


def _values(msg: Message) -> set[str]:
    enc = msg.encoding
    out: set[str] = set()
    for seg in msg.segments():
        for f, field in enumerate(seg.fields[1:], 1):
            if seg.name == "MSH" and f <= 2:
                continue
            for part in field.replace(enc.repetition, enc.component).split(enc.component):
                out.update(p for p in part.split(enc.subcomponent) if p)
    # Structure names that happen to be values too (table ids, message types).
    return out - {"ISO", "ADT_A01", "ORU_R01", "OML_O33", "RSP_K21", "ADT_A03", "OMD_O03"}


@pytest.mark.parametrize(
    "text",
    [*CORPUS.values(), *(p.read_bytes() for p in sorted(FIXTURES.glob("*.hl7")))],
    ids=[*CORPUS, *(p.stem for p in sorted(FIXTURES.glob("*.hl7")))],
)
def test_agrees_with_hl7apy_validate(text: str | bytes) -> None:
    """Valid for hl7apy's own ``Message.validate()`` <=> no error findings."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import ValidationError
    from hl7apy.parser import parse_message

    msg = parse_batch(text)[0]
    try:
        tree = parse_message(msg.to_er7(), validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception:
        findings = validate(msg)
        assert findings and findings[0].segment is None  # "hl7apy cannot parse"
        return
    try:
        theirs = tree.validate()
    except ValidationError:
        theirs = False
    except Exception:
        pytest.skip("hl7apy's own validate() crashes on this message")
    errors = [f for f in validate(msg) if f.severity == "error"]
    assert (not errors) == bool(theirs), [str(f) for f in errors]


def test_never_raises_on_bad_input() -> None:
    assert validate(b"not hl7 at all")[0].problem.startswith("not an HL7 message")
    [finding] = validate("MSH|^~\\&|A|B|C|D|20240301||ADT^A01|1|P\r")
    assert finding.location == "MSH-12"
    [finding] = validate("MSH|^~\\&|A|B|C|D|20240301||ADT^A01|1|P|2.9\r")
    assert "not known to hl7apy" in finding.problem


def test_version_override() -> None:
    msg = parse("MSH|^~\\&|A|B|C|D|20240301||ADT^A01|1|P\r")
    assert validate(msg, version="2.5")  # checked against 2.5: findings, not a refusal
    assert msg.version is None  # the caller's message is not changed


def test_bad_level() -> None:
    with pytest.raises(ValueError, match="tolerant, strict"):
        validate(VALID, "lenient")  # type: ignore[arg-type]


def test_hl7apy_stays_off_the_hot_path() -> None:
    code = "import sys, hl7bus.hl7v2 as h; h.parse(sys.argv[1]); assert 'hl7apy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code, VALID], check=True)
