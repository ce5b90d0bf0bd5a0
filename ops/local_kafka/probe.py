"""Asking a broker whether it answers: one metadata request, and waiting for a starting broker
to answer one.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.errors import LocalKafkaError
from hl7bus.ops.local_kafka.files import tail

_LOG_TAIL_LINES = 20


def probe(bootstrap: str, timeout: float, client: dict[str, str] | None = None) -> tuple[str, ...]:
    """Non-internal topic names, from a metadata request; raises when nobody answers.
    ``client``: extra client properties (the SASL_SSL listener's)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # Connection refusals while the broker boots are expected; keep them off stderr.
        "log_level": 0,
        "error_cb": lambda _err: None,
        **(client or {}),
    }
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise LocalKafkaError(f"no metadata answer from {bootstrap}: {exc}") from exc
    if not metadata.brokers:
        raise LocalKafkaError(f"{bootstrap} answered without any broker in its metadata")
    return tuple(sorted(t for t in metadata.topics if not t.startswith("__")))


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_answering(
    bootstrap: str,
    host: str,
    port: int,
    cfg: LocalKafkaConfig,
    proc: subprocess.Popen[bytes] | None,
    log_start: int,
    client: dict[str, str] | None = None,
) -> None:
    """Wait until the broker answers metadata (asked with the ``client`` properties); raises
    when ``proc`` (when given) exits first, or after ``cfg.start_timeout_s``, with the broker
    log written since ``log_start``.
    """
    log_file = cfg.instance_dir / "broker.log"
    deadline = time.monotonic() + cfg.start_timeout_s
    last_error = "the port never accepted a connection"
    while True:
        if proc is not None and proc.poll() is not None:
            raise LocalKafkaError(
                f"the Kafka broker exited with code {proc.returncode} during startup. "
                f"Broker log: {log_file}; its last lines:\n"
                + tail(log_file, _LOG_TAIL_LINES, log_start)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKafkaError(
                f"the Kafka broker at {bootstrap} did not answer a metadata request within "
                f"{cfg.start_timeout_s:g} s ({last_error}). Broker log: {log_file}; "
                f"its last lines:\n" + tail(log_file, _LOG_TAIL_LINES, log_start)
            )
        # Only ask for metadata once the port accepts, so the client has no refusals to log.
        if _tcp_open(host, port):
            try:
                probe(bootstrap, timeout=max(0.5, min(3.0, remaining)), client=client)
            except LocalKafkaError as exc:
                last_error = str(exc)
            else:
                return
        time.sleep(0.2)
