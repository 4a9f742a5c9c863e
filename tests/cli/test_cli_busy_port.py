"""Issue 10 part 3: every command that binds a socket, with a real socket holding its port, says which
protocol, address and port are busy and what to do (its own option and configuration key), in one line on
stderr (exit 1, no traceback). Bootstrap nodes are loopback addresses where nothing answers: nothing leaves
127.0.0.0/8, and the commands stop at the bind anyway."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2pwatch import netguard
from p2pwatch.errors import BindError, P2PWatchError
from tests.cli.test_cli_commands import one_line_error, run
from tests.conftest import loopback_address

INFOHASH = "ab" * 20


@pytest.fixture
def held_udp() -> Iterator[tuple[str, int]]:
    """Another program's UDP socket on a fresh 127.0.0.x (as a BitTorrent client holds 6881)."""
    ip = loopback_address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        yield ip, sock.getsockname()[1]


@pytest.fixture
def held_tcp() -> Iterator[int]:
    """Another program listening on a TCP port of 127.0.0.1 (where the metrics endpoint listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _dead_bootstrap() -> str:
    return f"{loopback_address()}:1"


@pytest.mark.parametrize("command", [
    ["dht", "peers", INFOHASH, "--timeout", "5"],
    ["dht", "sample", "--duration", "1"],
    ["lookup", INFOHASH, "--timeout", "5"],
])
def test_dht_commands_name_the_busy_port_and_bind(tmp_path: Path, held_udp: tuple[str, int],
                                                  command: list[str]) -> None:
    ip, port = held_udp
    result = run(tmp_path / "home", *command, "--bind", f"{ip}:{port}", "--bootstrap", _dead_bootstrap(),
                 "--allow-local")
    one_line_error(result, 1, f"cannot bind UDP {ip}:{port} for the DHT node: the port is already in use")
    line = result.stderr.strip()
    assert "pass --bind IP:PORT with an address of this machine and a free port" in line
    assert "Address already in use" not in line  # the bare OS text is what the issue complained about


@pytest.mark.parametrize("command", [["dht", "peers", INFOHASH, "--timeout", "5"],
                                     ["dht", "sample", "--duration", "1"]])
def test_busy_ipv6_port_names_bind6(tmp_path: Path, command: list[str]) -> None:
    """The IPv6 node of --bind6 (BEP 32) has its own socket; its busy port names --bind6, not --bind."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as held:
        held.bind(("::1", 0))
        port = held.getsockname()[1]
        result = run(tmp_path / "home", *command, "--bind", f"{loopback_address()}:0", "--bind6", f"[::1]:{port}",
                     "--bootstrap", _dead_bootstrap(), "--bootstrap", "[::1]:1", "--allow-local")
    one_line_error(result, 1, f"cannot bind UDP [::1]:{port} for the IPv6 DHT node: the port is already in use")
    assert "pass --bind6 [IPV6]:PORT with an IPv6 address of this machine" in result.stderr


def test_monitor_names_the_dht_port_and_its_config_key(tmp_path: Path, held_udp: tuple[str, int]) -> None:
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    ip, port = held_udp
    result = run(home, "monitor", "--duration", "5", "--no-crawl", "--bind", f"{ip}:{port}",
                 "--bootstrap", _dead_bootstrap(), "--allow-local")
    one_line_error(result, 1, f"cannot bind UDP {ip}:{port} for the DHT node: the port is already in use")
    line = result.stderr.strip()
    assert "--bind IP:PORT" in line and "under [dht] in the configuration file" in line
    assert "P2PWATCH_DHT_PORT" in line


def test_monitor_port_from_the_configuration_file(tmp_path: Path, held_udp: tuple[str, int]) -> None:
    """The busy port came from [dht] port, not from --bind: the same line, naming that key."""
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    ip, port = held_udp
    config = tmp_path / "p2pwatch.toml"
    config.write_text(f'[dht]\nbind = "{ip}"\nport = {port}\nbootstrap = ["{_dead_bootstrap()}"]\n'
                      "allow_local = true\n\n[crawler]\nenabled = false\n")
    result = run(home, "--config", str(config), "monitor", "--duration", "5")
    one_line_error(result, 1, f"cannot bind UDP {ip}:{port} for the DHT node")
    assert "set bind and port under [dht]" in result.stderr


def test_monitor_names_the_busy_metrics_port(tmp_path: Path, held_tcp: int) -> None:
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    result = run(home, "monitor", "--duration", "5", "--no-crawl", "--bind", f"{loopback_address()}:0",
                 "--metrics-port", str(held_tcp), "--bootstrap", _dead_bootstrap(), "--allow-local")
    one_line_error(result, 1, f"cannot bind TCP 127.0.0.1:{held_tcp} for the metrics endpoint: the port is already "
                              "in use")
    assert "pass --metrics-port PORT with a free port, or change metrics_port in the configuration file" in (
        result.stderr)


def test_probe_tracker_with_an_address_not_of_this_machine(tmp_path: Path) -> None:
    """probe binds port 0 only (it never listens), so its port cannot be busy; a --bind address that is not
    this machine's (192.0.2.1, TEST-NET-1, RFC 5737) is its bind failure. No datagram is sent."""
    result = run(tmp_path / "home", "probe", "tracker", f"udp://{loopback_address()}:1/announce", INFOHASH,
                 "--bind", "192.0.2.1", "--allow-local", "--timeout", "5")
    one_line_error(result, 1, "cannot bind UDP 192.0.2.1:0 for the UDP tracker request: 192.0.2.1 is not an "
                              "address of this machine")
    assert "pass --bind with an address of this machine, or leave --bind out" in result.stderr


def test_dht_bind_to_an_address_not_of_this_machine(tmp_path: Path) -> None:
    result = run(tmp_path / "home", "dht", "peers", INFOHASH, "--bind", "192.0.2.1:6881", "--bootstrap",
                 _dead_bootstrap(), "--allow-local", "--timeout", "5")
    one_line_error(result, 1, "cannot bind UDP 192.0.2.1:6881 for the DHT node: 192.0.2.1 is not an address of "
                              "this machine")


def test_bind_error_is_typed_and_still_an_os_error(held_udp: tuple[str, int]) -> None:
    ip, port = held_udp

    async def bind() -> None:
        await netguard.open_udp_socket(ip, port, purpose="a test")

    with pytest.raises(BindError) as caught:
        trio.run(bind)
    exc = caught.value
    assert isinstance(exc, P2PWatchError) and isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
    assert (exc.protocol, exc.host, exc.port, exc.purpose) == ("UDP", ip, port, "a test")
    assert str(exc) == (f"cannot bind UDP {ip}:{port} for a test: the port is already in use by another program "
                        "(perhaps another BitTorrent client); choose another address or port")
    privileged = BindError("TCP", "::1", 80, PermissionError(errno.EACCES, "Permission denied"))
    assert str(privileged).startswith("cannot bind TCP [::1]:80: permission denied (ports below 1024 need root")


def test_probe_peer_with_an_address_not_of_this_machine(tmp_path: Path) -> None:
    """Before this check, the probe reported "all attempts to connect ... failed", blaming the peer."""
    result = run(tmp_path / "home", "probe", "peer", f"{loopback_address()}:1", INFOHASH, "--bind", "192.0.2.1",
                 "--allow-local", "--timeout", "5")
    one_line_error(result, 1, "cannot bind TCP 192.0.2.1:0 for connections to the peer: 192.0.2.1 is not an "
                              "address of this machine; pass --bind with an address of this machine")


def test_the_example_in_cli_md_is_what_monitor_prints() -> None:
    from p2pwatch.cli.options import MONITOR_DHT_BIND_REMEDY
    from p2pwatch.dht.node import SOCKET_PURPOSE

    docs = (Path(__file__).resolve().parents[2] / "docs" / "CLI.md").read_text(encoding="utf-8")
    example = next(line for line in docs.splitlines() if line.startswith("p2pwatch: error: cannot bind UDP"))
    busy = BindError("UDP", "0.0.0.0", 6881, OSError(errno.EADDRINUSE, "Address already in use"),
                     purpose=SOCKET_PURPOSE, remedy=MONITOR_DHT_BIND_REMEDY)
    assert example == f"p2pwatch: error: {busy}"
