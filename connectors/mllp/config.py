"""The configuration of the MLLP listener: one feed's port (:class:`ListenerConfig`), its TLS
(:class:`TlsConfig`), and the `mllp` section with the feeds of a process (:class:`MllpConfig`).
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)

from hl7bus.connectors.envelope import FEED_NAME_PATTERN
from hl7bus.connectors.mllp.framer import DEFAULT_MAX_FRAME_BYTES
from hl7bus.hl7v2 import codec_for

__all__ = ["AckMode", "ClientCerts", "FeedConfig", "ListenerConfig", "MllpConfig", "TlsConfig"]

AckMode = Literal["auto", "original", "enhanced"]
#: How a message the listener keeps in hl7.dlq instead of hl7.raw is answered (see
#: ``header_error_ack``): "error" AE/CE, "reject" AR/CR.
RefusalAck = Literal["error", "reject"]
#: How a batch received in one frame is answered (see ``batch_ack``).
BatchAck = Literal["batch", "each"]
ClientCerts = Literal["none", "optional", "required"]


class TlsConfig(BaseModel):
    """TLS for one feed's port; with `client_ca`, mutual TLS."""

    model_config = ConfigDict(extra="forbid")

    cert: FilePath = Field(description="PEM file with the listener's certificate (and chain).")
    key: FilePath = Field(description="PEM file with the private key of `cert`.")
    client_ca: FilePath | None = Field(
        None,
        description="PEM file of the CA(s) that sign client certificates; set for mutual TLS.",
    )
    client_certs: ClientCerts | None = Field(
        None,
        description=(
            "Whether clients must present a certificate signed by client_ca: required (mutual "
            "TLS), optional (checked when presented) or none. Default: required when client_ca "
            "is set, else none."
        ),
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")
    handshake_timeout_s: float = Field(
        10.0, gt=0, description="A client that has not finished the TLS handshake by then is cut."
    )

    @property
    def client_cert_mode(self) -> ClientCerts:
        if self.client_certs is not None:
            return self.client_certs
        return "required" if self.client_ca is not None else "none"

    @model_validator(mode="after")
    def _loadable(self) -> TlsConfig:
        if self.client_certs in ("optional", "required") and self.client_ca is None:
            raise ValueError(
                f"client_certs={self.client_certs!r} needs client_ca (the CA file that signs "
                "client certificates)"
            )
        self.server_context()  # fail at load time, naming the key, not at the first client
        return self

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if self.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        )
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cert/key: cannot load them ({ssl_reason(exc)})") from None
        mode = self.client_cert_mode
        if mode != "none" and self.client_ca is not None:
            try:
                ctx.load_verify_locations(cafile=str(self.client_ca))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"client_ca: cannot load it ({ssl_reason(exc)})") from None
            ctx.verify_mode = ssl.CERT_REQUIRED if mode == "required" else ssl.CERT_OPTIONAL
        return ctx


_ANY_NETWORK: list[Any] = ["0.0.0.0/0", "::/0"]


class ListenerConfig(BaseModel):
    """Everything one feed's listener needs (the `mllp` section itself is the one-feed case)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(2575, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    feed: str = Field(
        "default",
        pattern=FEED_NAME_PATTERN,
        description="Feed name stamped on every envelope; part of the patient key.",
    )
    charset: str | None = Field(
        None,
        description=(
            "Decode every message with this charset, ignoring MSH-18 (feeds that lie); an HL7 "
            "name (KS X 1001, 8859/1, UNICODE UTF-8) or a Python codec name."
        ),
    )
    fallback_charset: str | None = Field(
        None, description="Charset to try when MSH-18's charset cannot decode the bytes."
    )
    lenient_utf8: bool = Field(
        True,
        description=(
            "When neither MSH-18's charset nor fallback_charset decodes a message and its bytes "
            "are valid UTF-8, decode it as UTF-8 (counted in "
            "hl7bus_mllp_charset_mismatch_total) instead of answering AE; false: AE and "
            "hl7.dlq. Not applied with `charset` set."
        ),
    )
    header_error_ack: RefusalAck = Field(
        "error",
        description=(
            "The answer to a message without MSH-9, MSH-10 or MSH-12 (kept in hl7.dlq, reason "
            "header, ERR-3 101 naming the field): error (AE/CE: do not resend) or reject "
            "(AR/CR, for engines that only alert on a reject)."
        ),
    )
    ack_mode: AckMode = Field(
        "auto",
        description=(
            "ACK codes: auto (enhanced CA/CE/CR when MSH-15 or MSH-16 is set, else original "
            "AA/AE/AR), or force original or enhanced for every message."
        ),
    )
    batch_ack: BatchAck = Field(
        "batch",
        description=(
            "A batch sent in one frame (FHS/BHS ... BTS/FTS) is split and each message stored "
            "as if sent alone; once all are answered the frame gets one response batch holding "
            "every message's ACK (batch, BHS-12 echoing BHS-11), or each ACK in its own frame "
            "(each)."
        ),
    )
    max_frame_bytes: int = Field(
        DEFAULT_MAX_FRAME_BYTES,
        ge=1024,
        description=(
            "Largest accepted message. A bigger one is not stored in hl7.raw: its first 4 KiB go "
            "to hl7.dlq (reason oversize, its size in a header) and the sender gets AE/CE (AR/CR "
            "if even that DLQ write fails)."
        ),
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Messages one connection may have awaiting Kafka before reading pauses.",
    )
    idle_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Close a connection that sent nothing for this long while no message of it awaited "
            "its ACK (an unfinished frame is then kept in hl7.dlq as truncated)."
        ),
    )
    silence_threshold_s: float = Field(
        1800.0,
        gt=0,
        description=(
            "How long the feed may send nothing before it counts as silent: exported as "
            "hl7bus_feed_silence_threshold_seconds, alerted on (HL7BusFeedSilent) and shown by "
            "`hl7bus status`. Default 30 minutes, an interface engine's usual idle-feed alarm."
        ),
    )
    frame_timeout_s: float | None = Field(
        60.0,
        gt=0,
        description=(
            "A frame must end within this many seconds of its start block, however steadily "
            "its bytes trickle in (a slowloris sender); else the connection is closed, counted "
            "(hl7bus_mllp_closed_connections_total, reason frame_timeout) and logged, and the "
            "unfinished frame is kept in hl7.dlq as truncated. null: no limit."
        ),
    )
    max_connections: int = Field(
        100,
        ge=1,
        description=(
            "Open connections this feed accepts; one more is closed at once, counted "
            "(hl7bus_mllp_refused_connections_total, reason max_connections) and logged."
        ),
    )
    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(_ANY_NETWORK),
        min_length=1,
        validate_default=True,
        description=(
            "Client networks (CIDRs) allowed to connect; others are closed at once, counted and "
            "logged by address. Default: everyone."
        ),
    )
    tls: TlsConfig | None = Field(
        None, description="TLS (and mutual TLS) on this port; null: plain TCP."
    )

    @field_validator("charset", "fallback_charset")
    @classmethod
    def _known_charset(cls, value: str | None) -> str | None:
        if value is not None:
            codec_for(value)  # Hl7CharsetError is a ValueError: pydantic reports the key
        return value


class FeedConfig(ListenerConfig):
    """One entry of `mllp.feeds`; keys left out are taken from the `mllp` section."""

    feed: str = Field(
        pattern=FEED_NAME_PATTERN,
        description="Feed name stamped on every envelope; part of the patient key.",
    )
    port: int = Field(ge=0, le=65535, description="TCP port of this feed; 0 picks a free one.")


class MllpConfig(ListenerConfig):
    """The MLLP section: one feed from its own keys, or several from `feeds`."""

    feeds: list[FeedConfig] = Field(
        default_factory=list,
        description=(
            "Several feeds in one process, each on its own port. When set, only these run and "
            "the section's other listener keys are their defaults."
        ),
    )
    max_in_flight_total: int = Field(
        10_000,
        ge=1,
        description="Messages awaiting Kafka across all connections and feeds of the process.",
    )
    max_connections_total: int = Field(
        1000,
        ge=1,
        description=(
            "Open connections across all feeds of the process; one more is closed at once, "
            "counted (reason max_connections_total) and logged."
        ),
    )
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="On stop, how long in-flight messages may take to get their ACKs."
    )
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; null: off."
    )

    @model_validator(mode="after")
    def _distinct_feeds(self) -> MllpConfig:
        names: dict[str, int] = {}
        ports: dict[tuple[str, int], int] = {}
        for i, item in enumerate(self.listeners()):
            if item.feed in names:
                raise ValueError(
                    f"feeds[{i}].feed {item.feed!r} is also the name of feeds[{names[item.feed]}]"
                )
            names[item.feed] = i
            where = (item.host, item.port)
            if item.port and where in ports:
                raise ValueError(
                    f"feeds[{i}].port {item.port} is also the port of feeds[{ports[where]}]"
                )
            ports[where] = i
        return self

    def narrowed(
        self, feed: str | None = None, host: str | None = None, port: int | None = None
    ) -> MllpConfig:
        """The config of `mllp serve --feed NAME --listen HOST:PORT`.

        One feed (no `feeds` list): ``feed`` renames it, ``host``/``port`` move it. With `feeds`,
        ``feed`` picks the one feed to run and ``host``/``port`` move that one; moving needs a
        single feed. Raises ValueError naming the option and the feeds there are.
        """
        moved = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        base = self.model_dump(exclude_unset=True)
        if not self.feeds:
            return MllpConfig.model_validate({**base, **({"feed": feed} if feed else {}), **moved})
        names = [f.feed for f in self.feeds]
        if feed is not None:
            chosen = [f for f in self.feeds if f.feed == feed]
            if not chosen:
                raise ValueError(f"--feed {feed!r} is not in mllp.feeds ({', '.join(names)})")
        else:
            chosen = list(self.feeds)
            if moved and len(chosen) > 1:
                raise ValueError(
                    f"--listen needs one feed; name it with --feed ({', '.join(names)})"
                )
        feeds = [{**f.model_dump(exclude_unset=True), **moved} for f in chosen]
        return MllpConfig.model_validate({**base, "feeds": feeds})

    def listeners(self) -> list[ListenerConfig]:
        """The resolved config of every feed to serve, section defaults filled in."""
        if not self.feeds:
            return [ListenerConfig.model_construct(**_listener_fields(self))]
        base = _listener_fields(self)
        return [
            ListenerConfig.model_construct(
                **{**base, **{k: getattr(f, k) for k in f.model_fields_set}}
            )
            for f in self.feeds
        ]


def _listener_fields(cfg: ListenerConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in ListenerConfig.model_fields}


def ssl_reason(exc: BaseException) -> str:
    """Why a TLS step failed, for logs and config errors: OpenSSL's short reason if it gave one."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
