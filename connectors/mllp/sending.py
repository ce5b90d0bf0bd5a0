"""Reading message files and sending them over MLLP with a progress bar (`hl7bus send`, demo)."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from hl7bus.connectors.mllp.client import AckResult, SendSummary, send_many, summarize
from hl7bus.hl7v2 import Hl7ParseError, parse_batch


def read_messages(paths: list[Path]) -> list[bytes]:
    """Every message of the given files (batch files split), directories read in name order.

    Each message is re-encoded in its own charset with \\r segment terminators, as MLLP expects.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or directory")
    messages: list[bytes] = []
    for file in files:
        try:
            messages.extend(m.to_bytes() for m in parse_batch(file.read_bytes()))
        except Hl7ParseError as exc:
            raise ValueError(f"{file}: {exc}") from None
    return messages


@dataclass(frozen=True)
class SendReport:
    """A send run: the ACK summary plus where it went and how long it took."""

    host: str
    port: int
    tls: bool
    elapsed_s: float
    summary: SendSummary

    def to_dict(self) -> dict[str, Any]:
        total = self.summary.total
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "elapsed_s": round(self.elapsed_s, 4),
            "messages_per_s": round(total / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
            "ok": self.summary.ok,
            **self.summary.to_dict(),
        }


def send_and_report(
    console: Console,
    host: str,
    port: int,
    messages: list[bytes],
    *,
    window: int = 1,
    connections: int = 1,
    rate: float | None = None,
    ack_timeout: float = 30.0,
    ssl: ssl_module.SSLContext | None = None,
    progress: bool = True,
    table: bool = True,
) -> SendReport:
    def run(on_ack: Callable[[AckResult], None] | None) -> list[AckResult]:
        return asyncio.run(
            send_many(
                host,
                port,
                messages,
                connections=connections,
                window=window,
                ack_timeout=ack_timeout,
                ssl=ssl,
                rate=rate,
                on_ack=on_ack,
            )
        )

    started = time.monotonic()
    if progress:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(f"sending to {host}:{port}", total=len(messages))

            def on_ack(_: AckResult) -> None:
                bar.advance(task)

            results = run(on_ack)
    else:
        results = run(None)
    report = SendReport(host, port, ssl is not None, time.monotonic() - started, summarize(results))
    if table:
        console.print(summary_table(report.summary))
    return report


def summary_table(summary: SendSummary) -> Table:
    table = Table(title="MLLP send summary", show_header=False)
    table.add_row("messages", str(summary.total))
    table.add_row("accepted (AA/CA)", str(summary.accepted))
    for code, count in summary.by_code.items():
        table.add_row(f"ACK {code}", str(count))
    for kind, count in summary.errors.items():
        table.add_row(f"error: {kind}", str(count))
    for label, value in (
        ("ACK latency p50", summary.latency_p50_s),
        ("ACK latency p99", summary.latency_p99_s),
        ("ACK latency max", summary.latency_max_s),
    ):
        if value is not None:
            table.add_row(label, f"{value * 1000:.1f} ms")
    return table
