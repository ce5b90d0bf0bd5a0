"""The `hl7bus` command line. With ops/config.py, the composition root of the bus.

One module per command family; this one assembles them into the root app, in the order
`hl7bus --help` lists them. Commands import their components inside the command body:
`hl7bus --help` stays fast and a command never pays for faust or DuckDB unless it runs them.
"""

from __future__ import annotations

import typer

from hl7bus.ops.cli import (
    bench,
    config,
    deid,
    demo,
    dlq,
    ingest,
    kafka,
    lake,
    mllp,
    monitor,
    parse,
    schemas,
    topics,
    warehouse,
    worker,
)

app = typer.Typer(
    name="hl7bus",
    help=(
        "hl7bus: HL7 v2 over MLLP onto Apache Kafka as typed Avro events, de-identified for "
        "research and AI.\n\nConfig: --config FILE (or HL7BUS_CONFIG) plus HL7BUS_<SECTION>_<KEY> "
        "environment overrides, e.g. HL7BUS_KAFKA_BOOTSTRAP=broker:9092. "
        "See `hl7bus config show`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("send")(mllp.send)
app.command("ingest")(ingest.ingest)
app.command("worker")(worker.worker)
app.command("status")(monitor.status)
app.command("lag-exporter")(monitor.lag_exporter)
app.command("demo")(demo.demo)
app.command("replay")(dlq.replay)
app.command("parse")(parse.parse_files)
app.command("deid")(deid.deid_files)
app.add_typer(kafka.kafka_app, name="kafka")
app.add_typer(topics.topics_app, name="topics")
app.add_typer(config.config_app, name="config")
app.add_typer(mllp.mllp_app, name="mllp")
app.add_typer(worker.sink_app, name="sink")
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(warehouse.warehouse_app, name="warehouse")
app.add_typer(lake.lake_app, name="lake")
worker.sink_app.command("lake")(lake.sink_lake)
app.add_typer(schemas.schemas_app, name="schemas")
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    app()
