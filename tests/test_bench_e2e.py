"""`hl7bus bench e2e`: its reading of the sink's metrics, the cumulative-flow freshness, the
rung figures and the ladder's answer; the JSON shape of a tiny real run (broker, listener,
worker, sink; timings are not checked); the refusal of a bad --rates."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.ops.cli.bench import bench_module

bench = bench_module("e2e")
Scrape = bench.Scrape

_PAGE = """\
# HELP hl7bus_warehouse_in_records_total Research records consumed.
# TYPE hl7bus_warehouse_in_records_total counter
hl7bus_warehouse_in_records_total{event_type="Patient"} 3.0
hl7bus_warehouse_in_records_total{event_type="Observation"} 30.0
hl7bus_warehouse_in_records_created{event_type="Patient"} 1.7e+09
# TYPE hl7bus_warehouse_last_commit_timestamp_seconds gauge
hl7bus_warehouse_last_commit_timestamp_seconds 1.7649e+09
"""


def test_parse_metrics_sums_event_types_and_skips_created() -> None:
    assert bench.parse_metrics(_PAGE) == Scrape(1.7649e09, 33.0)


def test_parse_metrics_before_the_first_commit() -> None:
    page = "hl7bus_warehouse_last_commit_timestamp_seconds 0.0\n"
    assert bench.parse_metrics(page) is None


def test_visible_times_take_the_first_commit_covering_each_message() -> None:
    # 2 records per message, 10 before the rung; commits at t=5 (2 messages), t=6 (3 more,
    # read in two scrapes of the same commit), and nothing covers the sixth message.
    scrapes = [Scrape(5.0, 14.0), Scrape(6.0, 18.0), Scrape(6.0, 20.0)]
    visible = bench.visible_times(scrapes, 10.0, 2.0, 6)
    assert visible == [5.0, 5.0, 6.0, 6.0, 6.0, None]


def test_rung_figures() -> None:
    sent = [float(i) for i in range(100)]
    visible: list[float | None] = [s + (3.0 if i == 99 else 0.5) for i, s in enumerate(sent)]
    rung = bench.rung_figures(10.0, sent, visible, [0.001] * 99 + [0.004])
    assert rung["drained"] is True
    assert rung["messages"] == 100
    assert rung["freshness_s"] == {"p50": 0.5, "p99": 0.5, "max": 3.0}
    assert rung["peer_listener_ack_latency_s"] == {"p50": 0.001, "p99": 0.001}
    assert rung["sustained_msgs_per_s"] == round(100 / 102.0, 1)
    visible[-1] = None
    undrained = bench.rung_figures(10.0, sent, visible, [0.001] * 100)
    assert undrained["drained"] is False and undrained["sustained_msgs_per_s"] is None


def test_highest_rate_needs_drained_and_p99_within_target() -> None:
    def rung(rate: float, p99: float | None, drained: bool = True) -> dict[str, object]:
        return {"offered_msgs_per_s": rate, "drained": drained, "freshness_s": {"p99": p99}}

    assert bench.highest_rate([rung(50, 0.4), rung(100, 2.0), rung(200, 2.1)]) == 100
    assert bench.highest_rate([rung(50, 0.4), rung(100, 0.5, drained=False)]) == 50
    assert bench.highest_rate([rung(50, 2.5)]) is None


def test_bad_rates_are_refused() -> None:
    result = CliRunner().invoke(app, ["bench", "e2e", "--rates", "50,fast"])
    assert result.exit_code == 2
    assert "--rates" in result.output


@pytest.mark.slow
def test_bench_e2e_json_shape() -> None:
    """One short rung at a low rate: every message reaches the warehouse, and each figure is
    there (their values depend on the machine)."""
    result = CliRunner().invoke(app, ["bench", "e2e", "--rates", "20", "--seconds", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "e2e"
    assert data["peer"].startswith("the listener alone")
    (rung,) = data["rungs"]
    assert rung["offered_msgs_per_s"] == 20.0 and rung["messages"] == 20
    assert rung["drained"] is True
    assert rung["sustained_msgs_per_s"] > 0
    assert (
        0 < rung["freshness_s"]["p50"] <= rung["freshness_s"]["p99"] <= rung["freshness_s"]["max"]
    )
    assert (
        0 < rung["peer_listener_ack_latency_s"]["p50"] <= rung["peer_listener_ack_latency_s"]["p99"]
    )
    expected = 20.0 if rung["freshness_s"]["p99"] <= data["target_p99_freshness_s"] else None
    assert data["highest_rate_p99_within_target"] == expected
