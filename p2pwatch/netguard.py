"""netguard: the one network policy every datagram and connection passes through (DESIGN.md, principle 7).

A :class:`NetworkPolicy` allows some destination networks and refuses others; refused destinations raise
:class:`~p2pwatch.errors.NetworkRefused`. The process-wide policy comes from :func:`current_policy`; it is
read from the environment variable ``P2PWATCH_NETGUARD_ALLOW`` (comma-separated CIDRs) when set, so tests
and their subprocesses can be confined to ``127.0.0.0/8``.

The separate question of which *node and peer addresses* we accept into routing tables (non-global
addresses are dropped unless ``allow_local``) is :func:`is_acceptable_remote`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from p2pwatch.bounded import remember
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import BindError, NetworkRefused

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ENV_ALLOW = "P2PWATCH_NETGUARD_ALLOW"
LOOPBACK_ONLY = ("127.0.0.0/8", "::1/128")  # IPv4 loopback, and the IPv6 loopback address alone
EVERYWHERE = ("0.0.0.0/0", "::/0")
MAX_CACHED_VERDICTS = 65_536


def _networks(specs: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(s, strict=False) if isinstance(s, str) else s for s in specs)


@dataclass(frozen=True)
class NetworkPolicy:
    """Destinations in ``allowed`` and not in ``refused`` may be contacted."""

    allowed: tuple[IPNetwork, ...] = field(default_factory=lambda: _networks(EVERYWHERE))
    refused: tuple[IPNetwork, ...] = ()
    #: verdicts for address strings already checked (the policy is immutable, so a verdict never changes);
    #: every datagram is still checked, the DHT's hot path just skips re-parsing the same address
    _verdicts: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_specs(cls, allowed: Iterable[str], refused: Iterable[str] = ()) -> NetworkPolicy:
        return cls(_networks(allowed), _networks(refused))

    @classmethod
    def loopback_only(cls) -> NetworkPolicy:
        return cls.from_specs(LOOPBACK_ONLY)

    def allows(self, ip: str | IPAddress) -> bool:
        if isinstance(ip, str):
            verdict = self._verdicts.get(ip)
            if verdict is None:
                verdict = remember(self._verdicts, ip, self._decide(ip), MAX_CACHED_VERDICTS)
            return verdict
        return self._decide(ip)

    def _decide(self, ip: str | IPAddress) -> bool:
        try:
            addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.refused):
            return False
        return any(addr.version == net.version and addr in net for net in self.allowed)

    def check(self, ip: str | IPAddress, port: int | None = None) -> None:
        """Raise :class:`NetworkRefused` unless ``ip`` may be contacted."""
        if not self.allows(ip):
            where = format_addr((str(ip), port)) if port is not None else str(ip)
            raise NetworkRefused(f"network policy refuses {where}")


def _policy_from_env() -> NetworkPolicy:
    spec = os.environ.get(ENV_ALLOW, "").strip()
    if spec:
        return NetworkPolicy.from_specs([s.strip() for s in spec.split(",") if s.strip()])
    return NetworkPolicy()


_policy: NetworkPolicy | None = None


def current_policy() -> NetworkPolicy:
    """The process-wide policy (from ``P2PWATCH_NETGUARD_ALLOW`` unless :func:`set_policy` was called)."""
    global _policy
    if _policy is None:
        _policy = _policy_from_env()
    return _policy


def set_policy(policy: NetworkPolicy) -> None:
    global _policy
    _policy = policy


@contextmanager
def policy_scope(policy: NetworkPolicy) -> Iterator[None]:
    """Use ``policy`` inside the block, then restore the previous one."""
    global _policy
    previous = current_policy()
    _policy = policy
    try:
        yield
    finally:
        _policy = previous


def is_acceptable_remote(ip: str, allow_local: bool) -> bool:
    """May a node or peer at ``ip`` enter a routing table or peer list? Non-global ones only if allowed."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.is_unspecified or addr.is_multicast:
        return False
    return allow_local or addr.is_global


class GuardedUDPSocket:
    """A UDP socket whose every send is checked against the current policy.

    Besides the awaitable ``sendto``/``recvfrom`` it offers ``try_sendto``/``try_recvfrom``, which never
    block, for hot loops that batch several datagrams per trio checkpoint (the DHT node driver).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._raw = sock
        self._sock = trio.socket.from_stdlib_socket(sock)

    def getsockname(self) -> tuple[str, int]:
        name = self._raw.getsockname()
        return name[0], name[1]

    def fileno(self) -> int:
        return self._raw.fileno()

    async def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        current_policy().check(addr[0], addr[1])
        await self._sock.sendto(data, addr)

    def try_sendto(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Send without waiting; False when the socket buffer is full (then await :meth:`sendto`)."""
        current_policy().check(addr[0], addr[1])
        try:
            self._raw.sendto(data, addr)
        except BlockingIOError:
            return False
        return True

    async def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        data, addr = await self._sock.recvfrom(size)
        return data, (addr[0], addr[1])

    def try_recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]] | None:
        """A datagram if one is waiting, else None (then ``await wait_readable()``)."""
        try:
            data, addr = self._raw.recvfrom(size)
        except (BlockingIOError, InterruptedError):
            return None
        return data, (addr[0], addr[1])

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self._raw)

    def close(self) -> None:
        self._sock.close()


async def open_udp_socket(host: str, port: int = 0, *, purpose: str = "") -> GuardedUDPSocket:
    """Bind a UDP socket on ``host:port`` (port 0 picks a free one); :class:`~p2pwatch.errors.BindError`
    (naming the address, the port and ``purpose``) when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError("UDP", host, port, exc, purpose=purpose) from exc
    await trio.lowlevel.checkpoint()
    return GuardedUDPSocket(sock)


def check_local_address(host: str, *, purpose: str = "") -> None:
    """Raise :class:`~p2pwatch.errors.BindError` unless TCP connections can leave from ``host`` (an address of
    this machine): a connection bound to a foreign address fails as if the peer were unreachable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            raise BindError("TCP", host, 0, exc, purpose=purpose) from exc


def source_address_for(host: str, local_address: str | None) -> str | None:
    """The source address a connection to ``host`` leaves from: ``local_address`` when it is of ``host``'s
    family, else None (the system's choice). Dual stack (BEP 32): ``--bind`` names the IPv4 source address; a
    connection to an IPv6 peer (or the converse) cannot leave from it."""
    if local_address is not None and (":" in local_address) != (":" in host):
        return None
    return local_address


async def open_tcp_stream(
    host: str, port: int, *, local_address: str | None = None
) -> trio.SocketStream:
    """Connect to a literal IP address after the policy allows it (no DNS here: names are refused)."""
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise NetworkRefused(f"netguard connects to IP addresses only, not {host!r}") from exc
    current_policy().check(host, port)
    return await trio.open_tcp_stream(host, port, local_address=source_address_for(host, local_address))
