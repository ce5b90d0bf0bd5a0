"""The broker's ``server.properties``, rendered from ``ops/kafka/server.properties.template``
on every start, because the ports may differ between starts. The listeners are set here.
"""

from __future__ import annotations

import string
from pathlib import Path

from hl7bus.ops.local_kafka import sasl_ssl as sasl_ssl_mod

SERVER_TEMPLATE = Path(__file__).parent.parent / "kafka" / "server.properties.template"


def render(
    host: str,
    port: int,
    controller_port: int,
    data_dir: Path,
    sasl_ssl: tuple[int, Path] | None = None,
) -> str:
    """The broker's configuration: listening on ``host``, its data in ``data_dir``; with
    ``sasl_ssl`` (port, PEM keystore), a SASL_SSL listener for clients too."""
    listen_host = f"[{host}]" if ":" in host else host
    extra_listeners = extra_protocols = extra_settings = ""
    if sasl_ssl is not None:
        sasl_port, keystore = sasl_ssl
        extra_listeners = f",{sasl_ssl_mod.LISTENER}://{listen_host}:{sasl_port}"
        extra_protocols = f",{sasl_ssl_mod.LISTENER}:SASL_SSL"
        extra_settings = "\n# The SASL_SSL listener\n" + sasl_ssl_mod.server_properties(keystore)
    return string.Template(SERVER_TEMPLATE.read_text(encoding="utf-8")).substitute(
        listen_host=listen_host,
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
        extra_listeners=extra_listeners,
        extra_protocols=extra_protocols,
        extra_settings=extra_settings,
    )
