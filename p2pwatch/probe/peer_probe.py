"""Peer probe: the trio driver that turns a listed peer into evidence (DESIGN.md, evidence levels 0-4).

One TCP connection (through netguard) to one peer; the sans-IO cores do the protocol work:
:mod:`p2pwatch.probe.mse` (optional MSE/PE), :mod:`p2pwatch.probe.wire` (BEP 3/6/9/10). The probe
records every message in and out in a transcript and returns the level it reached:

* 0 - nothing proven (no connection, no handshake, or a handshake for another infohash: flagged);
* 1 - the BitTorrent handshake completed and the peer echoed our infohash;
* 2 - its bitfield / have_all / have messages claim pieces;
* 3 - one piece downloaded from this peer alone verified against the metainfo (v1 SHA-1, or the v2
  merkle piece hash for a v2-only torrent). A peer that sends wrong piece data is flagged and stays <= 2.

Peer exchange (BEP 11): we advertise ``ut_pex``; what the peer lists goes, bounded, to ``pex_peers``
(:mod:`p2pwatch.probe.pex`; a malformed message is noted, never fatal), and the ``pex`` timeout lingers
after the other steps for a first message. Level 4 (a whole file) is not this probe's job.

Metadata comes from BEP 9 ut_metadata when no metainfo is given: a ``metadata_size`` above
``limits.MAX_METADATA_SIZE`` is refused before any request, and the metadata must hash to the infohash
(SHA-1 for v1/hybrid, SHA-256 for v2, compared truncated to 20 bytes when only the wire id is known);
otherwise the peer is flagged.

Encryption ``prefer`` tries MSE first (offering RC4 and plaintext, the peer selects) and falls back to
plain BitTorrent on a fresh connection when the peer closes or garbles the MSE handshake; a peer that
stays silent is not retried, so a silent peer costs one ``handshake`` timeout. ``require`` offers RC4
only and never falls back; ``off`` never tries MSE.

Every step is bounded: ``connect``, ``handshake`` (MSE and BitTorrent handshakes together), ``metadata``
and ``piece`` bound their whole step, and after the handshake ``idle`` also bounds every wait for the next
message (and the wait for the bitfield). The probe never raises for anything the peer does; problems go to
``error`` and suspicious behaviour to ``flagged``.

From bare v2 metadata (BEP 9 gives no ``piece layers``) only pieces of one-piece files can be verified at
once; when the peer claims none, the cheapest missing piece layer is asked of the peer by BEP 52 hash
requests (:mod:`p2pwatch.probe.hash_layers`), checked against the file's pieces root, and returned in
``piece_layers`` for the store. A peer whose layer does not re-compute the root is flagged. Which piece
(and which layer) is chosen, from candidates taken once, is :mod:`p2pwatch.probe.piece_choice`.

Departures: we never upload (requests are rejected under BEP 6, ignored otherwise) and announce no pieces
(have_none when the peer is fast).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from typing import Any

import trio

from p2pwatch import limits, netguard
from p2pwatch.errors import LocalProtocolError, P2PWatchError, PeerTimeout, PeerWireError, RemoteProtocolError
from p2pwatch.probe import wire
from p2pwatch.probe.hash_layers import fetch_layer
from p2pwatch.probe.mse import CRYPTO_PLAINTEXT, CRYPTO_RC4, MSEError, MSEInitiator
from p2pwatch.probe.peer_steps import describe, os_error_text, piece_digest
from p2pwatch.probe.pex import PexCollector
from p2pwatch.probe.piece_choice import candidate_pieces, choose_piece, claimed_pieces, layer_to_fetch
from p2pwatch.probe.probe_result import ProbeResult, ProbeTimeouts, TranscriptEntry, result_from_state, utc_now
from p2pwatch.torrent.metainfo import Metainfo, TorrentVersion, parse_info

__all__ = ["ProbeResult", "ProbeTimeouts", "TranscriptEntry", "probe_peer"]

DEFAULT_TIMEOUTS = ProbeTimeouts()  # frozen, so one shared default is safe

CLIENT_VERSION = "p2pwatch 0.1"
#: Azureus-style prefix of our peer ids ("pW" = p2pwatch 0.1.0.0).
PEER_ID_PREFIX = b"-pW0100-"
METADATA_WINDOW = 4  # ut_metadata requests in flight
BLOCK_WINDOW = 64  # block requests in flight
OUR_RESERVED = wire.make_reserved(wire.RESERVED_EXTENSIONS, wire.RESERVED_FAST)


class _Fallback(Exception):
    """The MSE handshake failed in a way that suggests a plaintext-only peer."""


class _Probe:
    def __init__(self, ip: str, port: int, infohash: bytes, metainfo: Metainfo | None, fetch_metadata: bool,
                 piece: int | None, fetch_piece: bool, timeouts: ProbeTimeouts, encryption: str,
                 local_address: str | None, peer_id: bytes) -> None:
        self.ip, self.port, self.infohash = ip, port, infohash
        self.wire_id = infohash[:20]
        self.metainfo, self.fetch_metadata = metainfo, fetch_metadata
        self.piece, self.fetch_piece = piece, fetch_piece
        self.t, self.encryption = timeouts, encryption
        self.local_address, self.our_peer_id = netguard.source_address_for(ip, local_address), peer_id  # as used
        self.transcript: list[TranscriptEntry] = []
        self.r: dict[str, Any] = {"level": 0, "started_at": utc_now()}
        self.bytes_in = self.bytes_out = 0
        self._reset_connection()

    def _reset_connection(self) -> None:
        self.stream: trio.SocketStream | None = None
        self.mse: MSEInitiator | None = None
        self.parser = wire.WireParser()
        self.events: deque[wire.WireEvent] = deque()
        self.remote: wire.Handshake | None = None
        self.ext: wire.ExtendedHandshake | None = None
        self.ext_at = 0.0  # when the peer's extended handshake arrived (the ut_pex wait counts from it)
        self.bitfield: wire.Bitfield | None = None
        self.have_all = self.have_none = False
        self.haves: set[int] = set()
        self.choked = True
        self.allowed_fast: set[int] = set()
        self.blocks: dict[tuple[int, int], int] = {}  # requested (index, begin) -> length
        self.metadata_parts: dict[int, bytes] = {}
        self.pex = PexCollector()

    def note(self, what: str, /, **detail: Any) -> None:
        self.transcript.append(TranscriptEntry(utc_now(), "note", what, detail))

    # ------------------------------------------------------------------------------------------ I/O
    async def _send_raw(self, data: bytes) -> None:
        assert self.stream is not None
        if self.mse is not None and self.mse.done:
            data = self.mse.encrypt(data)
        with trio.move_on_after(self.t.idle) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise PeerTimeout(f"peer did not read what we sent for {self.t.idle:g} s")
        self.bytes_out += len(data)

    async def send(self, *messages: wire.WireEvent) -> None:
        remote_m = self.ext.m if self.ext is not None else None
        out = b"".join(wire.encode(m, remote_extensions=remote_m) for m in messages)
        for m in messages:
            self.transcript.append(TranscriptEntry(utc_now(), "out", wire.message_name(m), describe(m)))
        await self._send_raw(out)

    async def _receive(self, deadline: float, what: str) -> bytes:
        assert self.stream is not None
        idle_deadline = trio.current_time() + self.t.idle if self.remote is not None else deadline
        with trio.move_on_at(min(deadline, idle_deadline)) as scope:
            data = await self.stream.receive_some(65536)
        if scope.cancelled_caught:
            waited = self.t.idle if idle_deadline <= deadline else None
            raise PeerTimeout(f"no answer during {what}" + (f" (silent for {waited:g} s)" if waited else ""))
        if not data:
            raise PeerWireError(f"peer closed the connection during {what}")
        self.bytes_in += len(data)
        return bytes(data)

    async def next_event(self, deadline: float, what: str) -> wire.WireEvent:
        while not self.events:
            data = await self._receive(deadline, what)
            if self.mse is not None:
                data = self.mse.decrypt(data)
            self.events.extend(self.parser.feed(data))
        event = self.events.popleft()
        self.transcript.append(TranscriptEntry(utc_now(), "in", wire.message_name(event), describe(event)))
        await self._absorb(event)
        return event

    async def _absorb(self, event: wire.WireEvent) -> None:
        if isinstance(event, wire.Bitfield):
            self.bitfield = event
        elif isinstance(event, wire.Have):
            self.haves.add(event.index)
        elif isinstance(event, wire.HaveAll):
            self.have_all = True
        elif isinstance(event, wire.HaveNone):
            self.have_none = True
        elif isinstance(event, wire.ExtendedHandshake):
            self.ext, self.ext_at = event, trio.current_time()
        elif isinstance(event, wire.Choke):
            self.choked = True
        elif isinstance(event, wire.Unchoke):
            self.choked = False
        elif isinstance(event, wire.AllowedFast):
            self.allowed_fast.add(event.index)
        elif isinstance(event, wire.MetadataRequest) and self.ext and self.ext.m.get(wire.UT_METADATA):
            await self.send(wire.MetadataReject(event.piece))
        elif isinstance(event, wire.Request) and self.remote is not None and self.remote.supports_fast:
            await self.send(wire.RejectRequest(event.index, event.begin, event.length))
        elif isinstance(event, wire.ExtendedMessage) and event.ext_id == wire.LOCAL_EXTENSIONS[wire.UT_PEX]:
            what, detail = self.pex.absorb(event.payload)  # BEP 11; a malformed message is only noted
            self.note(what, **detail)

    # ------------------------------------------------------------------------------------ the steps
    async def run(self) -> None:
        if self.encryption == "off":
            await self._attempt(encrypted=False)
            return
        try:
            await self._attempt(encrypted=True)
        except _Fallback as exc:
            if self.encryption == "require":
                raise PeerWireError(f"MSE handshake failed and encryption is required: {exc}") from None
            self.note("fallback_plaintext", reason=str(exc))
            self._reset_connection()
            await self._attempt(encrypted=False)

    async def _attempt(self, *, encrypted: bool) -> None:
        await self._connect()
        try:
            deadline = trio.current_time() + self.t.handshake
            if encrypted:
                await self._mse_handshake(deadline)
            await self._bt_handshake(deadline)
            await self._claims()
            await self._metadata()
            await self._piece()
            await self._wait_pex()
        finally:
            if self.stream is not None:
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()
                self.note("closed")

    async def _connect(self) -> None:
        self.note("connect", ip=self.ip, port=self.port, local_address=self.local_address)
        try:
            with trio.fail_after(self.t.connect):
                self.stream = await netguard.open_tcp_stream(
                    self.ip, self.port, local_address=self.local_address)
        except trio.TooSlowError:
            raise PeerTimeout(f"connect timed out after {self.t.connect:g} s") from None
        except OSError as exc:
            raise PeerWireError(f"connection failed: {os_error_text(exc)}") from None
        self.note("connected")

    async def _mse_handshake(self, deadline: float) -> None:
        provide = CRYPTO_RC4 if self.encryption == "require" else CRYPTO_RC4 | CRYPTO_PLAINTEXT
        mse = MSEInitiator(self.wire_id, crypto_provide=provide)
        first = mse.start()
        self.transcript.append(TranscriptEntry(utc_now(), "out", "mse_key", {"length": len(first)}))
        try:
            await self._send_raw(first)
            while not mse.done:
                reply = mse.feed(await self._receive(deadline, "the MSE handshake"))
                if reply:
                    self.transcript.append(TranscriptEntry(utc_now(), "out", "mse_sync", {"length": len(reply)}))
                    await self._send_raw(reply)
        except (MSEError, trio.BrokenResourceError) as exc:
            raise _Fallback(str(exc)) from None
        except PeerWireError as exc:  # the peer closed: likely a plaintext-only peer
            raise _Fallback(str(exc)) from None
        self.mse = mse
        self.r["encrypted"] = mse.method == "rc4"
        self.r["encryption"] = "rc4" if mse.method == "rc4" else "mse-plaintext"
        self.transcript.append(TranscriptEntry(utc_now(), "in", "mse_select", {"method": mse.method}))
        payload = mse.take_payload()
        if payload:
            self.events.extend(self.parser.feed(payload))

    async def _bt_handshake(self, deadline: float) -> None:
        await self.send(wire.Handshake(self.wire_id, self.our_peer_id, OUR_RESERVED))
        event = await self.next_event(deadline, "the BitTorrent handshake")
        assert isinstance(event, wire.Handshake)
        self.remote = event
        self.r["peer_id"] = event.peer_id
        self.r["client"] = wire.client_from_peer_id(event.peer_id)
        if event.infohash != self.wire_id:
            self.r["flagged"] = f"handshake for a different infohash {event.infohash.hex()}"
            raise _Stop
        self.r["level"] = 1
        hello: list[wire.WireEvent] = []
        if event.supports_extensions:
            hello.append(wire.ExtendedHandshake(m=dict(wire.LOCAL_EXTENSIONS), v=CLIENT_VERSION, reqq=250))
        if event.supports_fast:
            hello.append(wire.HaveNone())
        if hello:
            await self.send(*hello)

    def _claims_known(self) -> bool:
        has_claim = self.bitfield is not None or self.have_all or self.have_none
        ext_done = self.ext is not None or self.remote is None or not self.remote.supports_extensions
        return has_claim and ext_done

    async def _claims(self) -> None:
        deadline = trio.current_time() + self.t.idle
        try:
            while not self._claims_known():
                await self.next_event(deadline, "waiting for the bitfield")
        except PeerTimeout:
            self.note("no_bitfield", waited=self.t.idle)
        if self.ext is not None and self.ext.v:
            self.r["client"] = self.ext.v
        self._update_claims()

    def _update_claims(self) -> None:
        num = self.metainfo.num_pieces if self.metainfo is not None else None
        if num is not None and self.parser.num_pieces is None:
            self.parser.set_num_pieces(num)
        if self.bitfield is not None and num is not None:
            try:
                wire.check_bitfield(self.bitfield.bits, num)
            except PeerWireError as exc:
                self.r["flagged"] = self.r.get("flagged") or f"invalid bitfield: {exc}"
                self.bitfield = None
        claimed = self._claimed()
        if num is not None:
            self.r["have_fraction"] = 1.0 if self.have_all else len(claimed) / num
        elif self.have_all or self.have_none:
            self.r["have_fraction"] = 1.0 if self.have_all else 0.0
        if self.have_all or claimed:
            self.r["level"] = max(self.r["level"], 2)

    def _claimed(self) -> set[int]:
        return claimed_pieces(self.haves, self.bitfield, self.metainfo.num_pieces if self.metainfo else None)

    def _has(self, index: int) -> bool:
        in_bitfield = self.bitfield is not None and self.bitfield.has(index)
        return self.have_all or index in self.haves or in_bitfield

    async def _metadata(self) -> None:
        if self.metainfo is not None or not self.fetch_metadata:
            return
        size = self.ext.metadata_size if self.ext is not None else None
        if self.ext is None or not self.ext.m.get(wire.UT_METADATA) or not size:
            self.note("no_ut_metadata")
            return
        if size > limits.MAX_METADATA_SIZE:
            limit = limits.MAX_METADATA_SIZE
            self.r["flagged"] = f"announced metadata_size {size} beyond the {limit}-byte limit"
            self.note("metadata_refused", metadata_size=size)
            return
        deadline = trio.current_time() + self.t.metadata
        count = -(-size // wire.METADATA_PIECE)
        todo = deque(range(count))
        in_flight: set[int] = set()
        while len(self.metadata_parts) < count:
            batch = []
            while todo and len(in_flight) < METADATA_WINDOW:
                in_flight.add(todo[0])
                batch.append(wire.MetadataRequest(todo.popleft()))
            if batch:
                await self.send(*batch)
            event = await self.next_event(deadline, "the metadata download")
            if isinstance(event, wire.MetadataReject) and event.piece in in_flight:
                raise PeerWireError(f"peer rejected metadata piece {event.piece}")
            if isinstance(event, wire.MetadataData) and event.piece in in_flight:
                expected = min(wire.METADATA_PIECE, size - event.piece * wire.METADATA_PIECE)
                if event.total_size != size or len(event.data) != expected:
                    raise PeerWireError(f"metadata piece {event.piece} has {len(event.data)} bytes of "
                                        f"total_size {event.total_size}, expected {expected} of {size}")
                in_flight.discard(event.piece)
                self.metadata_parts[event.piece] = event.data
        metadata = b"".join(self.metadata_parts[i] for i in range(count))
        sha1, sha256 = hashlib.sha1(metadata).digest(), hashlib.sha256(metadata).digest()
        ok = sha1 == self.infohash if len(self.infohash) == 20 else False
        ok = ok or sha256[: len(self.infohash)] == self.infohash
        self.note("metadata_hash", sha1=sha1.hex(), sha256=sha256.hex(), verified=ok, size=size)
        if not ok:
            self.r["flagged"] = "metadata does not hash to the infohash (metadata of another torrent)"
            return
        self.r["metadata_verified"] = True
        self.r["metadata"] = metadata
        try:
            self.metainfo = parse_info(metadata)
        except RemoteProtocolError as exc:
            self.r["error"] = f"verified metadata does not parse: {exc}"
            return
        self._update_claims()

    async def _wait_pex(self) -> None:
        """Linger until ``pex`` seconds after the peer's extended handshake for a first ut_pex message
        (libtorrent sends it at its next one-second tick, rate-limited to one message per 0.1-3 s overall)."""
        if self.t.pex <= 0 or self.pex.messages or self.ext is None or not self.ext.m.get(wire.UT_PEX):
            return
        deadline = self.ext_at + self.t.pex
        try:
            while not self.pex.messages:
                await self.next_event(deadline, "the wait for ut_pex")
        except (PeerTimeout, PeerWireError) as exc:
            self.note("no_ut_pex", waited=self.t.pex, reason=str(exc))

    async def _layer(self, candidates: list[int]) -> None:
        """BEP 52: when no candidate piece is verifiable from what the metainfo holds, ask this peer for the
        cheapest missing piece layer (:mod:`p2pwatch.probe.hash_layers`)."""
        mi = self.metainfo
        assert mi is not None
        file = layer_to_fetch(mi, candidates)
        if file is not None:
            deadline = trio.current_time() + self.t.piece
            got = await fetch_layer(mi, file, self.send, lambda: self.next_event(deadline, "a hash request"), self.note)
            self.metainfo = got.metainfo or mi
            self.r["flagged"] = self.r.get("flagged") or got.flagged
            self.r.setdefault("piece_layers", {}).update(got.layers)

    async def _piece(self) -> None:
        if self.metainfo is None or not (self.fetch_piece or self.piece is not None):
            return
        candidates = candidate_pieces(self.piece, self.metainfo.num_pieces, have_all=self.have_all,
                                      claimed=self._claimed())  # once: the layer and the choice share them
        await self._layer(candidates)
        choice = choose_piece(self.metainfo, candidates, requested=self.piece, claims=self._has)
        if choice.error is not None:
            self.r["error"] = choice.error
        if choice.note is not None:
            self.note(choice.note)
        index = choice.index
        if index is None:
            return
        size = self.metainfo.piece_size(index)
        if size > limits.MAX_PIECE_LENGTH:
            limit = limits.MAX_PIECE_LENGTH
            self.r["error"] = f"piece {index} of {size} bytes exceeds the {limit}-byte limit"
            return
        deadline = trio.current_time() + self.t.piece
        buffer = bytearray(size)
        todo = deque((begin, min(limits.PEER_BLOCK_SIZE, size - begin))
                     for begin in range(0, size, limits.PEER_BLOCK_SIZE))
        received = 0
        await self.send(wire.Interested())
        window = min(BLOCK_WINDOW, max(1, (self.ext.reqq or BLOCK_WINDOW) if self.ext else BLOCK_WINDOW))
        while received < size:
            may_request = not self.choked or index in self.allowed_fast
            if may_request and todo and len(self.blocks) < window:
                batch = []
                while todo and len(self.blocks) < window:
                    begin, length = todo.popleft()
                    self.blocks[(index, begin)] = length
                    batch.append(wire.Request(index, begin, length))
                await self.send(*batch)
            event = await self.next_event(deadline, f"the download of piece {index}")
            if isinstance(event, wire.Piece):
                key = (event.index, event.begin)
                if self.blocks.get(key) != len(event.block):
                    self.note("unrequested_block", index=event.index, begin=event.begin)
                    continue
                del self.blocks[key]
                buffer[event.begin : event.begin + len(event.block)] = event.block
                received += len(event.block)
            elif isinstance(event, wire.Choke) and not (self.remote and self.remote.supports_fast):
                todo.extendleft(sorted(((b, n) for (_, b), n in self.blocks.items()), reverse=True))
                self.blocks.clear()
            elif isinstance(event, wire.RejectRequest) and (event.index, event.begin) in self.blocks:
                if not self.choked:
                    raise PeerWireError(f"peer rejected our request for piece {index}")
                todo.append((event.begin, self.blocks.pop((event.index, event.begin))))
        self._verify_piece(index, bytes(buffer))

    def _verify_piece(self, index: int, data: bytes) -> None:
        mi = self.metainfo
        assert mi is not None
        self.r["piece_sha1"] = hashlib.sha1(data).hexdigest()
        digest, algorithm = piece_digest(mi, index, data)
        ok = mi.verify_piece(index, data)
        self.note("piece_hash", index=index, algorithm=algorithm, hash=digest, verified=ok, length=len(data))
        if ok:
            self.r.update(level=3, piece_verified=index, piece_hash=digest, piece_hash_algorithm=algorithm)
        else:
            self.r["flagged"] = f"piece {index} data does not match the metainfo hash"
            self.r["level"] = min(self.r["level"], 2)

    def result(self) -> ProbeResult:
        return result_from_state(self.ip, self.port, self.infohash, self.r, self.bytes_in, self.bytes_out,
                                 tuple(self.transcript), tuple(self.pex.peers.values()))


class _Stop(Exception):
    """End the probe early without an error (the result already says why)."""


async def probe_peer(
    ip: str, port: int, infohash: bytes, *, metainfo: Metainfo | None = None, fetch_metadata: bool = True,
    piece: int | None = None, fetch_piece: bool = True, timeouts: ProbeTimeouts = DEFAULT_TIMEOUTS,
    encryption: str = "prefer", local_address: str | None = None, peer_id: bytes | None = None,
) -> ProbeResult:
    """Probe one peer for ``infohash`` (20-byte wire id, or a 32-byte v2 infohash); never raises for
    anything the peer does. ``piece`` picks the piece to verify; with ``piece=None`` and ``fetch_piece``
    the smallest verifiable piece the peer claims is fetched (when metadata is known)."""
    if len(infohash) not in (20, 32):
        raise LocalProtocolError("infohash must be 20 bytes (v1 or truncated v2) or 32 bytes (v2)")
    if encryption not in ("off", "prefer", "require"):
        raise LocalProtocolError(f"encryption must be off, prefer or require, not {encryption!r}")
    if metainfo is not None and infohash[:20] not in metainfo.dht_ids:
        raise LocalProtocolError("metainfo does not belong to this infohash")  # a hybrid has two ids (BEP 52)
    if metainfo is not None and metainfo.version is TorrentVersion.V2 and len(infohash) == 20:
        infohash = metainfo.infohash_v2 or infohash
    our_id = peer_id if peer_id is not None else PEER_ID_PREFIX + os.urandom(12)
    if len(our_id) != 20:
        raise LocalProtocolError("peer_id must be 20 bytes")
    probe = _Probe(ip, port, infohash, metainfo, fetch_metadata, piece, fetch_piece, timeouts, encryption,
                   local_address, our_id)
    try:
        await probe.run()
    except _Stop:
        pass
    except (P2PWatchError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        probe.r["error"] = str(exc) or type(exc).__name__
        probe.note("error", kind=type(exc).__name__, message=str(exc))
    return probe.result()
