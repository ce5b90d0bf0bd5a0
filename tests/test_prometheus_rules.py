"""The shipped Prometheus rules (ops/prometheus/): valid, unit-tested with `promtool test
rules`, and every alert has its runbook entry in docs/operations.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_tools import RULES, binary

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=TESTS
    )


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", str(RULES / "recording.yaml"), str(RULES / "alerts.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yaml", "recording_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load((RULES / "alerts.yaml").read_text("utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_is_unit_tested_and_has_a_runbook_entry() -> None:
    tested = (TESTS / "alerts_test.yaml").read_text("utf-8")
    runbook = (ROOT / "docs" / "operations.md").read_text("utf-8")
    headings = {h.strip().lower() for h in re.findall(r"^#+ +(\S+)", runbook, re.M)}
    for rule in _alerts():
        name = str(rule["alert"])
        assert f"alertname: {name}\n" in tested, f"{name} has no promtool unit test"
        assert name.lower() in headings, f"{name} has no runbook heading in docs/operations.md"
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}"
