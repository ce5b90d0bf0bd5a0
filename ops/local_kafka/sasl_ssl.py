"""The optional SASL_SSL listener of the local broker: SCRAM-SHA-512 over TLS, with a throwaway
CA, so every client's TLS and SASL path can be tried for real (docs/architecture.md, Real parts
in tests).

Made once per instance under ``<instance>/sasl_ssl/`` and reused on restarts, so clients' CA
file and password stay valid: ``ca.pem`` (what clients trust), ``ca.key``, ``broker.pem`` (the
broker's key and certificate, a PEM keystore for Kafka) and ``scram.json`` (the SCRAM user).
The certificates are made with the ``openssl`` CLI (OpenSSL 3), which is quicker than keytool's
six JVM starts. The SCRAM user is upserted through the PLAINTEXT listener after the broker
starts, so an instance formatted before the listener was turned on gets it too.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hl7bus.ops.local_kafka.errors import LocalKafkaError

MECHANISM = "SCRAM-SHA-512"
USERNAME = "hl7bus"
LISTENER = "SASL_SSL"
_SCRAM_ITERATIONS = 8192
_CA_DAYS = 3650


@dataclass(frozen=True)
class SaslSslListener:
    """Where the SASL_SSL listener is and what a client needs to use it."""

    bootstrap: str
    #: PEM file of the throwaway CA that signed the broker's certificate.
    ca_file: Path
    username: str
    password: str = field(repr=False)
    mechanism: str = MECHANISM

    def client_settings(self) -> dict[str, str]:
        """The `kafka.client` settings (librdkafka names) of a client of this listener."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": str(self.ca_file),
        }


def material_dir(instance: Path) -> Path:
    return instance / "sasl_ssl"


def ensure_material(instance: Path, host: str) -> tuple[Path, str]:
    """Make the CA, the broker's certificate for ``host`` and the SCRAM password unless they
    exist; return the broker's PEM keystore and the password."""
    directory = material_dir(instance)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem, ca_key = directory / "ca.pem", directory / "ca.key"
    if not (ca_pem.is_file() and ca_key.is_file()):
        _openssl(
            "req", "-x509", *_new_key(ca_key), "-days", str(_CA_DAYS),
            "-subj", "/CN=hl7bus local Kafka CA", "-out", ca_pem,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    keystore = directory / "broker.pem"
    if not _names_host(directory / "broker.host", host) or not keystore.is_file():
        # The certificate names the advertised host, so a new host needs a new one.
        key, cert = directory / "broker.key", directory / "broker.crt"
        _openssl(
            "req", "-x509", *_new_key(key), "-days", str(_CA_DAYS),
            "-subj", f"/CN={host}", "-CA", ca_pem, "-CAkey", ca_key, "-out", cert,
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", f"subjectAltName={_subject_alt_names(host)}",
        )  # fmt: skip
        # Kafka's PEM keystore: the unencrypted PKCS#8 key, then the certificate chain.
        keystore.write_bytes(key.read_bytes() + cert.read_bytes() + ca_pem.read_bytes())
        keystore.chmod(0o600)
        key.unlink()
        (directory / "broker.host").write_text(host, encoding="utf-8")
    password = _read_password(directory / "scram.json")
    if password is None:
        password = secrets.token_urlsafe(24)
        fd = os.open(directory / "scram.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"mechanism": MECHANISM, "username": USERNAME, "password": password}, out)
    return keystore, password


def listener(instance: Path, bootstrap: str) -> SaslSslListener | None:
    """The listener of an instance whose material :func:`ensure_material` made; None when
    there is none."""
    directory = material_dir(instance)
    password = _read_password(directory / "scram.json")
    if password is None:
        return None
    return SaslSslListener(
        bootstrap=bootstrap, ca_file=directory / "ca.pem", username=USERNAME, password=password
    )


def server_properties(keystore: Path) -> str:
    """The broker settings of the listener named SASL_SSL (its address is in `listeners`)."""
    prefix = f"listener.name.{LISTENER.lower()}"
    return "\n".join(
        [
            f"{prefix}.sasl.enabled.mechanisms={MECHANISM}",
            f"{prefix}.{MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}.ssl.keystore.type=PEM",
            f"{prefix}.ssl.keystore.location={keystore}",
            "",
        ]
    )


def add_scram_user(bootstrap: str, password: str, timeout: float) -> None:
    """Create (or reset) the SCRAM user through the PLAINTEXT listener at ``bootstrap``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    # Quiet: librdkafka would log its background queue being purged at exit.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    upsert = UserScramCredentialUpsertion(
        USERNAME,
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS),
        password.encode(),
    )
    try:
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=timeout)
    except KafkaException as exc:
        raise LocalKafkaError(f"could not create the SCRAM user {USERNAME}: {exc}") from exc


def _new_key(path: Path) -> list[str]:
    return [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(path),
    ]


def _subject_alt_names(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host},DNS:localhost"
    return f"IP:{host},DNS:localhost"


def _names_host(marker: Path, host: str) -> bool:
    try:
        return marker.read_text(encoding="utf-8") == host
    except FileNotFoundError:
        return False


def _read_password(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["password"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LocalKafkaError(
            "the SASL_SSL listener needs the openssl CLI (OpenSSL 3) to make its throwaway CA "
            "and certificate: install it, e.g. `apt-get install openssl`"
        )
    cmd = [openssl, *map(str, args)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        raise LocalKafkaError(
            f"openssl failed (exit {proc.returncode}) making the SASL_SSL listener's "
            f"certificates: {' '.join(cmd)}\n{(proc.stdout + proc.stderr).strip()[-2000:]}"
        )
