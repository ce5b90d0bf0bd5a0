"""`hl7bus kafka up/jars/status/down`: the local single-node broker."""

from __future__ import annotations

import typer

from hl7bus.ops.cli.shared import ConfigOption, console, fail, load_settings

kafka_app = typer.Typer(
    help="Run a local single-node Kafka broker (KRaft) for development and demos."
)


@kafka_app.command("up")
def kafka_up(config: ConfigOption = None) -> None:
    """Start the local broker (downloads the Kafka jars with Maven once), print its address."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    try:
        with console.status("starting the local Kafka broker..."):
            info = local_kafka.up(settings.broker)
    except local_kafka.LocalKafkaError as exc:
        fail(str(exc))
    for note in info.notes:
        console.print(f"note: {note}")
    state = "was already running" if info.already_running else "is up"
    console.print(
        f"Kafka {info.version} {state} at [bold]{info.bootstrap}[/] "
        f"(pid {info.pid}, log {info.log_file})"
    )
    console.print("Other hl7bus commands on this machine find it by themselves.")
    if info.sasl_ssl is not None:
        secure = info.sasl_ssl
        console.print(
            f"SASL_SSL ({secure.mechanism}, user {secure.username}) at [bold]{secure.bootstrap}[/]"
            f"; CA {secure.ca_file}; password in {secure.ca_file.parent / 'scram.json'}. "
            "Clients use it with kafka.bootstrap and kafka.client set to:"
        )
        shown = {**secure.client_settings(), "sasl.password": "<from scram.json>"}
        for key, value in shown.items():
            console.print(f"  {key}: {value}", markup=False)


@kafka_app.command("jars")
def kafka_jars(config: ConfigOption = None) -> None:
    """Resolve the pinned Kafka jars with Maven into the cache (done by `up` when needed)."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    try:
        with console.status("resolving the Kafka jars with Maven..."):
            libs = local_kafka.ensure_jars(settings.broker)
    except local_kafka.LocalKafkaError as exc:
        fail(str(exc))
    console.print(f"Kafka {local_kafka.kafka_version()} jars: {libs}")


@kafka_app.command("status")
def kafka_status(config: ConfigOption = None) -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    status = local_kafka.status(settings.broker)
    if status is None:
        console.print("the local Kafka broker is not running (start it: hl7bus kafka up)")
        raise typer.Exit(1)
    broker = status.broker
    if not status.answering:
        console.print(
            f"Kafka {broker.version} runs (pid {broker.pid}) at {broker.bootstrap} but does not "
            f"answer: {status.error}; log: {broker.log_file}"
        )
        raise typer.Exit(1)
    console.print(
        f"Kafka {broker.version} at {broker.bootstrap} (pid {broker.pid}, up "
        f"{status.uptime_s:.0f}s, {len(status.topics or ())} topics, data {broker.data_dir})"
    )


@kafka_app.command("down")
def kafka_down(config: ConfigOption = None) -> None:
    """Stop the local broker; its data stays for the next `kafka up`."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    if local_kafka.down(settings.broker):
        console.print("the local Kafka broker stopped")
    else:
        console.print("the local Kafka broker was not running")
