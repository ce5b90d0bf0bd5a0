"""`hl7bus bench ...` (parse, mllp, deid, scrub, stream, vocab, warehouse, lake, e2e): the
benchmarks of
bench/ (a source checkout only).

Each prints JSON with its figure and a named peer's figure from the same run (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hl7bus.ops.cli.shared import err_console, fail

bench_app = typer.Typer(
    help="Benchmarks (JSON on stdout, each against a named peer in the same run)."
)


def bench_module(name: str) -> Any:
    """Import bench/<name>.py of the source checkout this package runs from (an editable
    install). The benchmarks are not part of the package, so an installed wheel has none.

    The folder is imported as the package `bench` from its path, without adding the checkout
    to sys.path; its modules import each other as `bench.<name>`.
    """
    import importlib
    import importlib.util

    folder = Path(__file__).resolve().parents[2] / "bench"
    if not (folder / "__init__.py").is_file():
        fail(
            "the benchmarks are not installed with hl7bus: run `hl7bus bench` from a source "
            "checkout (pip install -e .), which has the bench/ folder"
        )
    if not (folder / f"{name}.py").is_file():
        fail(f"benchmark {name!r} not found: run it from a source checkout (bench/{name}.py)")
    if "bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bench", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"bench.{name}")


@bench_app.command("parse")
def bench_parse(
    messages: Annotated[
        int, typer.Option(min=1, help="17-segment ORU^R01 messages in the corpus.")
    ] = 200,
    seconds: Annotated[
        float, typer.Option(min=0.0, help="Time budget per contender (at least one pass).")
    ] = 2.0,
    hl7apy_messages: Annotated[
        int, typer.Option(min=1, help="Messages for hl7apy, which is slow.")
    ] = 20,
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds sharing each time budget.")
    ] = 5,
    profile: Annotated[
        bool, typer.Option("--profile", help="Print a cProfile of hl7bus's walk instead.")
    ] = False,
) -> None:
    """Parse + read the fields an event mapper reads, and every field: hl7bus vs python-hl7 vs
    hl7apy vs bare str.split (the floor)."""
    bench = bench_module("parse")
    if profile:
        typer.echo(bench.profile(messages))
        return
    with err_console.status("benchmarking parse (hl7bus, python-hl7, hl7apy, str.split)..."):
        result = bench.run(messages, seconds, hl7apy_messages, rounds)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("mllp")
def bench_mllp(
    messages: Annotated[
        int, typer.Option(min=1, help="~2 KB ORU^R01 messages per step and contender.")
    ] = 3000,
    connections: Annotated[
        str, typer.Option(help="Comma-separated connection counts, one step each.")
    ] = "1,8,32",
    window: Annotated[int, typer.Option(min=1, help="Unacknowledged messages per connection.")] = 1,
    rate: Annotated[
        float, typer.Option(min=1.0, help="Offered messages/s of the latency-under-load step.")
    ] = 1000.0,
    rate_seconds: Annotated[
        float, typer.Option(min=0.5, help="Duration of the offered-rate step.")
    ] = 5.0,
    profile: Annotated[
        bool, typer.Option("--profile", help="Add a cProfile of the listener (Kafka, widest).")
    ] = False,
    linger_ms: Annotated[
        int | None,
        typer.Option(min=0, help="The listener's kafka.linger_ms (default: the config default)."),
    ] = None,
) -> None:
    """MLLP listener throughput and ACK latency: producing to a real broker (acks=all) vs the
    same listener ACKing without Kafka. Starts its own broker."""
    try:
        counts = [int(part) for part in connections.split(",") if part.strip()]
    except ValueError:
        fail(f"--connections {connections!r}: expected numbers like 1,8,32", code=2)
    if not counts or min(counts) < 1:
        fail(f"--connections {connections!r}: expected numbers like 1,8,32", code=2)
    bench = bench_module("mllp")
    with err_console.status("benchmarking the MLLP listener (starts a Kafka broker)..."):
        result = bench.run(
            messages,
            counts,
            window=window,
            rate=rate,
            rate_seconds=rate_seconds,
            profile=profile,
            linger_ms=linger_ms,
        )
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("deid")
def bench_deid(
    messages: Annotated[
        int, typer.Option(min=1, help="ORU^R01 messages with a free-text NTE in the corpus.")
    ] = 100,
    seconds: Annotated[
        float, typer.Option(min=0.0, help="Time budget per contender and round.")
    ] = 1.0,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 3,
    policy_ref: Annotated[
        str, typer.Option("--policy", help="Profile or policy file.")
    ] = "kr-pseudonym",
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Add a cProfile of the fused parse step (on stderr)."),
    ] = False,
) -> None:
    """De-identification (every event of a message, to research form) vs parse+normalize of the
    same messages, events/s per core; target: deid at most 50 % of parse+normalize time."""
    bench = bench_module("deid")
    with err_console.status("benchmarking deid vs parse+normalize..."):
        result = bench.run(messages, seconds, rounds, policy_ref, profile=profile)
    profile_text = result.pop("profile", None)
    if profile_text:
        err_console.print(profile_text, markup=False)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("scrub")
def bench_scrub(
    notes: Annotated[
        int, typer.Option(min=10, help="Annotated synthetic notes (bench/scrubset.py).")
    ] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the note generator.")] = 16,
    seconds: Annotated[
        float, typer.Option(min=0.0, help="Time budget per contender, part and round.")
    ] = 1.0,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 3,
    peer: Annotated[
        str, typer.Option(help="Git commit whose scrubber is the peer (this checkout's history).")
    ] = "70c1b57",
    policy_ref: Annotated[
        str, typer.Option("--policy", help="Profile or policy file for the leak check count.")
    ] = "kr-pseudonym",
    show_misses: Annotated[
        int, typer.Option(min=0, help="List this many missed spans and lost decoys.")
    ] = 0,
    analyzer: Annotated[
        str | None,
        typer.Option(help="Add 'kiwi' (kiwipiepy, installed by hand) as a contender."),
    ] = None,
    profile: Annotated[
        bool, typer.Option("--profile", help="Print a cProfile of this tree's scrub_text instead.")
    ] = False,
) -> None:
    """Free-text scrubbing on annotated synthetic notes: recall per PHI category, decoy
    survival, events withheld by the leak check, cost per note against a peer commit's
    scrubber; targets: recall and decoy survival at least 0.98, cost at most 2x the peer's."""
    bench = bench_module("scrub")
    if profile:
        typer.echo(bench.profile(notes, seed))
        return
    with err_console.status("benchmarking the scrubber..."):
        try:
            result = bench.run(
                notes, seed, seconds, rounds, peer, policy_ref, show_misses, analyzer
            )
        except ImportError as exc:
            fail(f"--analyzer {analyzer}: {exc.name} is not installed")
        except ValueError as exc:
            fail(str(exc), code=2)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


@bench_app.command("stream")
def bench_stream(
    messages: Annotated[
        int,
        typer.Option(
            min=100, help="ORU^R01 messages (10 OBX, a free-text NTE) per contender and round."
        ),
    ] = 3000,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 3,
    contenders: Annotated[
        str,
        typer.Option(
            help="Workers to run, in this order each round: forward (the bare loop), parse "
            "(the parse stage alone), fused (both stages, as deployed), research_only (fused "
            "with worker.identified_output false)."
        ),
    ] = "forward,parse",
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Add a cProfile of one more run of each contender."),
    ] = False,
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Another checkout of hl7bus (e.g. a git worktree of an earlier commit): each "
            "round also runs the contenders' workers on its code, for CPU per message against it."
        ),
    ] = None,
) -> None:
    """Events/s and CPU per message of the worker through a real broker vs the bare
    consume->produce loop of the same runtime. Starts its own broker."""
    bench = bench_module("stream")
    chosen = tuple(c.strip() for c in contenders.split(",") if c.strip())
    unknown = sorted(set(chosen) - set(bench.CONTENDERS))
    if not chosen or unknown:
        fail(f"--contenders {contenders!r}: choose from {', '.join(bench.CONTENDERS)}", code=2)
    if baseline is not None and not (baseline / "streams" / "runtime.py").is_file():
        fail(f"--baseline {baseline}: not a checkout of hl7bus (no streams/runtime.py)", code=2)
    with err_console.status("benchmarking the stream worker (starts a Kafka broker)..."):
        result = bench.run(messages, rounds, profile=profile, contenders=chosen, baseline=baseline)
    profile_text = result.pop("profile", None)
    if profile_text:
        err_console.print(profile_text, markup=False)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("vocab")
def bench_vocab(
    concepts: Annotated[
        int, typer.Option(min=1000, help="Concepts of the synthetic Athena download.")
    ] = 200_000,
    distinct: Annotated[
        int, typer.Option(min=10, help="Distinct (system, code) keys the sink asks about.")
    ] = 2000,
    seconds: Annotated[
        float, typer.Option(min=0.1, help="Time budget of the warm figures, per contender.")
    ] = 2.0,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 5,
    postgres_url: Annotated[
        str | None,
        typer.Option(help="Also measure on this PostgreSQL database (its vocabulary is replaced)."),
    ] = None,
) -> None:
    """The concept lookup per call (cached, and a first call) against a plain dict get, the
    preloading alternative, and the bulk load, on DuckDB (and PostgreSQL)."""
    bench = bench_module("vocab")
    with err_console.status("benchmarking the vocabulary (load and lookups)..."):
        result = bench.run(concepts, distinct, seconds, rounds, postgres_url)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("warehouse")
def bench_warehouse(
    engine: Annotated[
        str, typer.Option(help="duckdb, postgresql, or both (comma-separated).")
    ] = "duckdb,postgresql",
    phase_stays: Annotated[
        int, typer.Option(min=1, help="Stays (45 research records each) per measured phase.")
    ] = 500,
    fill_rows: Annotated[
        int, typer.Option(min=0, help="OMOP rows written between the start and after phases.")
    ] = 1_000_000,
    windows: Annotated[int, typer.Option(min=1, help="Timed windows of the fill.")] = 5,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records per sink batch (warehouse.batch_size).")
    ] = 5000,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            envvar="HL7BUS_BENCH_POSTGRES_URL",
            help="A PostgreSQL server's maintenance database (a superuser URL): the benchmark "
            "creates and drops its own databases there.",
        ),
    ] = None,
) -> None:
    """OMOP rows/s the warehouse sink writes for a mixed research stream vs a bare bulk load
    (DuckDB appender, PostgreSQL COPY) of the same rows, at the start and after fill_rows."""
    engines = [part.strip() for part in engine.split(",") if part.strip()]
    unknown = sorted(set(engines) - {"duckdb", "postgresql"})
    if not engines or unknown:
        fail(f"--engine {engine!r}: expected duckdb, postgresql or both", code=2)
    if "postgresql" in engines and not postgres_url:
        fail("--postgres-url (or HL7BUS_BENCH_POSTGRES_URL) is needed for postgresql", code=2)
    bench = bench_module("warehouse")
    with err_console.status("benchmarking the warehouse sink against a bare bulk load..."):
        result = bench.run(engines, phase_stays, fill_rows, windows, batch_size, postgres_url)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("e2e")
def bench_e2e(
    rates: Annotated[
        str, typer.Option(help="Comma-separated offered rates (messages/s), one rung each.")
    ] = "10,25,50,100,200,400",
    seconds: Annotated[float, typer.Option(min=0.5, help="Duration of each rung.")] = 10.0,
) -> None:
    """MLLP -> warehouse rows with every process real (broker, listener, worker, sink): sustained
    messages/s and freshness p50/p99 per offered rate against the listener's ACK latency at the
    same rate; the highest rate whose p99 freshness is at most 2 s. Starts its own broker."""
    try:
        ladder = [float(part) for part in rates.split(",") if part.strip()]
    except ValueError:
        fail(f"--rates {rates!r}: expected numbers like 50,100,200,400", code=2)
    if not ladder or min(ladder) <= 0:
        fail(f"--rates {rates!r}: expected positive numbers like 50,100,200,400", code=2)
    bench = bench_module("e2e")
    with err_console.status("benchmarking MLLP -> warehouse (starts a broker and the bus)..."):
        result = bench.run(ladder, seconds)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("lake")
def bench_lake(
    stays: Annotated[
        int, typer.Option(min=1, help="Stays (45 research records each) in the stream.")
    ] = 2000,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Records per sink batch (lake.batch_size).")
    ] = 5000,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating rounds (medians kept).")] = 3,
) -> None:
    """Research events/s into MEDS rows (decode, map, key map, append files) vs pyarrow writing
    the same rows in one go, and compaction seconds per million rows."""
    bench = bench_module("lake")
    with err_console.status("benchmarking the lake sink against one pyarrow write..."):
        result = bench.run(stays, batch_size, rounds)
    typer.echo(json.dumps(result, indent=2))
