"""The broker's ``server.properties``, rendered from ``ops/kafka/server.properties.template``
on every start, because the ports may differ between starts. The listeners are set here.
"""

from __future__ import annotations

import string
from pathlib import Path

SERVER_TEMPLATE = Path(__file__).parent.parent / "kafka" / "server.properties.template"


def render(host: str, port: int, controller_port: int, data_dir: Path) -> str:
    """The broker's configuration: listening on ``host``, its data in ``data_dir``."""
    listen_host = f"[{host}]" if ":" in host else host
    return string.Template(SERVER_TEMPLATE.read_text(encoding="utf-8")).substitute(
        listen_host=listen_host,
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
    )
