from __future__ import annotations

from pathlib import Path

import pytest

from p2pwatch.config import MonitorConfig, load_config
from p2pwatch.errors import ConfigError


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[dht]\nport = 7000\nbootstrap = ["127.0.0.2:1"]\n[watcher]\ninterval = 60\n')
    config = load_config(path, environ={"P2PWATCH_DHT_PORT": "7001", "P2PWATCH_WATCHER_TRACKERS": "udp://a,udp://b"},
                         overrides={"dht.allow_local": True})
    assert config.dht.port == 7001
    assert config.dht.bootstrap == ["127.0.0.2:1"]
    assert config.watcher.interval == 60.0
    assert config.watcher.trackers == ["udp://a", "udp://b"]
    assert config.dht.allow_local is True
    assert config.digest() != MonitorConfig().digest()


@pytest.mark.parametrize("text, needle", [
    ("[dht]\nprot = 1\n", "dht.prot"),
    ("[dht]\nport = 'x'\n", "integer"),
    ("[dht\n", "TOML"),
    ("[nosuch]\na=1\n", "nosuch"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, environ={})


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "config.example.toml"
    config = load_config(example, environ={})
    assert config.dht.port == MonitorConfig().dht.port


def test_join_refresh_reaches_the_node_config(tmp_path: Path) -> None:
    from p2pwatch.dht.node_types import config_from_settings

    path = tmp_path / "p.toml"
    path.write_text("[dht]\njoin_refresh = 3\n")
    assert config_from_settings(load_config(path, environ={}).dht).join_refresh == 3
    assert config_from_settings(MonitorConfig().dht).join_refresh == 8
