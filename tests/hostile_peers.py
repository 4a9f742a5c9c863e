"""Scripted BitTorrent peers for the probe tests: honest, hostile, silent, and an MSE responder.

Each server is a trio task started with ``nursery.start(serve_scripted_peer, ip, script)``; it listens on
its own loopback address and returns its port. The scripts reuse p2pwatch's wire codec on the test side:
its correctness is pinned separately by byte literals in test_wire.py.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import trio

from p2pwatch.probe import wire
from p2pwatch.probe.mse import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    DH_KEY_LENGTH,
    RC4,
    VC,
    dh_public_key,
    dh_shared_secret,
    obfuscated_skey,
    stream_keys,
)
from p2pwatch.torrent import bencoding

PEER_UT_METADATA = 3  # the id our scripted peers give ut_metadata
PEER_UT_PEX = 7  # the id our scripted peers give ut_pex (BEP 11) when they advertise it


# ------------------------------------------------------------------------------------ test torrents


@dataclass(frozen=True)
class SyntheticTorrent:
    info_bytes: bytes
    data: bytes
    piece_length: int

    @property
    def infohash(self) -> bytes:
        return hashlib.sha1(self.info_bytes).digest()

    @property
    def num_pieces(self) -> int:
        return math.ceil(len(self.data) / self.piece_length)

    def piece(self, index: int) -> bytes:
        return self.data[index * self.piece_length : (index + 1) * self.piece_length]


def synthetic_v1_torrent(size: int = 100_000, piece_length: int = 32768,
                         name: bytes = b"x.bin") -> SyntheticTorrent:
    """A v1 single-file torrent over random data, hashed with hashlib directly."""
    data = os.urandom(size)
    pieces = b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, size, piece_length))
    info = bencoding.encode(
        {b"name": name, b"length": size, b"piece length": piece_length, b"pieces": pieces})
    return SyntheticTorrent(info, data, piece_length)


# ------------------------------------------------------------------------------------ MSE responder


class _R(Enum):
    WAIT_KEY = 1
    WAIT_REQ1 = 2
    WAIT_SKEY = 3
    WAIT_HEADER = 4
    WAIT_PADC = 5
    WAIT_IA = 6
    DONE = 7


class ResponderError(Exception):
    pass


class MSEResponder:
    """Minimal sans-IO MSE responder (the "B" side) for tests; ``feed`` returns bytes to send."""

    def __init__(self, skeys: Iterable[bytes], *, prefer: int = CRYPTO_RC4,
                 allow: int = CRYPTO_RC4 | CRYPTO_PLAINTEXT, pad_length: int = 37) -> None:
        self._skeys = list(skeys)
        self._prefer, self._allow, self._pad = prefer, allow, pad_length
        self._x = secrets.randbits(160)
        self._buf = bytearray()
        self.state = _R.WAIT_KEY
        self.method: str | None = None
        self.skey: bytes | None = None
        self.provided = 0
        self._payload = b""
        self._enc: RC4 | None = None
        self._dec: RC4 | None = None
        self._need = 0

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = b""
        if self.state is _R.WAIT_KEY and len(self._buf) >= DH_KEY_LENGTH:
            self._secret = dh_shared_secret(self._x, bytes(self._buf[:DH_KEY_LENGTH]))
            del self._buf[:DH_KEY_LENGTH]
            out += dh_public_key(self._x) + os.urandom(self._pad)
            self.state = _R.WAIT_REQ1
        if self.state is _R.WAIT_REQ1:
            req1 = hashlib.sha1(b"req1" + self._secret).digest()
            at = self._buf.find(req1)
            if at < 0 and len(self._buf) > 512 + 20:
                raise ResponderError("no req1 hash")
            if at >= 0:
                del self._buf[: at + 20]
                self.state = _R.WAIT_SKEY
        if self.state is _R.WAIT_SKEY and len(self._buf) >= 20:
            obfuscated = bytes(self._buf[:20])
            del self._buf[:20]
            for skey in self._skeys:
                if obfuscated_skey(self._secret, skey) == obfuscated:
                    self.skey = skey
            if self.skey is None:
                raise ResponderError("unknown stream key")
            key_a, key_b = stream_keys(self._secret, self.skey)
            self._dec, self._enc = RC4(key_a), RC4(key_b)
            self.state = _R.WAIT_HEADER
        if self.state is _R.WAIT_HEADER and len(self._buf) >= 14:
            assert self._dec is not None
            head = self._dec.process(bytes(self._buf[:14]))
            del self._buf[:14]
            if head[:8] != VC:
                raise ResponderError("bad VC")
            self.provided, self._need = struct.unpack(">IH", head[8:])
            self.state = _R.WAIT_PADC
        if self.state is _R.WAIT_PADC and len(self._buf) >= self._need + 2:
            assert self._dec is not None
            tail = self._dec.process(bytes(self._buf[: self._need + 2]))
            del self._buf[: self._need + 2]
            (self._need,) = struct.unpack(">H", tail[-2:])
            self.state = _R.WAIT_IA
        if self.state is _R.WAIT_IA and len(self._buf) >= self._need:
            assert self._dec is not None and self._enc is not None
            ia = self._dec.process(bytes(self._buf[: self._need]))
            rest = bytes(self._buf[self._need :])
            self._buf.clear()
            offered = self.provided & self._allow
            if not offered:
                raise ResponderError("no common crypto method")
            select = self._prefer if offered & self._prefer else offered & -offered
            self.method = "rc4" if select == CRYPTO_RC4 else "plaintext"
            out += self._enc.process(VC + struct.pack(">IH", select, 5) + bytes(5))
            self.state = _R.DONE
            self._payload = ia + self.decrypt(rest)
        return out

    @property
    def done(self) -> bool:
        return self.state is _R.DONE

    def encrypt(self, data: bytes) -> bytes:
        assert self._enc is not None
        return self._enc.process(data) if self.method == "rc4" else data

    def decrypt(self, data: bytes) -> bytes:
        assert self._dec is not None
        return self._dec.process(data) if self.method == "rc4" else data

    def take_payload(self) -> bytes:
        payload, self._payload = self._payload, b""
        return payload


# ---------------------------------------------------------------------------------- scripted peers


@dataclass
class PeerScript:
    """What a scripted peer does. Defaults: an honest seeder of ``torrent``."""

    torrent: SyntheticTorrent | None = None
    silent: bool = False  # accept, then never send a byte
    silent_after_handshake: bool = False
    handshake_infohash: bytes | None = None  # answer with this infohash instead of the probe's
    metadata: bytes | None = None  # serve these bytes as metadata (default: the torrent's info dict)
    metadata_size: int | None = None  # announce this metadata_size (default: len(metadata))
    advertise: str = "have_all"  # "have_all" | "bitfield" | "none"
    wrong_piece_data: bool = False
    never_unchoke: bool = False  # keeps the probe waiting for a piece it will never get
    mse: str = "off"  # "off" (plaintext only) | "accept" (MSE or plaintext) | "require"
    peer_id: bytes = b"-HP0001-" + bytes(12)
    pex: tuple[bytes, ...] = ()  # ut_pex payloads sent, in order, once the probe's extended handshake arrives
    pex_delay: float = 0.0  # seconds to wait before sending them
    advertise_pex: bool | None = None  # announce ut_pex (default: when ``pex`` is not empty)
    connections: list[dict[str, Any]] = field(default_factory=list)  # what each connection saw


async def serve_scripted_peer(ip: str, script: PeerScript, *,
                              task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host=ip)
    port = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(lambda stream: _handle(stream, script), listeners)


def closed_port(ip: str) -> int:
    """A port on ``ip`` with nothing listening (a listed peer that is gone)."""
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class _Conn:
    def __init__(self, stream: trio.SocketStream, log: dict[str, Any]) -> None:
        self.stream, self.log = stream, log
        self.mse: MSEResponder | None = None

    async def send(self, data: bytes) -> None:
        if self.mse is not None:
            data = self.mse.encrypt(data)
        await self.stream.send_all(data)

    async def receive(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        self.log["bytes_in"] = self.log.get("bytes_in", 0) + len(data)
        return self.mse.decrypt(data) if self.mse is not None else bytes(data)


async def _handle(stream: trio.SocketStream, script: PeerScript) -> None:
    log: dict[str, Any] = {"received": []}
    script.connections.append(log)
    try:
        await _run(stream, script, log)
    except Exception as exc:  # a scripted peer ends quietly whatever the probe does
        log["ended"] = type(exc).__name__
    finally:
        await stream.aclose()


async def _run(stream: trio.SocketStream, script: PeerScript, log: dict[str, Any]) -> None:
    if script.silent:
        await trio.sleep_forever()
    conn = _Conn(stream, log)
    first = await conn.receive()
    if first[:1] != b"\x13":  # not a plaintext handshake: MSE
        if script.mse == "off":
            return  # a plaintext-only peer hangs up on MSE
        skey = script.torrent.infohash if script.torrent else (script.handshake_infohash or bytes(20))
        responder = MSEResponder([skey])
        reply = responder.feed(first)
        while not responder.done:
            if reply:
                await stream.send_all(reply)
            reply = responder.feed(await conn.receive())
        await stream.send_all(reply)
        conn.mse = responder
        log["mse"] = responder.method
        first = responder.take_payload()
    elif script.mse == "require":
        return
    parser = wire.WireParser(local_extensions={wire.UT_METADATA: PEER_UT_METADATA})
    events = parser.feed(first)
    while not events:
        events = parser.feed(await conn.receive())
    handshake = events.pop(0)
    assert isinstance(handshake, wire.Handshake)
    infohash = script.handshake_infohash or handshake.infohash
    reserved = wire.make_reserved(wire.RESERVED_EXTENSIONS, wire.RESERVED_FAST)
    await conn.send(wire.encode(wire.Handshake(infohash, script.peer_id, reserved)))
    if script.silent_after_handshake:
        await trio.sleep_forever()
    torrent = script.torrent
    metadata = script.metadata if script.metadata is not None else (torrent.info_bytes if torrent else b"")
    size = script.metadata_size if script.metadata_size is not None else len(metadata)
    m = {wire.UT_METADATA: PEER_UT_METADATA}
    if script.advertise_pex or (script.advertise_pex is None and script.pex):
        m[wire.UT_PEX] = PEER_UT_PEX
    hello: list[wire.WireEvent] = [wire.ExtendedHandshake(
        m=m, metadata_size=size or None, v="ScriptedPeer 1.0", reqq=100)]
    if script.advertise == "have_all":
        hello.append(wire.HaveAll())
    elif script.advertise == "bitfield" and torrent is not None:
        hello.append(wire.Bitfield(_full_bitfield(torrent.num_pieces)))
    elif script.advertise == "none":
        hello.append(wire.HaveNone())
    await conn.send(b"".join(wire.encode(m) for m in hello))
    remote_m: dict[bytes, int] = {}
    while True:
        for event in events:
            log["received"].append(wire.message_name(event))
            await _answer(conn, event, script, metadata, remote_m)
        events = parser.feed(await conn.receive())


def _full_bitfield(num_pieces: int) -> bytes:
    bits = bytearray(b"\xff" * math.ceil(num_pieces / 8))
    spare = 8 * len(bits) - num_pieces
    bits[-1] &= (0xFF << spare) & 0xFF
    return bytes(bits)


async def _answer(conn: _Conn, event: wire.WireEvent, script: PeerScript, metadata: bytes,
                  remote_m: dict[bytes, int]) -> None:
    if isinstance(event, wire.ExtendedHandshake):
        remote_m.update(event.m)
        if script.pex and remote_m.get(wire.UT_PEX):
            await trio.sleep(script.pex_delay)
            for payload in script.pex:
                await conn.send(wire.encode(wire.ExtendedMessage(remote_m[wire.UT_PEX], payload)))
    elif isinstance(event, wire.MetadataRequest):
        piece = metadata[event.piece * wire.METADATA_PIECE : (event.piece + 1) * wire.METADATA_PIECE]
        answer = wire.MetadataData(event.piece, len(metadata), piece)
        await conn.send(wire.encode(answer, remote_extensions=remote_m))
    elif isinstance(event, wire.Interested) and not script.never_unchoke:
        await conn.send(wire.encode(wire.Unchoke()))
    elif isinstance(event, wire.Request) and script.torrent is not None:
        block = script.torrent.piece(event.index)[event.begin : event.begin + event.length]
        if script.wrong_piece_data:
            block = bytes(len(block))
        await conn.send(wire.encode(wire.Piece(event.index, event.begin, block)))

