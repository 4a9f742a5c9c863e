"""BEP 11 peer exchange (``ut_pex``, a BEP 10 extension message): the sans-IO codec, the bounded per-connection
collector, and the policy that turns what peers list into connection candidates.

A ``ut_pex`` payload is a bencoded dictionary: ``added`` (compact IPv4 contacts, 6 bytes each), ``added.f``
(one flag byte per added contact), ``added6``/``added6.f`` (compact IPv6, 18 bytes), ``dropped`` and
``dropped6``. :func:`decode_pex` checks it strictly and returns a :class:`PexMessage`;
:func:`encode_pex` writes one (our tests and scripted peers use it; the probe never sends PEX, see below).

What a peer lists is a claim (evidence level 0, DESIGN.md), and BEP 11's security section warns that PEX can
be used to flood a swarm with bogus peers or to aim connection attempts at a victim. Hence:

* decoding is bounded: the payload is at most ``limits.MAX_EXTENDED_MESSAGE`` (the wire parser enforces it),
  at most ``limits.MAX_PEX_PEERS_PER_MESSAGE`` added contacts of one message are kept (the rest are counted
  as ``truncated``), and :class:`PexCollector` keeps at most ``limits.MAX_PEX_PEERS_PER_PEER`` contacts and
  ``limits.MAX_PEX_MESSAGES_PER_PEER`` messages from one connection;
* :func:`pex_candidates` never lets one reporter fill the candidate list (round robin over reporters, a
  per-reporter cap), takes one port per IP address (BEP 11: "duplicate IP addresses ... should be
  ignored"), drops non-global addresses unless local networks are allowed, and drops whatever the netguard
  policy refuses, so a listed address is never contacted just because a peer named it.

Departures, all on the strict side: a contact string whose length is not a multiple of the contact size, or
an ``added.f`` whose length differs from the number of added contacts, rejects the whole message
(:class:`PexError`; libtorrent silently truncates or ignores the flags); a message with none of the four
contact fields is rejected as BEP 11 requires. Contacts with port 0 and the unspecified or multicast
addresses are skipped and counted. IPv4-mapped IPv6 contacts are read as IPv4 (:func:`compact.unmap`; the
contact layouts are :mod:`p2pwatch.torrent.compact`'s, which keeps the mapped form as IPv6). The probe advertises
``ut_pex`` so that peers send it, but never sends PEX itself: it has no swarm to report, and it does not
give its listen port, so peers do not list it to others.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any

from p2pwatch import limits, netguard
from p2pwatch.errors import CompactAddressError, DecodeError
from p2pwatch.probe.wire_messages import UT_PEX, ExtensionError
from p2pwatch.torrent import bencoding, compact

__all__ = [
    "UT_PEX", "PexCollector", "PexError", "PexFlags", "PexMessage", "PexPeer", "decode_pex", "encode_pex",
    "pex_candidates",
]

Endpoint = tuple[str, int]


class PexFlags(IntFlag):
    """BEP 11 ``added.f`` bits."""

    ENCRYPTION = 0x01  # prefers encryption (the ``e`` field of its extension handshake)
    SEED = 0x02  # seed / upload only
    UTP = 0x04  # supports uTP
    HOLEPUNCH = 0x08  # announced ut_holepunch
    REACHABLE = 0x10  # the reporter connected out to it, so it accepts connections


class PexError(ExtensionError):
    """A ``ut_pex`` message is malformed (not a dictionary, bad contact strings, mismatched flags)."""


@dataclass(frozen=True, slots=True)
class PexPeer:
    ip: str
    port: int
    flags: int = 0  # PexFlags bits as sent (unknown bits kept)

    @property
    def endpoint(self) -> Endpoint:
        return (self.ip, self.port)

    @property
    def seed(self) -> bool:
        return bool(self.flags & PexFlags.SEED)

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "port": self.port, "flags": self.flags}


@dataclass(frozen=True, slots=True)
class PexMessage:
    added: tuple[PexPeer, ...] = ()
    dropped: tuple[Endpoint, ...] = ()
    truncated: int = 0  # added or dropped contacts beyond MAX_PEX_PEERS_PER_MESSAGE, not kept
    skipped: int = 0  # contacts with port 0, the unspecified or a multicast address, or repeated


def _contacts(raw: bytes, size: int, name: str) -> list[Endpoint]:
    try:
        found = compact.decode_peer_list(raw, ipv6=size == compact.PEER6_LEN)
    except CompactAddressError as exc:
        raise PexError(f"ut_pex {name!r}: {exc}") from exc
    if size == compact.PEER4_LEN:
        return found
    return [(compact.unmap(ip), port) for ip, port in found]  # the mapped form counts as the IPv4 address


def _usable(ip: str, port: int) -> bool:
    if port == 0:
        return False
    addr = ipaddress.ip_address(ip)
    return not (addr.is_unspecified or addr.is_multicast)


def _field(d: Mapping[bytes, Any], key: bytes) -> bytes | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise PexError(f"ut_pex {key.decode()!r} is not a byte string")
    return value


def decode_pex(payload: bytes, *, max_peers: int = limits.MAX_PEX_PEERS_PER_MESSAGE) -> PexMessage:
    """Decode one ``ut_pex`` payload (after the BEP 10 header); :class:`PexError` when malformed.

    At most ``max_peers`` added contacts (IPv4 first, then IPv6) and ``max_peers`` dropped ones are kept.
    """
    try:
        d = bencoding.decode(payload, max_size=limits.MAX_EXTENDED_MESSAGE, max_depth=4)
    except DecodeError as exc:
        raise PexError(f"ut_pex message is not valid bencoding: {exc}") from exc
    if not isinstance(d, dict):
        raise PexError("ut_pex message is not a dictionary")
    added, added_f = _field(d, b"added"), _field(d, b"added.f")
    added6, added6_f = _field(d, b"added6"), _field(d, b"added6.f")
    dropped, dropped6 = _field(d, b"dropped"), _field(d, b"dropped6")
    if added is None and added6 is None and dropped is None and dropped6 is None:
        raise PexError("ut_pex message has none of added, added6, dropped, dropped6")
    contacts: list[tuple[Endpoint, int]] = []
    for raw, flags, size, name in ((added, added_f, 6, "added"), (added6, added6_f, 18, "added6")):
        if raw is None:
            if flags:
                raise PexError(f"ut_pex has {name}.f without {name}")
            continue
        found = _contacts(raw, size, name)
        if flags is not None and len(flags) != len(found):
            raise PexError(f"ut_pex {name}.f has {len(flags)} flag bytes for {len(found)} contacts")
        contacts += [(c, flags[i] if flags is not None else 0) for i, c in enumerate(found)]
    gone = _contacts(dropped or b"", 6, "dropped") + _contacts(dropped6 or b"", 18, "dropped6")
    seen: set[Endpoint] = set()
    kept: list[PexPeer] = []
    skipped = truncated = 0
    for endpoint, flag in contacts:
        if endpoint in seen or not _usable(*endpoint):
            skipped += 1
            continue
        seen.add(endpoint)
        if len(kept) >= max_peers:
            truncated += 1
            continue
        kept.append(PexPeer(endpoint[0], endpoint[1], flag))
    unique_gone = list(dict.fromkeys(gone))
    truncated += max(0, len(unique_gone) - max_peers)
    return PexMessage(tuple(kept), tuple(unique_gone[:max_peers]), truncated, skipped)


def _pack(endpoint: Endpoint) -> tuple[int, bytes]:
    packed = compact.encode_peer(*endpoint)  # LocalProtocolError for a bad address or port
    return (4 if len(packed) == compact.PEER4_LEN else 6), packed


def encode_pex(added: Sequence[PexPeer] = (), dropped: Sequence[Endpoint] = ()) -> bytes:
    """A ``ut_pex`` payload (the four contact fields always present, as libtorrent writes them)."""
    d: dict[bytes, bytes] = {b"added": b"", b"added.f": b"", b"added6": b"", b"added6.f": b"",
                             b"dropped": b"", b"dropped6": b""}
    for peer in added:
        version, packed = _pack(peer.endpoint)
        key = b"added" if version == 4 else b"added6"
        d[key] += packed
        d[key + b".f"] += bytes([peer.flags & 0xFF])
    for endpoint in dropped:
        version, packed = _pack(endpoint)
        d[b"dropped" if version == 4 else b"dropped6"] += packed
    return bencoding.encode(d)


@dataclass
class PexCollector:
    """What one peer listed over ``ut_pex`` during one connection, bounded (sans-IO; the probe feeds it).

    Contacts are kept in the order first listed; a contact later dropped stays (it *was* listed: the claim
    is what we record) and the drop is counted.
    """

    max_peers: int = limits.MAX_PEX_PEERS_PER_PEER
    max_messages: int = limits.MAX_PEX_MESSAGES_PER_PEER
    peers: dict[Endpoint, PexPeer] = field(default_factory=dict)
    messages: int = 0
    ignored_messages: int = 0  # beyond max_messages, not decoded
    errors: int = 0
    dropped: int = 0
    overflow: int = 0  # contacts not kept because of a per-message or per-peer cap

    def feed(self, payload: bytes) -> PexMessage | None:
        """Decode and absorb one message; None when past ``max_messages``. Raises :class:`PexError`."""
        if self.messages >= self.max_messages:
            self.ignored_messages += 1
            return None
        self.messages += 1
        try:
            message = decode_pex(payload)
        except PexError:
            self.errors += 1
            raise
        self.overflow += message.truncated
        self.dropped += len(message.dropped)
        for peer in message.added:
            if peer.endpoint in self.peers:
                continue
            if len(self.peers) >= self.max_peers:
                self.overflow += 1
                continue
            self.peers[peer.endpoint] = peer
        return message

    def absorb(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """:meth:`feed` for a transcript: ``("ut_pex", detail)``, or ``("ut_pex_error", ...)`` when malformed
        or ignored; never raises for what the peer sent."""
        try:
            message = self.feed(payload)
        except PexError as exc:
            return "ut_pex_error", {"message": str(exc)}
        if message is None:
            return "ut_pex_error", {"message": f"more than {self.max_messages} ut_pex messages, ignored"}
        return "ut_pex", {"added": [p.to_json() for p in message.added], "dropped": len(message.dropped),
                          "truncated": message.truncated, "skipped": message.skipped}


def pex_candidates(reports: Iterable[tuple[Endpoint, Iterable[PexPeer]]], *, known: Iterable[Endpoint] = (),
                   allow_local: bool = False, policy: netguard.NetworkPolicy | None = None,
                   per_reporter: int = limits.MAX_PEX_CANDIDATES_PER_REPORTER,
                   limit: int | None = None) -> list[tuple[PexPeer, Endpoint]]:
    """Connection candidates from PEX reports ``(reporter, listed peers)``, as ``(peer, reporter)`` pairs.

    Skipped: endpoints in ``known`` and any other port of a known or already chosen IP address, addresses
    :func:`netguard.is_acceptable_remote` rejects (non-global ones unless ``allow_local``), and addresses the
    netguard ``policy`` (default: the current one) refuses. Seeds come first within a reporter; reporters take
    turns, each giving at most ``per_reporter``; at most ``limit`` in all.
    """
    policy = policy or netguard.current_policy()
    known = set(known)
    taken_ips = {ip for ip, _ in known}
    queues: list[tuple[Endpoint, list[PexPeer]]] = []
    for reporter, listed in reports:
        usable = [p for p in listed if netguard.is_acceptable_remote(p.ip, allow_local) and policy.allows(p.ip)
                  and p.endpoint not in known and p.ip != reporter[0]]
        usable.sort(key=lambda p: not p.seed)  # stable: seeds first, otherwise as listed
        queues.append((reporter, usable[:per_reporter]))
    chosen: list[tuple[PexPeer, Endpoint]] = []
    while any(q for _, q in queues):
        for reporter, queue in queues:
            while queue:
                peer = queue.pop(0)
                if peer.ip in taken_ips:
                    continue
                taken_ips.add(peer.ip)
                chosen.append((peer, reporter))
                if limit is not None and len(chosen) >= limit:
                    return chosen
                break
    return chosen
