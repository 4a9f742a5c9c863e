"""A minimal BitTorrent v1 (BEP 3) .torrent writer with files in the order given and no pad files.

Most torrents in the wild were made by tools that neither sort nor pad files, so a registered file often
starts in the middle of a piece. libtorrent's own creator reorders and aligns files; the demo swarm and
the tests use this writer to make the unaligned multi-file torrents the ``exact-piece`` stage exists for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from p2pwatch.torrent import bencoding


def make_v1_torrent(name: str, files: Sequence[tuple[str, Path]], *, piece_length: int = 256 * 1024,
                    trackers: Sequence[str] = (), single_file: bool = False) -> bytes:
    """``files`` are (path inside the torrent, file on disk); with ``single_file`` exactly one file."""
    pieces = bytearray()
    buffer = bytearray()
    entries = []
    for inner, path in files:
        length = 0
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                length += len(chunk)
                buffer += chunk
                while len(buffer) >= piece_length:
                    pieces += hashlib.sha1(buffer[:piece_length]).digest()
                    del buffer[:piece_length]
        entries.append({b"length": length, b"path": [p.encode() for p in inner.split("/")]})
    if buffer:
        pieces += hashlib.sha1(buffer).digest()
    info: dict[bytes, object] = {b"name": name.encode(), b"piece length": piece_length, b"pieces": bytes(pieces)}
    if single_file:
        if len(entries) != 1:
            raise ValueError("a single-file torrent has exactly one file")
        info[b"length"] = entries[0][b"length"]
    else:
        info[b"files"] = entries
    top: dict[bytes, object] = {b"info": info, b"created by": b"p2pwatch"}
    if trackers:
        top[b"announce"] = trackers[0].encode()
        top[b"announce-list"] = [[t.encode()] for t in trackers]
    return bencoding.encode(top)
