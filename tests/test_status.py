"""`hl7bus status`'s board from scrapes (hl7bus.ops.status.evaluate): when a feed is silent, when
a process is down, and what the exit code says. The command against a running bus is in
tests/test_observability.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.ops.processes import free_port
from hl7bus.ops.status import Endpoint, evaluate, with_rates

LISTENER = Endpoint("mllp", "127.0.0.1", 9464)
WORKER = Endpoint("worker", "127.0.0.1", 9465)
NOW = 10_000.0


def _scrape(last: float, threshold: float = 600, received: int = 10, naks: int = 0) -> str:
    return f"""# HELP hl7bus_feed_connected_senders x
# TYPE hl7bus_feed_connected_senders gauge
hl7bus_feed_connected_senders{{feed="adt"}} 2.0
# HELP hl7bus_feed_last_message_timestamp_seconds x
# TYPE hl7bus_feed_last_message_timestamp_seconds gauge
hl7bus_feed_last_message_timestamp_seconds{{feed="adt"}} {last}
# HELP hl7bus_feed_silence_threshold_seconds x
# TYPE hl7bus_feed_silence_threshold_seconds gauge
hl7bus_feed_silence_threshold_seconds{{feed="adt"}} {threshold}
# HELP hl7bus_feed_received_total x
# TYPE hl7bus_feed_received_total counter
hl7bus_feed_received_total{{component="mllp",feed="adt"}} {received}
# HELP hl7bus_mllp_acks_total x
# TYPE hl7bus_mllp_acks_total counter
hl7bus_mllp_acks_total{{feed="adt",code="AA"}} {received - naks}
hl7bus_mllp_acks_total{{feed="adt",code="AE"}} {naks}
"""


def test_a_busy_feed_and_live_processes_are_healthy() -> None:
    board = evaluate([LISTENER, WORKER], {"mllp": _scrape(NOW - 5), "worker": ""}, NOW)
    assert board.problems == []
    (feed,) = board.feeds
    assert (feed.feed, feed.senders, feed.silent, feed.received) == ("adt", 2, False, 10)
    assert feed.silent_for_s == 5
    assert board.to_dict()["ok"] is True


def test_a_feed_silent_past_its_threshold_is_a_problem() -> None:
    board = evaluate([LISTENER], {"mllp": _scrape(NOW - 601, threshold=600)}, NOW)
    assert board.feeds[0].silent
    assert board.problems == ["feed adt silent for 601 s (threshold 600 s)"]
    # At the threshold it is not silent yet.
    assert evaluate([LISTENER], {"mllp": _scrape(NOW - 600)}, NOW).problems == []


def test_a_process_down_is_a_problem_and_its_feeds_stay_on_the_board() -> None:
    scrapes: dict[str, str | Exception] = {"mllp": ConnectionRefusedError(), "worker": ""}
    board = evaluate([LISTENER, WORKER], scrapes, NOW, {"adt": 600.0})
    assert board.problems == ["process mllp is down (127.0.0.1:9464)"]
    assert board.processes[0].error == "ConnectionRefusedError"
    assert [(f.feed, f.up, f.silent) for f in board.feeds] == [("adt", False, False)]


def test_nak_ratio_and_rate_between_refreshes() -> None:
    first = evaluate([LISTENER], {"mllp": _scrape(NOW, received=10, naks=1)}, NOW)
    second = evaluate([LISTENER], {"mllp": _scrape(NOW + 2, received=30, naks=1)}, NOW + 2)
    second = with_rates(second, first, 2.0)
    assert first.feeds[0].nak_ratio == pytest.approx(0.1)
    assert second.feeds[0].rate_per_s == 10


def test_status_exits_1_with_json_when_nothing_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """Nothing listens on any configured port and no broker answers: exit 1, every problem named."""
    for name in ("MLLP", "WORKER", "WAREHOUSE", "LAG"):
        monkeypatch.setenv(f"HL7BUS_{name}_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("HL7BUS_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["status", "--json", "--process", "mllp"])
    assert result.exit_code == 1, result.output
    board = json.loads(result.output)
    assert board["ok"] is False
    assert board["problems"][0].startswith("process mllp is down")
    assert [p["name"] for p in board["processes"]] == ["mllp"]
    assert board["feeds"][0]["feed"] == "default"
    assert any(p.startswith("Kafka: cannot reach Kafka") for p in board["problems"])


def test_status_refuses_an_unknown_process(clean_env: None) -> None:
    result = CliRunner().invoke(app, ["status", "--process", "sink"])
    assert result.exit_code == 2
    assert "--process sink" in result.output
