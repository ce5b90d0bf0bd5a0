"""What callers do with a local broker: start it (:func:`up`), stop it (:func:`down`), crash
it (:func:`kill`), and ask after it (:func:`status`, :func:`running_bootstrap`).

Each instance's lock file serializes these between processes (a CLI next to a test session).
"""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hl7bus.ops.local_kafka import process, sasl_ssl, server_properties
from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.errors import LocalKafkaError
from hl7bus.ops.local_kafka.files import locked
from hl7bus.ops.local_kafka.jars import ensure_jars, kafka_version, require_java
from hl7bus.ops.local_kafka.ports import choose_port, hostport
from hl7bus.ops.local_kafka.probe import probe, wait_answering
from hl7bus.ops.local_kafka.state import (
    BrokerInfo,
    live_broker,
    previous_ports,
    remember_ports,
    state_file,
    write_state,
)


@dataclass(frozen=True)
class BrokerStatus:
    """A live broker process and whether it answers."""

    broker: BrokerInfo
    answering: bool
    #: Non-internal topic names when answering, else None.
    topics: tuple[str, ...] | None
    #: Why it did not answer, when it did not.
    error: str | None = None

    @property
    def uptime_s(self) -> float:
        return (datetime.now(UTC) - self.broker.started_at).total_seconds()


def running_bootstrap(cfg: LocalKafkaConfig) -> str | None:
    """Bootstrap address of this instance's running broker, else None. No network I/O."""
    info = live_broker(cfg)
    return None if info is None else info.bootstrap


def status(cfg: LocalKafkaConfig, timeout: float = 5.0) -> BrokerStatus | None:
    """The running broker of this instance and whether it answers; None when not running."""
    info = live_broker(cfg)
    if info is None:
        return None
    try:
        topics = probe(info.bootstrap, timeout)
    except LocalKafkaError as exc:
        return BrokerStatus(broker=info, answering=False, topics=None, error=str(exc))
    return BrokerStatus(broker=info, answering=True, topics=topics)


def up(cfg: LocalKafkaConfig) -> BrokerInfo:
    """Start the broker (formatting new storage) and wait until it answers metadata.

    Idempotent: when this instance already runs, waits for it to answer and returns it
    with ``already_running=True``. After a crash or kill() the stale state is replaced and
    the broker restarts on the same data (topics and records survive).
    """
    libs = ensure_jars(cfg)
    java = require_java()
    instance = cfg.instance_dir
    instance.mkdir(parents=True, exist_ok=True)
    with locked(instance / ".lock"):
        running = live_broker(cfg)
        if running is not None:
            wait_answering(running.bootstrap, running.host, running.port, cfg, None, 0)
            notes: tuple[str, ...] = (f"already running (pid {running.pid})",)
            if cfg.port and cfg.port != running.port:
                notes += (f"it listens on {running.port}, not the configured {cfg.port}",)
            if cfg.sasl_ssl_port is not None and running.sasl_ssl is None:
                notes += ("it has no SASL_SSL listener: restart it (kafka down, kafka up)",)
            return dataclasses.replace(running, already_running=True, notes=notes)
        state_file(cfg).unlink(missing_ok=True)
        return _start(cfg, java, libs)


def _start(cfg: LocalKafkaConfig, java: str, libs: Path) -> BrokerInfo:
    instance = cfg.instance_dir
    data_dir = instance / "data"
    log_file = instance / "broker.log"
    properties_file = instance / "server.properties"
    last_port, last_controller_port, last_sasl_port = previous_ports(cfg)

    # A restart prefers the previous ports so clients' bootstrap setting stays valid.
    port = choose_port(cfg.host, cfg.port, last_port, set())
    controller_port = choose_port(cfg.host, cfg.controller_port, last_controller_port, {port})
    notes: list[str] = []
    if cfg.port and port != cfg.port:
        notes.append(f"port {cfg.port} on {cfg.host} is in use; the broker listens on {port}")
    secure: tuple[int, Path] | None = None
    password = ""
    if cfg.sasl_ssl_port is not None:
        sasl_port = choose_port(
            cfg.host, cfg.sasl_ssl_port, last_sasl_port, {port, controller_port}
        )
        keystore, password = sasl_ssl.ensure_material(instance, cfg.host)
        secure = (sasl_port, keystore)

    properties_file.write_text(
        server_properties.render(cfg.host, port, controller_port, data_dir, secure),
        encoding="utf-8",
    )
    jvm_common = process.jvm_command(java, cfg.heap, instance, libs)
    if not (data_dir / "meta.properties").exists():
        process.format_storage(jvm_common, properties_file, log_file)

    log_start = log_file.stat().st_size if log_file.exists() else 0
    proc = process.spawn(jvm_common, properties_file, instance, log_file)
    bootstrap = hostport(cfg.host, port)
    listener = None
    try:
        wait_answering(bootstrap, cfg.host, port, cfg, proc, log_start)
        if secure is not None:
            sasl_ssl.add_scram_user(bootstrap, password, cfg.start_timeout_s)
            listener = sasl_ssl.listener(instance, hostport(cfg.host, secure[0]))
            assert listener is not None  # ensure_material wrote it
            # Answering over SASL_SSL proves the certificate and the SCRAM user work.
            settings = listener.client_settings()
            wait_answering(listener.bootstrap, cfg.host, secure[0], cfg, proc, log_start, settings)
    except BaseException:
        # A broker that never became ready must not linger holding the ports and data lock.
        process.discard(proc)
        raise

    info = BrokerInfo(
        name=cfg.name,
        version=kafka_version(),
        bootstrap=bootstrap,
        pid=proc.pid,
        host=cfg.host,
        port=port,
        controller_port=controller_port,
        instance_dir=instance,
        data_dir=data_dir,
        log_file=log_file,
        started_at=datetime.now(UTC),
        notes=tuple(notes),
        sasl_ssl=listener,
    )
    write_state(cfg, info)
    remember_ports(cfg, port, controller_port, None if secure is None else secure[0])
    return info


def down(cfg: LocalKafkaConfig, timeout: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); keep its data.

    Returns False when it was not running. state.json is removed either way.
    """
    with locked(cfg.instance_dir / ".lock"):
        info = live_broker(cfg)
        if info is not None:
            properties_file = cfg.instance_dir / "server.properties"
            process.send_signal(info.pid, signal.SIGTERM)
            if not process.wait_exit(info.pid, properties_file, timeout):
                process.send_signal(info.pid, signal.SIGKILL)
                if not process.wait_exit(info.pid, properties_file, 10.0):
                    raise LocalKafkaError(
                        f"broker pid {info.pid} survived SIGKILL; see {info.log_file}"
                    )
        state_file(cfg).unlink(missing_ok=True)
        return info is not None


def kill(cfg: LocalKafkaConfig) -> bool:
    """SIGKILL the broker, as a crash would, for fault tests.

    Leaves state.json behind (stale) as a crash does; the next up() notices and restarts
    on the same data. Returns False when it was not running.
    """
    with locked(cfg.instance_dir / ".lock"):
        info = live_broker(cfg)
        if info is None:
            return False
        process.send_signal(info.pid, signal.SIGKILL)
        if not process.wait_exit(info.pid, cfg.instance_dir / "server.properties", 10.0):
            raise LocalKafkaError(f"broker pid {info.pid} survived SIGKILL")
        return True
