"""Debian's Prometheus binaries for the tests (`make test` installs the package when missing):
promtool for rules and scrapes, and a throwaway Prometheus server for end-to-end checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from polling import wait_until

from hl7bus.ops.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "ops" / "prometheus"


def binary(name: str) -> str:
    """The path of `promtool` or `prometheus`; fails the test (never skips) without it."""
    found = shutil.which(name)
    assert found, f"{name} not found: `make test` installs Debian's prometheus package"
    return found


# promtool's one complaint the bus makes on purpose: kafka_consumergroup_lag_sum is the name ops
# teams know from kafka_exporter (a gauge, whose "_sum" promtool reserves for histograms).
ACCEPTED_LINT = frozenset(
    {
        'kafka_consumergroup_lag_sum non-histogram and non-summary metrics should not have "_sum" '
        "suffix"
    }
)


def check_metrics(scrape: str) -> list[str]:
    """promtool's lint of one /metrics body: its complaints (but ACCEPTED_LINT), [] when clean."""
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 0:
        return []
    lines = (result.stdout + result.stderr).splitlines()
    complaints = [line.strip() for line in lines if line.strip()]
    assert complaints, f"promtool check metrics failed silently (exit {result.returncode})"
    return [c for c in complaints if c not in ACCEPTED_LINT]


@contextmanager
def prometheus_server(
    data_dir: Path, targets: dict[str, int], scrape_interval: str = "1s"
) -> Iterator[str]:
    """A real Prometheus scraping `targets` (job -> port on 127.0.0.1) with the shipped rules;
    yields its base URL. Its own port, data dir and config; stopped on exit."""
    port = free_port()
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(RULES / "recording.yaml"), str(RULES / "alerts.yaml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}
            for job, target in targets.items()
        ],
    }
    config_file = data_dir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), "utf-8")
    log = (data_dir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited; see {data_dir / 'prometheus.log'}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, "prometheus ready", 60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query through the HTTP API; its result vector (or matrix)."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10
    ) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
