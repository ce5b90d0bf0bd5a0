"""`hl7bus ingest` through typer's CliRunner against the real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka_helpers import apply_catalog, read_topic
from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.ops.demo_run import sample_feed_path
from hl7bus.schemas import codec, topics

pytestmark = pytest.mark.kafka


def _messages(n: int) -> list[bytes]:
    data = sample_feed_path().read_bytes()
    return [m + b"\r\n" for m in data.split(b"\r\n") if m][:n]


def test_ingest_command(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    inbox, done, error = tmp_path / "inbox", tmp_path / "done", tmp_path / "error"
    inbox.mkdir()
    messages = _messages(12)
    (inbox / "a.hl7").write_bytes(b"".join(messages[:5]))
    (inbox / "b.hl7").write_bytes(
        b"BHS|^~\\&\r" + b"".join(messages[5:]) + f"BTS|{len(messages) - 5}\r".encode()
    )
    (inbox / "notes.txt").write_text("not matched by *.hl7")
    env = {
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_FILES_FEED": "cli",
        "HL7BUS_FILES_DONE_DIR": str(done),
        "HL7BUS_FILES_ERROR_DIR": str(error),
        "HL7BUS_FILES_STATE_DIR": str(tmp_path / "state"),
    }
    runner = CliRunner()

    ok = runner.invoke(app, ["ingest", str(inbox)], env=env)

    assert ok.exit_code == 0, ok.output
    assert "ingest summary" in ok.output
    assert "messages delivered" in ok.output and "12" in ok.output
    assert sorted(p.name for p in done.iterdir()) == ["a.hl7", "b.hl7"]
    assert (inbox / "notes.txt").exists()
    raw = read_topic(kafka_bootstrap, catalog.name(topics.RAW), 12)
    assert sorted(codec.decode(r.value() or b"")[1]["raw"] for r in raw) == sorted(messages)

    # A file that cannot be read as HL7: rejected to the error folder, exit code 1.
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(b"BHS|^~\\&\r" + messages[0] + b"BTS|7\r")
    failed = runner.invoke(app, ["ingest", str(bad)], env=env)

    assert failed.exit_code == 1, failed.output
    assert "rejected" in failed.output
    assert (error / "bad.hl7").exists() and (error / "bad.hl7.reason.json").exists()


def test_ingest_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(app, ["ingest"])
    assert nothing.exit_code == 2
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.hl7")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    watch = runner.invoke(app, ["ingest", "--watch"])
    assert watch.exit_code == 2 and "drop_dir" in watch.output
