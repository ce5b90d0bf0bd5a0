"""The de-identification section of the configuration (``deid``): the policy, the keys, the
leak check."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class DeidConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = Field(
        None,
        description=(
            "De-identification policy: a shipped profile by name (kr-pseudonym, safe-harbor, "
            "limited) or the path of a policy YAML file; the kr-pseudonym profile if unset."
        ),
    )
    key: SecretStr | None = Field(
        None,
        description=(
            "Pseudonymization key (HL7BUS_DEID_KEY) with the id key_id. Keep it apart from the "
            "research data: whoever holds it can link pseudonyms back to patients."
        ),
    )
    key_file: Path | None = Field(None, description="File holding the key (instead of key).")
    key_id: str = Field(
        "k1",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Id of the active key: the one that makes pseudonyms and date shifts, "
        "stamped on research events as pseudonym_key_id.",
    )
    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "More keys by id, for rotation (the previous key stays configured while consumers "
            "move) and per-sink keys; key_id picks the active one."
        ),
    )
    key_files: dict[str, Path] = Field(
        default_factory=dict, description="More keys by id, each read from a file."
    )
    sink_keys: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Sink name -> key id, so that two sinks get pseudonyms that cannot be linked "
            "(load_key(cfg, sink=...)); sinks not named use key_id."
        ),
    )
    leak_check: bool = Field(
        True, description="Block any event whose output contains a source identifier value."
    )
