"""The `kafka.client` settings: one model for every Kafka client of the bus.

The bus has two Kafka client stacks: librdkafka (confluent-kafka: the MLLP listener, file
ingest, the sinks, admin and status) and aiokafka (faust: the worker). A setting that reached
only one of them would leave a process unable to connect (a TLS cluster the worker cannot
reach) or, worse, connecting with other security than the rest. So `kafka.client` takes
librdkafka property names, and each key either reaches both stacks (:meth:`librdkafka` and
:meth:`broker_auth`, the translation table) or is one of the few that only tune librdkafka's
connections (:data:`LIBRDKAFKA_ONLY`, documented as such); any other key is refused when the
config is loaded, with an error naming ``kafka.client.<key>``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from hl7bus.connectors.tls import client_ssl_context
from hl7bus.streams.broker_auth import BrokerAuth, SaslMechanism, SecurityProtocol

#: Keys that only tune librdkafka's connections (diagnostics, reconnect pacing, keepalive):
#: aiokafka has no equivalent, and the worker connecting without them changes neither where
#: nor how securely it connects.
LIBRDKAFKA_ONLY = (
    "debug",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "socket.keepalive.enable",
)

#: librdkafka properties the bus sets itself, and where to set them instead.
_OWNED = {
    "bootstrap.servers": "set kafka.bootstrap instead",
    "linger.ms": "set kafka.linger_ms instead",
    "delivery.timeout.ms": "set kafka.delivery_timeout_ms instead",
    "message.timeout.ms": "set kafka.delivery_timeout_ms instead",
    "acks": "the bus always writes with acks=all",
    "enable.idempotence": "the bus always writes with idempotence on",
    "group.id": "each consumer has its own (worker.app_id, warehouse.group_id)",
}

_SASL_KEYS = ("sasl.mechanism", "sasl.username", "sasl.password")
_CLIENT_CERTIFICATE = ("ssl.certificate.location", "ssl.key.location", "ssl.key.password")
_TLS_KEYS = (
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)


class KafkaSettingsError(ValueError):
    """`kafka.client` settings that cannot be used; the message names the keys, never a
    secret."""


class ClientSettings(BaseModel):
    """librdkafka's key names; each reaches every client, the worker's too, unless it says not.

    A few keys only tune librdkafka's connections and are marked "confluent clients only".
    """

    model_config = ConfigDict(extra="allow", serialize_by_alias=True)

    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT",
        alias="security.protocol",
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS).",
    )
    sasl_mechanism: SaslMechanism | None = Field(
        None,
        alias="sasl.mechanism",
        validation_alias=AliasChoices("sasl.mechanism", "sasl.mechanisms"),
        description=(
            "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (librdkafka's `sasl.mechanisms` is taken "
            "too); required with SASL_*."
        ),
    )
    sasl_username: str | None = Field(
        None, alias="sasl.username", description="SASL user name; required with SASL_*."
    )
    sasl_password: SecretStr | None = Field(
        None,
        alias="sasl.password",
        description="SASL password; required with SASL_*; masked by `config show`.",
    )
    ssl_ca_location: Path | None = Field(
        None,
        alias="ssl.ca.location",
        description=(
            "PEM file (or directory of hashed certificates) of the CAs that sign the brokers' "
            "certificates. Unset: the system's CAs. SSL and SASL_SSL only."
        ),
    )
    ssl_certificate_location: FilePath | None = Field(
        None,
        alias="ssl.certificate.location",
        description="PEM file of the client certificate (mutual TLS); with ssl.key.location.",
    )
    ssl_key_location: FilePath | None = Field(
        None,
        alias="ssl.key.location",
        description="PEM file of the client certificate's private key.",
    )
    ssl_key_password: SecretStr | None = Field(
        None,
        alias="ssl.key.password",
        description="Password of an encrypted ssl.key.location; masked by `config show`.",
    )
    ssl_endpoint_identification_algorithm: Literal["https", "none"] = Field(
        "https",
        alias="ssl.endpoint.identification.algorithm",
        description=(
            "https: the broker's certificate must name the host connected to; none: any "
            "certificate the CAs signed is accepted (brokers known by addresses their "
            "certificates do not list)."
        ),
    )
    client_id: str | None = Field(
        None,
        alias="client.id",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Client id the brokers see (quotas, ACLs, logs). Unset: each client's own.",
    )
    debug: str | None = Field(
        None,
        description=(
            "librdkafka debug contexts, e.g. security,broker (confluent clients only: "
            "diagnostics; the worker logs through --loglevel)."
        ),
    )
    reconnect_backoff_ms: int | None = Field(
        None,
        ge=0,
        alias="reconnect.backoff.ms",
        description="First wait before reconnecting to a broker (confluent clients only).",
    )
    reconnect_backoff_max_ms: int | None = Field(
        None,
        ge=0,
        alias="reconnect.backoff.max.ms",
        description="Longest wait before reconnecting to a broker (confluent clients only).",
    )
    socket_keepalive_enable: bool | None = Field(
        None,
        alias="socket.keepalive.enable",
        description="TCP keepalive on broker connections (confluent clients only).",
    )

    @field_validator("security_protocol", mode="before")
    @classmethod
    def _protocol_case(cls, value: Any) -> Any:
        # librdkafka takes the protocol in any case; aiokafka only in upper case.
        return value.upper() if isinstance(value, str) else value

    @field_validator("ssl_ca_location")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError("no such file or directory")
        return value

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_supported(cls, value: Any) -> Any:
        if value in ("GSSAPI", "OAUTHBEARER"):
            raise PydanticCustomError(
                "kafka_mechanism",
                "{mechanism} needs settings the worker's Kafka client (faust/aiokafka) cannot "
                "take from here; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                {"mechanism": value},
            )
        return value

    @model_validator(mode="after")
    def _every_key_reaches_every_client(self) -> ClientSettings:
        problems = [_refused(key, value) for key, value in (self.model_extra or {}).items()]
        given = self.model_dump(exclude_none=True)
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        for key in _SASL_KEYS:
            if sasl and key not in given:
                problems.append(_missing(key, f"required with {self.security_protocol}"))
            elif not sasl and key in given:
                problems.append(_unused(key, given[key], self.security_protocol, "SASL_*"))
        for key in _TLS_KEYS:
            if not tls and key in self._given_keys():
                problems.append(_unused(key, given[key], self.security_protocol, "SSL or SASL_SSL"))
        if self.ssl_key_location is not None and self.ssl_certificate_location is None:
            problems.append(_missing("ssl.certificate.location", "required with ssl.key.location"))
        if self.ssl_certificate_location is not None and self.ssl_key_location is None:
            problems.append(_missing("ssl.key.location", "required with a certificate"))
        if self.ssl_key_password is not None and self.ssl_key_location is None:
            problems.append(
                _problem("ssl.key.password", self.ssl_key_password, "set without ssl.key.location")
            )
        if problems:
            # One error per key, each located at it: pydantic nests them under kafka.client, so
            # the config error names kafka.client.<key> (and masks it when it is a secret).
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _given_keys(self) -> set[str]:
        """The aliases of the keys the config gave (defaults left out)."""
        fields = type(self).model_fields
        return {fields[name].alias or name for name in self.model_fields_set if name in fields}

    def librdkafka(self) -> dict[str, Any]:
        """The settings as librdkafka properties (the confluent clients)."""
        properties: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, Path):
                value = str(value)
            properties[field.alias or name] = value
        return properties

    def broker_auth(self) -> BrokerAuth:
        """The settings for the worker's client (faust/aiokafka): the same protocol, TLS trust,
        client certificate, host name check, SASL mechanism and credentials, and client id.

        Raises :class:`KafkaSettingsError` when the TLS files cannot be used.
        """
        context = self._ssl_context() if self.security_protocol in ("SSL", "SASL_SSL") else None
        sasl = self.security_protocol.startswith("SASL_")
        return BrokerAuth(
            protocol=self.security_protocol,
            ssl_context=context,
            sasl_mechanism=self.sasl_mechanism if sasl else None,
            username=self.sasl_username if sasl else None,
            password=self.sasl_password.get_secret_value()
            if sasl and self.sasl_password is not None
            else None,
            client_id=self.client_id,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = client_ssl_context(
                ca=self.ssl_ca_location,
                check_hostname=self.ssl_endpoint_identification_algorithm == "https",
            )
        except (OSError, ssl.SSLError) as exc:
            raise _unusable(["ssl.ca.location"], exc) from None
        if self.ssl_certificate_location is not None:
            password = self.ssl_key_password
            try:
                context.load_cert_chain(
                    self.ssl_certificate_location,
                    self.ssl_key_location,
                    password.get_secret_value() if password is not None else None,
                )
            except (OSError, ssl.SSLError) as exc:
                given = self._given_keys()
                raise _unusable([k for k in _CLIENT_CERTIFICATE if k in given], exc) from None
        return context


def _unusable(keys: list[str], exc: Exception) -> KafkaSettingsError:
    # The OpenSSL reason only (e.g. "[SSL] PEM lib"): it never holds a password.
    names = ", ".join(f"kafka.client.{key}" for key in keys)
    return KafkaSettingsError(f"{names} cannot be used: {type(exc).__name__}: {exc}")


def _problem(key: str, value: Any, message: str) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("kafka_client", message),
        loc=(key,),
        input=value,
    )


def _missing(key: str, message: str) -> InitErrorDetails:
    # Of type "missing", so config errors show the value as "(missing)".
    return InitErrorDetails(type=PydanticCustomError("missing", message), loc=(key,), input=None)


def _refused(key: str, value: Any) -> InitErrorDetails:
    if key == "sasl.mechanisms":
        return _problem(key, value, "give the mechanism once, as sasl.mechanism")
    if key in _OWNED:
        return _problem(key, value, f"set by the bus for every client: {_OWNED[key]}")
    allowed = ", ".join(f.alias or n for n, f in ClientSettings.model_fields.items())
    return _problem(
        key,
        value,
        "the worker's Kafka client (faust/aiokafka) has no equivalent of this librdkafka "
        "property, so it cannot reach the worker and is refused rather than honoured by some "
        f"processes only; keys taken: {allowed}",
    )


def _unused(key: str, value: Any, protocol: str, needs: str) -> InitErrorDetails:
    return _problem(key, value, f"set, but security.protocol is {protocol} (it needs {needs})")
