"""TLS and mutual TLS on the real broker, certificates made in the test with the openssl CLI
(the `cryptography` package is not installed); `hl7bus send --tls/--ca/--cert/--key --json`."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_mllp_service import numbered, serving

from hl7bus.connectors.mllp.client import client_ssl_context, send_messages
from hl7bus.connectors.mllp.config import TlsConfig
from hl7bus.connectors.mllp.metrics import REFUSED

pytestmark = pytest.mark.kafka


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _issue(directory: Path, name: str, subject: str, ca: str | None, san: str | None) -> None:
    """A P-256 key and certificate NAME.key/NAME.pem, self-signed when `ca` is None."""
    args: list[str | Path] = ["req", "-x509", "-newkey", "ec", "-pkeyopt"]
    args += ["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", subject]
    args += ["-keyout", directory / f"{name}.key", "-out", directory / f"{name}.pem"]
    if ca is None:
        args += ["-addext", "basicConstraints=critical,CA:TRUE"]
    else:
        args += ["-CA", directory / f"{ca}.pem", "-CAkey", directory / f"{ca}.key"]
        args += ["-addext", "basicConstraints=critical,CA:FALSE"]
    if san:
        args += ["-addext", f"subjectAltName={san}"]
    _openssl(*args)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _issue(d, "ca", "/CN=hl7bus test CA", None, None)
    _issue(d, "server", "/CN=localhost", "ca", "DNS:localhost,IP:127.0.0.1")
    _issue(d, "client-ca", "/CN=hl7bus test client CA", None, None)
    _issue(d, "client", "/CN=interface-engine", "client-ca", None)
    _issue(d, "rogue-ca", "/CN=rogue CA", None, None)
    _issue(d, "rogue", "/CN=rogue engine", "rogue-ca", None)
    return d


def _tls(pki: Path, client_ca: bool, mode: str | None = None) -> dict[str, Any]:
    tls: dict[str, Any] = {"cert": pki / "server.pem", "key": pki / "server.key"}
    if client_ca:
        tls["client_ca"] = pki / "client-ca.pem"
    if mode is not None:
        tls["client_certs"] = mode
    return tls


def _client(pki: Path, who: str | None) -> ssl.SSLContext:
    if who is None:
        return client_ssl_context(ca=pki / "ca.pem")
    return client_ssl_context(ca=pki / "ca.pem", cert=pki / f"{who}.pem", key=pki / f"{who}.key")


def _send(bootstrap: str, prefix: str, mllp: dict[str, Any], ctx: ssl.SSLContext | None) -> Any:
    messages = numbered(3, "T")

    async def main() -> Any:
        async with serving(bootstrap, prefix, mllp) as bus:
            return await send_messages(
                "127.0.0.1", bus.port(), messages, window=3, ack_timeout=10, ssl=ctx
            )

    return asyncio.run(main())


def test_tls(kafka_bootstrap: str, unique_name: str, pki: Path) -> None:
    mllp = {"feed": "tls", "tls": _tls(pki, client_ca=False)}
    results = _send(kafka_bootstrap, unique_name, mllp, _client(pki, None))
    assert [r.code for r in results] == ["AA"] * 3
    # A plain-TCP client gets nothing: its bytes are no TLS handshake.
    before = REFUSED.labels("tls", "tls")._value.get()
    plain = _send(kafka_bootstrap, unique_name, mllp, None)
    assert all(r.code is None for r in plain)
    assert REFUSED.labels("tls", "tls")._value.get() == before + 1


def test_mutual_tls_required(kafka_bootstrap: str, unique_name: str, pki: Path) -> None:
    mllp = {"feed": "mtls", "tls": _tls(pki, client_ca=True)}
    assert TlsConfig.model_validate(mllp["tls"]).client_cert_mode == "required"
    ok = _send(kafka_bootstrap, unique_name, mllp, _client(pki, "client"))
    assert [r.code for r in ok] == ["AA"] * 3

    before = REFUSED.labels("mtls", "tls")._value.get()
    anonymous = _send(kafka_bootstrap, unique_name, mllp, _client(pki, None))
    rogue = _send(kafka_bootstrap, unique_name, mllp, _client(pki, "rogue"))
    for results in (anonymous, rogue):
        assert all(r.code is None and r.error for r in results), results
    assert REFUSED.labels("mtls", "tls")._value.get() == before + 2


def test_mutual_tls_optional(kafka_bootstrap: str, unique_name: str, pki: Path) -> None:
    mllp = {"feed": "mtlsopt", "tls": _tls(pki, client_ca=True, mode="optional")}
    anonymous = _send(kafka_bootstrap, unique_name, mllp, _client(pki, None))
    assert [r.code for r in anonymous] == ["AA"] * 3
    rogue = _send(kafka_bootstrap, unique_name, mllp, _client(pki, "rogue"))
    assert all(r.code is None for r in rogue)  # presented, so checked, and it fails


def test_send_cli_mutual_tls_json(
    kafka_bootstrap: str, unique_name: str, pki: Path, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(b"".join(numbered(5, "CLI")))
    hl7bus = str(Path(sys.executable).parent / "hl7bus")
    mllp = {"feed": "clitls", "tls": _tls(pki, client_ca=True)}

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            proc = await asyncio.create_subprocess_exec(
                hl7bus,
                "send",
                str(batch),
                "--port",
                str(bus.port()),
                "--window",
                "5",
                "--ca",
                str(pki / "ca.pem"),
                "--cert",
                str(pki / "client.pem"),
                "--key",
                str(pki / "client.key"),
                "--json",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, out, err

    code, out, err = asyncio.run(main())
    assert code == 0, err
    summary = json.loads(out)
    assert summary["tls"] is True
    assert summary["total"] == summary["accepted"] == 5
    assert summary["by_code"] == {"AA": 5}
    assert summary["ok"] is True
    assert summary["latency_p99_s"] > 0


def test_tls_config_errors_name_the_key(pki: Path, tmp_path: Path) -> None:
    from hl7bus.ops import config
    from hl7bus.schemas.datafile import DataFileError

    path = tmp_path / "c.yaml"
    path.write_text(
        "mllp:\n  feeds:\n    - feed: a\n      port: 1\n      tls:\n"
        f"        cert: {pki / 'server.pem'}\n        key: {pki / 'client.key'}\n"
        "    - feed: b\n      port: 2\n      tls:\n"
        f"        cert: {pki / 'server.pem'}\n        key: {pki / 'server.key'}\n"
        "        client_certs: required\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFileError) as err:
        config.load(path)
    text = str(err.value)
    assert "mllp.feeds.0.tls" in text and "cert/key: cannot load them" in text
    assert "mllp.feeds.1.tls" in text and "needs client_ca" in text
