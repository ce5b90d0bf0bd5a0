"""`hl7bus bench scrub`: the annotated note generator (deterministic, spans really in the text,
every category and carrier present, messages that parse) and the benchmark's JSON shape (timings
are not checked)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hl7bus.hl7v2 import parse
from hl7bus.ops.cli import app
from hl7bus.ops.cli.bench import bench_module

scrubset = bench_module("scrubset")


def test_generator_is_deterministic_and_annotated() -> None:
    notes = scrubset.generate(300, seed=7)
    again = scrubset.generate(300, seed=7)
    assert [n.text for n in notes] == [n.text for n in again]
    assert [n.text for n in scrubset.generate(300, seed=8)] != [n.text for n in notes]
    categories = Counter(s.category for n in notes for s in n.phi)
    assert set(categories) == set(scrubset.CATEGORIES)
    assert {n.carrier for n in notes} == set(scrubset.CARRIERS)
    assert {n.language for n in notes} == {"ko", "en", "mixed"}
    for note in notes:
        for span in note.phi:
            assert span.text in note.text, (note.number, span)
        for decoy in note.decoys:
            assert decoy in note.text, (note.number, decoy)
        message = parse(note.message)
        assert message.segment("PID") is not None


def test_score_counts_what_is_left() -> None:
    [note] = scrubset.generate(1, seed=3)
    perfect = note.text
    for span in note.phi:
        perfect = perfect.replace(span.text, "[X]")
    full = scrubset.score([note], [perfect])
    assert full.recall() == dict.fromkeys(full.recall(), 1.0)
    assert full.decoy_survival() == 1.0
    nothing = scrubset.score([note], [note.text])
    assert set(nothing.recall().values()) == {0.0}
    emptied = scrubset.score([note], [""])
    assert emptied.decoy_survival() == 0.0 or not note.decoys


def _has_commit(ref: str) -> bool:
    root = Path(__file__).resolve().parent.parent
    found = subprocess.run(["git", "-C", str(root), "cat-file", "-e", ref], capture_output=True)
    return found.returncode == 0


@pytest.mark.skipif(not _has_commit("70c1b57"), reason="a clone without the peer commit")
def test_bench_scrub_json_shape() -> None:
    args = ["bench", "scrub", "--notes", "30", "--seconds", "0", "--rounds", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "scrub"
    assert data["command"].startswith("hl7bus bench scrub --notes 30")
    assert set(data["quality"]) == {"this", "peer@70c1b57"}
    for figures in data["quality"].values():
        assert all(0.0 <= v <= 1.0 for v in figures["recall"].values())
    assert data["leak_check"]["events"] > 0
    assert data["cost_us_per_note"]["this"]["scrub"] > 0
    assert set(data["targets_met"]) == {"recall", "decoy_survival", "cost_ratio"}


def test_bench_scrub_analyzer_errors_name_the_option() -> None:
    base = ["bench", "scrub", "--notes", "10", "--seconds", "0", "--rounds", "1"]
    unknown = CliRunner().invoke(app, [*base, "--analyzer", "mecab"])
    assert unknown.exit_code == 2
    assert "analyzer 'mecab'" in unknown.output
    no_peer = CliRunner().invoke(app, [*base, "--peer", "0000000"])
    assert no_peer.exit_code == 2
    assert "--peer 0000000: no streams/scrub/ at that commit" in no_peer.output
    try:
        import kiwipiepy  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        missing = CliRunner().invoke(app, [*base, "--analyzer", "kiwi"])
        assert missing.exit_code != 0
        assert "--analyzer kiwi: kiwipiepy is not installed" in missing.output


def test_bench_scrub_profile_names_the_scrubber() -> None:
    result = CliRunner().invoke(app, ["bench", "scrub", "--notes", "10", "--profile"])
    assert result.exit_code == 0, result.output
    assert "== scrub_text: 20 passes over 10 notes (seed 16) ==" in result.output
    assert "scrub_text" in result.output.split("==", 2)[2]
