"""A pseudonymization key that cannot be used: `hl7bus deid` and `hl7bus worker` stop with exit
code 2 and a message that says what is wrong (too short, unreadable, missing) and names the key
id and the setting, never key material. `hl7bus deid` alone runs with an ephemeral key when no
key is configured at all (tests/test_deid_profiles.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.streams.deid import (
    MIN_KEY_BYTES,
    DeidConfig,
    KeyConfigError,
    NoKeyError,
    PolicyError,
    load_key,
)

SOURCE = Path(__file__).parent / "golden" / "oru_r01.hl7"
SHORT = "short-secret"  # 12 bytes
runner = CliRunner()


def _run(args: list[str], **env: str) -> tuple[int, str]:
    """Exit code and output (whitespace collapsed) of the CLI, with only ``env``'s deid
    settings: the caller's HL7BUS_DEID_* and HL7BUS_CONFIG do not leak in."""
    cleared: Mapping[str, str | None] = {
        name: None
        for name in (
            "HL7BUS_CONFIG",
            "HL7BUS_DEID_KEY",
            "HL7BUS_DEID_KEY_FILE",
            "HL7BUS_DEID_KEY_ID",
            "HL7BUS_DEID_KEYS",
            "HL7BUS_DEID_KEY_FILES",
            "HL7BUS_DEID_SINK_KEYS",
        )
    }
    result = runner.invoke(app, args, env={**cleared, **env})
    return result.exit_code, " ".join(result.output.split())


COMMANDS = {"deid": ["deid", str(SOURCE)], "worker": ["worker"]}


def test_key_errors_are_not_policy_errors() -> None:
    assert not issubclass(KeyConfigError, PolicyError)
    assert issubclass(NoKeyError, KeyConfigError)


def test_load_key_names_the_setting_and_the_key_id(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError) as short:
        load_key(DeidConfig(key=SHORT, key_id="k7"))
    text = str(short.value)
    assert text.startswith("deid.key (HL7BUS_DEID_KEY): key 'k7' is 12 bytes")
    assert f"at least {MIN_KEY_BYTES} bytes" in text and SHORT not in text

    short_file = tmp_path / "short.key"
    short_file.write_text(SHORT + "\n")
    with pytest.raises(KeyConfigError, match=r"^deid\.key_file: key 'k1' is 12 bytes"):
        load_key(DeidConfig(key_file=short_file))
    with pytest.raises(KeyConfigError, match=r"^deid\.key_files\.old: key 'old' is 12 bytes"):
        load_key(DeidConfig(key="k" * 32, key_files={"old": short_file}))

    missing = tmp_path / "missing.key"
    with pytest.raises(KeyConfigError) as unreadable:
        load_key(DeidConfig(key_file=missing))
    assert not isinstance(unreadable.value, NoKeyError)
    assert str(unreadable.value) == (
        f"deid.key_file: cannot read key 'k1' from {missing}: No such file or directory"
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_too_short_key(command: str, tmp_path: Path) -> None:
    code, out = _run(COMMANDS[command], HL7BUS_DEID_KEY=SHORT)
    assert code == 2, out
    assert "deid.key (HL7BUS_DEID_KEY): key 'k1' is 12 bytes; it must be at least 16 bytes" in out
    assert SHORT not in out
    assert "ephemeral" not in out and "no deid key" not in out

    key_file = tmp_path / "k.key"
    key_file.write_text(SHORT + "\n")
    code, out = _run(COMMANDS[command], HL7BUS_DEID_KEY_FILE=str(key_file))
    assert code == 2, out
    assert "deid.key_file: key 'k1' is 12 bytes; it must be at least 16 bytes" in out
    assert SHORT not in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_key_file(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    code, out = _run(COMMANDS[command], HL7BUS_DEID_KEY_FILE=str(missing))
    assert code == 2, out
    assert f"deid.key_file: cannot read key 'k1' from {missing}: No such file or directory" in out
    assert "ephemeral" not in out


def test_no_key_at_all() -> None:
    code, out = _run(COMMANDS["worker"])
    assert code == 2, out
    assert "deid: no pseudonymization key; set HL7BUS_DEID_KEY or deid.key_file" in out
    # The offline review runs anyway, with a key of its own (its pseudonyms are not the
    # worker's) and a warning.
    code, out = _run([*COMMANDS["deid"], "--json"])
    assert code == 0, out
    assert "no deid key configured: using an ephemeral key" in out


def test_sink_without_a_key(tmp_path: Path) -> None:
    config = tmp_path / "hl7bus.yaml"
    config.write_text("deid:\n  sink_keys:\n    lake: lake1\n")
    key = "0123456789abcdef0123456789abcdef"
    code, out = _run(
        ["deid", str(SOURCE), "--sink", "lake", "-c", str(config)], HL7BUS_DEID_KEY=key
    )
    assert code == 2, out
    assert "deid.sink_keys.lake: no key with id 'lake1'" in out
    assert key not in out and "ephemeral" not in out
