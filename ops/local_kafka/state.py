"""What a broker instance records on disk: ``state.json`` (the running broker, read back as
:class:`BrokerInfo`) and ``instance.json`` (the ports of the last start, reused when free).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hl7bus.ops.local_kafka import sasl_ssl
from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.files import read_json, write_json
from hl7bus.ops.local_kafka.ports import hostport
from hl7bus.ops.local_kafka.process import pid_alive
from hl7bus.ops.local_kafka.sasl_ssl import SaslSslListener


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker, as recorded in its state.json."""

    name: str
    version: str
    bootstrap: str
    pid: int
    host: str
    port: int
    controller_port: int
    instance_dir: Path
    data_dir: Path
    log_file: Path
    started_at: datetime
    #: True when up() found the broker already running and started nothing.
    already_running: bool = False
    #: Human-readable remarks for the CLI to print, e.g. that the configured port was taken.
    notes: tuple[str, ...] = field(default=())
    #: The SASL_SSL listener (broker.sasl_ssl_port), when it has one.
    sasl_ssl: SaslSslListener | None = None


def state_file(cfg: LocalKafkaConfig) -> Path:
    return cfg.instance_dir / "state.json"


def write_state(cfg: LocalKafkaConfig, info: BrokerInfo) -> None:
    write_json(
        state_file(cfg),
        {
            "pid": info.pid,
            "bootstrap": info.bootstrap,
            "host": info.host,
            "port": info.port,
            "controller_port": info.controller_port,
            "sasl_ssl_port": _port_of(info.sasl_ssl),
            "version": info.version,
            "data_dir": str(info.data_dir),
            "log_file": str(info.log_file),
            "started_at": info.started_at.isoformat(),
        },
    )


def _port_of(listener: SaslSslListener | None) -> int | None:
    return None if listener is None else int(listener.bootstrap.rsplit(":", 1)[1])


def _info_from_state(state: dict[str, Any], cfg: LocalKafkaConfig) -> BrokerInfo | None:
    try:
        sasl_port = state.get("sasl_ssl_port")
        secure = None
        if isinstance(sasl_port, int):
            bootstrap = hostport(str(state["host"]), sasl_port)
            secure = sasl_ssl.listener(cfg.instance_dir, bootstrap)
        return BrokerInfo(
            name=cfg.name,
            version=str(state["version"]),
            bootstrap=str(state["bootstrap"]),
            pid=int(state["pid"]),
            host=str(state["host"]),
            port=int(state["port"]),
            controller_port=int(state["controller_port"]),
            instance_dir=cfg.instance_dir,
            data_dir=Path(state["data_dir"]),
            log_file=Path(state["log_file"]),
            started_at=datetime.fromisoformat(state["started_at"]),
            sasl_ssl=secure,
        )
    except (KeyError, TypeError, ValueError):
        return None


def live_broker(cfg: LocalKafkaConfig) -> BrokerInfo | None:
    """The broker state.json records, when its process still runs; else None (stale or none)."""
    state = read_json(state_file(cfg))
    if state is None:
        return None
    info = _info_from_state(state, cfg)
    if info is None or not pid_alive(info.pid, cfg.instance_dir / "server.properties"):
        return None
    return info


def previous_ports(cfg: LocalKafkaConfig) -> tuple[int | None, int | None, int | None]:
    """The client, controller and SASL_SSL ports of the last start, None where unknown."""
    previous = read_json(cfg.instance_dir / "instance.json") or {}
    ports = (previous.get(k) for k in ("port", "controller_port", "sasl_ssl_port"))
    port, controller_port, sasl_port = (p if isinstance(p, int) else None for p in ports)
    return port, controller_port, sasl_port


def remember_ports(
    cfg: LocalKafkaConfig, port: int, controller_port: int, sasl_ssl_port: int | None
) -> None:
    write_json(
        cfg.instance_dir / "instance.json",
        {"port": port, "controller_port": controller_port, "sasl_ssl_port": sasl_ssl_port},
    )
