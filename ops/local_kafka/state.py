"""What a broker instance records on disk: ``state.json`` (the running broker, read back as
:class:`BrokerInfo`) and ``instance.json`` (the ports of the last start, reused when free).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.files import read_json, write_json
from hl7bus.ops.local_kafka.process import pid_alive


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
            "version": info.version,
            "data_dir": str(info.data_dir),
            "log_file": str(info.log_file),
            "started_at": info.started_at.isoformat(),
        },
    )


def _info_from_state(state: dict[str, Any], cfg: LocalKafkaConfig) -> BrokerInfo | None:
    try:
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


def previous_ports(cfg: LocalKafkaConfig) -> tuple[int | None, int | None]:
    """The client and controller ports of the last start, None where unknown."""
    previous = read_json(cfg.instance_dir / "instance.json") or {}
    port = previous.get("port")
    controller_port = previous.get("controller_port")
    return (
        port if isinstance(port, int) else None,
        controller_port if isinstance(controller_port, int) else None,
    )


def remember_ports(cfg: LocalKafkaConfig, port: int, controller_port: int) -> None:
    write_json(
        cfg.instance_dir / "instance.json", {"port": port, "controller_port": controller_port}
    )
