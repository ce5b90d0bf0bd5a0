"""TLS client contexts, shared by the MLLP sender and the worker's Kafka client (aiokafka)."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_ssl_context(
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A TLS client context: the server is verified against ``ca`` (a PEM file or a directory
    of hashed certificates; default: the system CAs) and, unless ``check_hostname`` is False,
    its name; ``cert``/``key`` present a client certificate (mutual TLS).

    Raises ``OSError``/``ssl.SSLError`` when a file cannot be read or does not fit.
    """
    if key is not None and cert is None:
        raise ValueError("a client key needs its certificate (--cert)")
    if ca is not None and ca.is_dir():
        ctx = ssl.create_default_context(capath=str(ca))
    else:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx
