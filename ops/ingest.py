"""`hl7bus ingest`: one-shot with a progress bar and a summary, or drop-folder mode."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from hl7bus.connectors.envelope import Route
from hl7bus.connectors.files.source import FileResult, FilesConfig, FileSource, Summary
from hl7bus.connectors.kafka_clients import AsyncProducer


class _RichProgress:
    """Two bars: files, and the messages of the current file."""

    def __init__(self, progress: Progress, files: int) -> None:
        self.progress = progress
        self.files = progress.add_task("files", total=files)
        self.messages = progress.add_task("messages", total=None)

    def file_started(self, path: Path, messages: int, resume_from: int) -> None:
        note = f" (resuming at {resume_from + 1})" if resume_from else ""
        self.progress.update(
            self.messages,
            description=f"{path.name}{note}",
            total=messages,
            completed=resume_from,
        )

    def advanced(self, messages: int) -> None:
        self.progress.advance(self.messages, messages)

    def file_finished(self, result: FileResult) -> None:
        self.progress.advance(self.files)
        if result.outcome != "done":
            self.progress.console.print(_line(result))


class _LineProgress:
    """Watch mode: one line per finished file."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def file_started(self, path: Path, messages: int, resume_from: int) -> None:
        pass

    def advanced(self, messages: int) -> None:
        pass

    def file_finished(self, result: FileResult) -> None:
        if result.outcome != "busy":  # another watcher has it; it reports it
            self.console.print(_line(result))


def _line(result: FileResult) -> str:
    counts = f"{result.delivered} to hl7.raw, {result.dlq} to hl7.dlq"
    if result.resumed_from:
        counts += f", resumed at message {result.resumed_from + 1} of {result.messages}"
    where = f" -> {result.moved_to}" if result.moved_to else ""
    why = f": {result.reason}" if result.reason else ""
    return f"{result.outcome:>11}  {result.path.name}{where} ({counts}){why}"


def summary_table(summary: Summary) -> Table:
    table = Table(title="ingest summary", show_header=False)
    table.add_row("files", str(summary.files))
    table.add_row("  done", str(summary.count("done")))
    table.add_row("  rejected (error folder)", str(summary.count("error")))
    table.add_row("  failed (will resume)", str(summary.count("failed")))
    if summary.count("interrupted"):
        table.add_row("  interrupted (will resume)", str(summary.count("interrupted")))
    if summary.count("busy"):
        table.add_row("  skipped (another process has it)", str(summary.count("busy")))
    table.add_row("messages delivered", str(summary.delivered))
    table.add_row("messages to the DLQ", str(summary.dlq))
    return table


@contextlib.contextmanager
def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C/SIGTERM: stop launching messages, wait for those in flight, checkpoint."""
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_ingest(
    cfg: FilesConfig,
    producer_config: dict[str, Any],
    route: Route,
    files: list[Path],
    console: Console,
) -> Summary:
    """Ingest the given files with a progress bar; print and return the summary."""

    async def main() -> Summary:
        producer = AsyncProducer(producer_config)
        source = FileSource(cfg, producer, route)
        stop = asyncio.Event()
        try:
            with (
                _stop_on_signals(asyncio.get_running_loop(), stop),
                Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as bar,
            ):
                return await source.ingest(files, _RichProgress(bar, len(files)), stop)
        finally:
            await asyncio.to_thread(producer.close)

    summary = asyncio.run(main())
    console.print(summary_table(summary))
    return summary


def run_watch(
    cfg: FilesConfig,
    producer_config: dict[str, Any],
    route: Route,
    console: Console,
) -> Summary:
    """Poll the drop folder until Ctrl-C; one line per finished file."""

    async def main() -> Summary:
        from hl7bus.ops.health import start_http

        producer = AsyncProducer(producer_config)
        source = FileSource(cfg, producer, route)
        stop = asyncio.Event()
        runner = None
        try:
            if cfg.metrics_port is not None:

                async def ready() -> bool:
                    return await asyncio.to_thread(producer.cluster_reachable)

                runner = await start_http("127.0.0.1", cfg.metrics_port, ready)
            with _stop_on_signals(asyncio.get_running_loop(), stop):
                return await source.watch(stop, _LineProgress(console))
        finally:
            if runner is not None:
                await runner.cleanup()
            await asyncio.to_thread(producer.close)

    console.print(
        f"watching {cfg.drop_dir} for {cfg.pattern} (feed {cfg.feed}), storing to "
        f"{route.raw_topic}; Ctrl-C stops"
    )
    summary = asyncio.run(main())
    console.print(summary_table(summary))
    return summary
