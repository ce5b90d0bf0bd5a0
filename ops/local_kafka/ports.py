"""The broker's TCP ports: a wanted port when it is free, else the previous one, else any."""

from __future__ import annotations

import socket

from hl7bus.ops.local_kafka.errors import LocalKafkaError


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # Java sets SO_REUSEADDR on its server sockets, so a port whose old connections
        # linger in TIME_WAIT is free for the broker and must count as free here too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str, avoid: set[int]) -> int:
    for _ in range(50):
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise LocalKafkaError(f"could not find a free TCP port on {host}")


def choose_port(host: str, wanted: int, previous: int | None, avoid: set[int]) -> int:
    """``wanted`` if set and free, else ``previous`` if free, else a free port not in ``avoid``."""
    for candidate in (wanted, previous):
        if candidate and candidate not in avoid and _port_free(host, candidate):
            return candidate
    return _free_port(host, avoid)


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
