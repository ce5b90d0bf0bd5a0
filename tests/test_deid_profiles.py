"""The shipped profiles: complete allow-lists, golden outputs per profile, their documentation,
and the offline review command (`hl7bus deid`).

Goldens: every message of tests/golden/*.hl7 through each profile with a fixed key and receipt
time -> tests/golden_deid/<profile>.json (the research form of each event, or its DLQ code).
After an intended change, regenerate and review the diff:

    HL7BUS_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_deid_profiles.py
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.ops.deid_docs import profiles_markdown
from hl7bus.schemas import codec
from hl7bus.streams.deid import PROFILES, Policy, Pseudonymizer
from hl7bus.streams.deid import review as deid_review

ROOT = Path(__file__).parent.parent
GOLDEN_IN = Path(__file__).parent / "golden"
GOLDEN_OUT = Path(__file__).parent / "golden_deid"
DOCS = ROOT / "docs" / "deid-profiles.md"
REGENERATE = os.environ.get("HL7BUS_REGEN_GOLDEN") == "1"
SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"golden-deid-key-0123456789abcdef", "g1")
RECEIVED = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
runner = CliRunner()


def _golden_run(profile: str) -> dict[str, Any]:
    policy = Policy.load(profile)
    out: dict[str, Any] = {"policy": profile, "hash": policy.digest, "cases": {}}
    for source in sorted(GOLDEN_IN.glob("*.hl7")):
        reviewed = deid_review.review(source.read_bytes(), policy, KEY, SEOUL, "golden", RECEIVED)
        out["cases"][source.stem] = [
            {"type": r.event_type, "research": deid_review.jsonable(r.research), "dlq": r.error}
            for r in reviewed
        ]
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_golden(profile: str) -> None:
    actual = _golden_run(profile)
    expected_file = GOLDEN_OUT / f"{profile}.json"
    if REGENERATE:
        GOLDEN_OUT.mkdir(exist_ok=True)
        text = json.dumps(actual, indent=1, ensure_ascii=False) + "\n"
        expected_file.write_text(text, encoding="utf-8")
    assert actual == json.loads(expected_file.read_text(encoding="utf-8"))
    # Every golden event reaches research through every profile (no false leak alarms).
    for case, events in actual["cases"].items():
        for event in events:
            assert event["dlq"] is None, (profile, case, event["type"], event["dlq"])
            assert event["research"]["deid_policy"] == actual["hash"]
            # Dropped fields are absent from the research form (and its contract), not null.
            assert "message_identifiers" not in event["research"]
            assert "source_control_id" not in event["research"]


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_name_every_field_of_every_event_type(profile: str) -> None:
    """Shipped profiles are explicit: a reviewer sees a decision for every field."""
    policy = Policy.load(profile)
    for name, schema in codec.schemas().items():
        if name == "RawMessage":
            continue
        assert set(policy.actions[name]) == set(schema.phi_classes()), (profile, name)


def test_safe_harbor_golden_has_only_years_and_no_identifiers() -> None:
    run = _golden_run("safe-harbor")
    for events in run["cases"].values():
        for event in events:
            for field, value in event["research"].items():
                if field.endswith(("_time", "_at")) and value:
                    assert value.endswith("-01-01T00:00:00+00:00"), (field, value)


def test_docs_are_generated_from_the_profiles() -> None:
    text = profiles_markdown()
    if os.environ.get("HL7BUS_REGEN_DOCS") == "1" or REGENERATE:
        DOCS.write_text(text, encoding="utf-8")
    assert DOCS.read_text(encoding="utf-8") == text, "regenerate docs/deid-profiles.md"
    for profile in PROFILES:
        assert f"## `{profile}`" in text
        assert f"### {profile} / Patient" in text
    assert "| `national_id` | direct | `drop` |" in text


def test_deid_command_shows_the_account(tmp_path: Path) -> None:
    env = {"HL7BUS_DEID_KEY": "0123456789abcdef0123456789abcdef"}
    source = GOLDEN_IN / "oru_r01.hl7"
    result = runner.invoke(app, ["deid", str(source), "--policy", "safe-harbor"], env=env)
    assert result.exit_code == 0, result.output
    assert "CONTAINS IDENTIFIED VALUES" in result.output
    assert "truncate_date:year" in result.output

    result = runner.invoke(
        app, ["deid", str(source), "--policy", "kr-pseudonym", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["warning"].startswith("CONTAINS IDENTIFIED VALUES")
    assert data["policy"]["hash"] == Policy.load("kr-pseudonym").digest
    observation = next(e for e in data["events"] if e["event_type"] == "Observation")
    assert observation["outcome"] == "research"
    by_field = {a["field"]: a for a in observation["actions"]}
    assert by_field["patient_key"]["action"] == "pseudonymize"
    assert by_field["patient_key"]["before"].startswith("review|")
    assert by_field["event_time"]["action"] == "shift_date"
    assert by_field["message_identifiers"]["before"].endswith("names and ids)")

    # A file policy; no key configured: an ephemeral one, with a warning.
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text((ROOT / "streams/policies/limited.yaml").read_text("utf-8"))
    result = runner.invoke(app, ["deid", str(source), "-p", str(policy_file), "--json"], env={})
    assert result.exit_code == 0, result.output
    assert '"key_id": "ephemeral"' in result.output

    result = runner.invoke(app, ["deid", str(source), "-p", "no-such"], env=env)
    assert result.exit_code == 2
    assert "neither a profile" in result.output
