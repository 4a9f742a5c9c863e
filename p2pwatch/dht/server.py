"""The answering side of a BEP 5 node, sans-IO: tokens, the bounded peer store, and query handling.

* Tokens (BEP 5): ``SHA-1(secret || ip)[:8]``; the secret rotates every 5 minutes and the previous one is
  still accepted, so a token is valid for 5–10 minutes, as the BEP asks.
* Peer store: announces we receive, at most ``limits.MAX_PEERS_PER_INFOHASH`` peers per infohash and
  ``limits.MAX_STORED_INFOHASHES`` infohashes (the least recently announced is evicted); entries expire
  after 30 minutes. BEP 33 bloom filters of seeds/peers are served for ``scrape`` requests.
* BEP 51: ``sample_infohashes`` answers with a random sample of the stored infohashes, ``num`` and ``interval``.
* BEP 43: read-only nodes' queries are answered, but they are not added to the routing table (the driver's job).
* Departure: unknown query methods carrying a ``target`` or ``info_hash`` are answered like ``find_node``
  (as libtorrent does) instead of error 204; without one they get error 204.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import OrderedDict
from dataclasses import dataclass

from p2pwatch import limits
from p2pwatch.bounded import remember
from p2pwatch.dht import krpc
from p2pwatch.dht.bloom import BLOOM_BYTES, bloom_insert
from p2pwatch.dht.nodeinfo import NodeInfo
from p2pwatch.dht.routing import RoutingTable

TOKEN_ROTATION = 300.0
PEER_TTL = 30 * 60.0
SAMPLE_INTERVAL = 60
MAX_SAMPLES_PER_ANSWER = 20
MAX_VALUES_PER_ANSWER = 50
_MAX_CACHED_TOKENS = 4096  # tokens remembered per secret (get_peers answers hash once per IP)


class TokenManager:
    """Write tokens bound to the requester's IP, with a rotating secret (BEP 5)."""

    def __init__(self, now: float) -> None:
        self._secret = os.urandom(16)
        self._previous = self._secret
        self._rotated_at = now
        self._issued: dict[str, bytes] = {}  # ip -> token under the current secret (a cache)

    def _maybe_rotate(self, now: float) -> None:
        if now - self._rotated_at >= TOKEN_ROTATION:
            self._previous = self._secret
            self._secret = os.urandom(16)
            self._rotated_at = now
            self._issued = {}

    def token_for(self, ip: str, now: float) -> bytes:
        self._maybe_rotate(now)
        token = self._issued.get(ip)
        if token is None:
            token = remember(self._issued, ip, hashlib.sha1(self._secret + ip.encode()).digest()[:8],
                             _MAX_CACHED_TOKENS)
        return token

    def is_valid(self, token: bytes, ip: str, now: float) -> bool:
        self._maybe_rotate(now)
        for secret in (self._secret, self._previous):
            if hashlib.sha1(secret + ip.encode()).digest()[:8] == token:
                return True
        return False


@dataclass(slots=True)
class _StoredPeer:
    port: int
    seen: float
    seed: bool


class PeerStore:
    """Bounded storage of the announces this node receives."""

    def __init__(
        self,
        max_infohashes: int = limits.MAX_STORED_INFOHASHES,
        max_peers: int = limits.MAX_PEERS_PER_INFOHASH,
    ) -> None:
        self._max_infohashes = max_infohashes
        self._max_peers = max_peers
        # BEP 33: <infohash, IP> is unique; a new announce from the same IP updates port and seed status
        self._torrents: OrderedDict[bytes, OrderedDict[str, _StoredPeer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._torrents)

    def add(self, info_hash: bytes, ip: str, port: int, seed: bool, now: float) -> None:
        peers = self._torrents.get(info_hash)
        if peers is None:
            while len(self._torrents) >= self._max_infohashes:
                self._torrents.popitem(last=False)
            peers = self._torrents[info_hash] = OrderedDict()
        else:
            self._torrents.move_to_end(info_hash)
        peers[ip] = _StoredPeer(port, now, seed)
        peers.move_to_end(ip)
        while len(peers) > self._max_peers:
            peers.popitem(last=False)

    def expire(self, now: float) -> None:
        for info_hash in list(self._torrents):
            peers = self._torrents[info_hash]
            for key in [k for k, p in peers.items() if now - p.seen > PEER_TTL]:
                del peers[key]
            if not peers:
                del self._torrents[info_hash]

    def peers(self, info_hash: bytes, now: float, *, noseed: bool = False, limit: int = MAX_VALUES_PER_ANSWER
              ) -> list[tuple[str, int]]:
        peers = self._torrents.get(info_hash)
        if not peers:
            return []
        live = [(ip, p.port) for ip, p in peers.items() if now - p.seen <= PEER_TTL and not (noseed and p.seed)]
        if len(live) > limit:
            live = random.sample(live, limit)
        return live

    def bloom_filters(self, info_hash: bytes, now: float) -> tuple[bytes, bytes]:
        seeds, downloaders = bytearray(BLOOM_BYTES), bytearray(BLOOM_BYTES)
        for ip, peer in (self._torrents.get(info_hash) or {}).items():
            if now - peer.seen <= PEER_TTL:
                bloom_insert(seeds if peer.seed else downloaders, ip)
        return bytes(seeds), bytes(downloaders)

    def sample(self, count: int = MAX_SAMPLES_PER_ANSWER) -> list[bytes]:
        keys = list(self._torrents)
        return keys if len(keys) <= count else random.sample(keys, count)

    def infohashes(self) -> list[bytes]:
        return list(self._torrents)


class QueryHandler:
    """Answers KRPC queries from the routing table, the peer store and the token manager."""

    def __init__(self, own_id: bytes, table: RoutingTable, now: float, *, k: int = 8) -> None:
        self.own_id = own_id
        self.table = table
        self.tokens = TokenManager(now)
        self.store = PeerStore()
        self.k = k

    def _nodes(self, target: bytes, want: tuple[bytes, ...], ipv6_socket: bool
               ) -> tuple[tuple[NodeInfo, ...], tuple[NodeInfo, ...]]:
        closest = self.table.closest(target, self.k)
        want_v4 = b"n4" in want or (not want and not ipv6_socket)
        want_v6 = b"n6" in want or (not want and ipv6_socket)
        v4 = tuple([n for n in closest if ":" not in n.ip]) if want_v4 else ()
        v6 = tuple([n for n in closest if ":" in n.ip]) if want_v6 else ()
        return v4, v6

    def handle(self, query: krpc.Query, addr: tuple[str, int], now: float) -> krpc.Response | krpc.Error:
        ip = addr[0]
        ipv6 = ":" in ip
        own = self.own_id
        if isinstance(query, krpc.Ping):
            return krpc.Response(query.tid, own)
        if isinstance(query, krpc.FindNode):
            nodes, nodes6 = self._nodes(query.target, query.want, ipv6)
            return krpc.Response(query.tid, own, nodes=nodes, nodes6=nodes6)
        if isinstance(query, krpc.GetPeers):
            token = self.tokens.token_for(ip, now)
            values = tuple(self.store.peers(query.info_hash, now, noseed=query.noseed))
            bf_seeds = bf_peers = None
            if query.scrape:
                bf_seeds, bf_peers = self.store.bloom_filters(query.info_hash, now)
            nodes, nodes6 = self._nodes(query.info_hash, query.want, ipv6)
            if values:  # BEP 5: values, else nodes; sending both helps crawlers converge, libtorrent does too
                nodes, nodes6 = nodes[:0], nodes6[:0]
            return krpc.Response(query.tid, own, nodes=nodes, nodes6=nodes6, values=values, token=token,
                                 bf_seeds=bf_seeds, bf_peers=bf_peers)
        if isinstance(query, krpc.AnnouncePeer):
            if not self.tokens.is_valid(query.token, ip, now):
                return krpc.Error(query.tid, 203, "bad token")
            port = addr[1] if query.implied_port else query.port
            if not 0 < port < 65536:
                return krpc.Error(query.tid, 203, "bad port")
            self.store.add(query.info_hash, ip, port, query.seed, now)
            return krpc.Response(query.tid, own)
        if isinstance(query, krpc.SampleInfohashes):
            nodes, nodes6 = self._nodes(query.target, query.want, ipv6)
            return krpc.Response(query.tid, own, nodes=nodes, nodes6=nodes6, samples=tuple(self.store.sample()),
                                 num=len(self.store), interval=SAMPLE_INTERVAL)
        if isinstance(query, krpc.UnknownQuery) and query.target is not None:
            nodes, nodes6 = self._nodes(query.target, (), ipv6)
            return krpc.Response(query.tid, own, nodes=nodes, nodes6=nodes6)
        return krpc.Error(query.tid, 204, "Method Unknown")
