"""How the worker's Kafka clients reach the brokers: plain data that streams/runtime.py turns
into faust's broker settings.

It is made from the one Kafka settings model (``kafka.client``, connectors/kafka_settings.py)
by the composition root, so the worker speaks the same TLS and SASL as every other client.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, repr=False)
class BrokerAuth:
    """The security protocol and what it needs: a TLS context for SSL and SASL_SSL, a SASL
    mechanism and credentials for SASL_PLAINTEXT and SASL_SSL."""

    protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = None
    #: The client id the brokers see (quotas, ACL logs); None: the client's own default.
    client_id: str | None = None

    def __post_init__(self) -> None:
        tls = self.protocol in ("SSL", "SASL_SSL")
        sasl = self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        if tls != (self.ssl_context is not None):
            raise ValueError(f"{self.protocol} {'needs' if tls else 'takes no'} TLS context")
        if sasl != (self.sasl_mechanism is not None):
            raise ValueError(f"{self.protocol} {'needs' if sasl else 'takes no'} SASL mechanism")

    def __repr__(self) -> str:  # never the password
        return f"BrokerAuth({self.protocol}, mechanism={self.sasl_mechanism}, user={self.username})"
