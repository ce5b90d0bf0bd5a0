"""The `mllp` config section: one feed by default, several with `feeds`; errors name the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.ops import config
from hl7bus.schemas.datafile import DataFileError

pytestmark = pytest.mark.usefixtures("clean_env")


def load(tmp_path: Path, text: str) -> MllpConfig:
    path = tmp_path / "hl7bus.yaml"
    path.write_text(text, encoding="utf-8")
    return config.load(path).mllp


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(DataFileError) as err:
        load(tmp_path, text)
    return str(err.value)


def test_single_feed_is_the_default(tmp_path: Path) -> None:
    [one] = load(tmp_path, "mllp: {port: 2600, feed: adt, ack_mode: original}\n").listeners()
    assert (one.feed, one.port, one.ack_mode, one.tls) == ("adt", 2600, "original", None)
    [default] = MllpConfig().listeners()
    assert (default.feed, default.port) == ("default", 2575)
    assert ipaddress.ip_address("192.0.2.1") in default.allowed_networks[0]


def test_feeds_inherit_the_section(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
mllp:
  host: 0.0.0.0
  max_frame_bytes: 65536
  allowed_networks: [10.0.0.0/8]
  feeds:
    - {feed: adt, port: 2575}
    - feed: lab
      port: 2576
      charset: KS X 1001
      ack_mode: enhanced
      allowed_networks: [192.168.0.0/16, "2001:db8::/32"]
""",
    )
    adt, lab = cfg.listeners()
    assert (adt.feed, adt.host, adt.port, adt.max_frame_bytes) == ("adt", "0.0.0.0", 2575, 65536)
    assert [str(n) for n in adt.allowed_networks] == ["10.0.0.0/8"]
    assert adt.charset is None and adt.ack_mode == "auto"
    assert (lab.feed, lab.host, lab.port, lab.charset) == ("lab", "0.0.0.0", 2576, "KS X 1001")
    assert lab.ack_mode == "enhanced" and lab.max_frame_bytes == 65536
    assert [str(n) for n in lab.allowed_networks] == ["192.168.0.0/16", "2001:db8::/32"]


def test_feeds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HL7BUS_MLLP_FEEDS", '[{"feed": "a", "port": 3001}, {"feed": "b", "port": 0}]'
    )
    monkeypatch.setenv("HL7BUS_MLLP_ACK_MODE", "original")
    a, b = config.load(None).mllp.listeners()
    assert (a.feed, a.port, a.ack_mode, b.feed, b.ack_mode) == (
        "a",
        3001,
        "original",
        "b",
        "original",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mllp:\n  feeds:\n    - {feed: a, port: 1, prot: 2}\n",
            ["mllp.feeds.0.prot: unknown key", "allowed here: host, port, feed"],
        ),
        ("mllp:\n  feeds:\n    - {feed: a}\n", ["mllp.feeds.0.port = (missing)"]),
        (
            "mllp:\n  feeds:\n    - {feed: a, port: 1}\n    - {feed: a, port: 2}\n",
            ["feeds[1].feed 'a' is also the name of feeds[0]"],
        ),
        (
            "mllp:\n  feeds:\n    - {feed: a, port: 7}\n    - {feed: b, port: 7}\n",
            ["feeds[1].port 7 is also the port of feeds[0]"],
        ),
        ("mllp:\n  allowed_networks: [10.0.0.1/8]\n", ["mllp.allowed_networks.0", "10.0.0.1/8"]),
        ("mllp:\n  allowed_networks: []\n", ["mllp.allowed_networks", "at least 1 item"]),
        ("mllp:\n  ack_mode: sometimes\n", ["mllp.ack_mode = 'sometimes'", "'enhanced'"]),
        (
            "mllp:\n  feeds:\n    - {feed: a, port: 1, charset: KLINGON}\n",
            ["mllp.feeds.0.charset = 'KLINGON'", "unknown character set"],
        ),
        ("mllp:\n  tls: {cert: /nonexistent.pem}\n", ["mllp.tls.cert", "mllp.tls.key"]),
        ("mllp:\n  tls: {cert: 1, key: 2, ciphers: x}\n", ["mllp.tls.ciphers: unknown key"]),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = problems(tmp_path, text)
    for part in expected:
        assert part in message, message


def test_narrowed_for_the_command_line() -> None:
    single = MllpConfig(port=2575, feed="default")
    [one] = single.narrowed("adt", "0.0.0.0", 3000).listeners()
    assert (one.feed, one.host, one.port) == ("adt", "0.0.0.0", 3000)

    many = MllpConfig.model_validate(
        {"charset": "cp949", "feeds": [{"feed": "a", "port": 1}, {"feed": "b", "port": 2}]}
    )
    [b] = many.narrowed("b", None, 4000).listeners()
    assert (b.feed, b.port, b.charset) == ("b", 4000, "cp949")
    assert [f.feed for f in many.narrowed().listeners()] == ["a", "b"]
    with pytest.raises(ValueError, match=r"--feed 'c' is not in mllp\.feeds"):
        many.narrowed("c")
    with pytest.raises(ValueError, match="--listen needs one feed"):
        many.narrowed(None, "127.0.0.1", 5)
