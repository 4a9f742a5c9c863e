"""observations.jsonl of an evidence bundle (evidence/SPEC.md section 6): exported chain rows, each re-hashed.

A row arrives in one of two shapes, which give byte-identical lines:

* a mapping (the general API of :func:`p2pwatch.bundle.write_bundle`): the hashed fields plus
  ``prev_hash``, ``row_hash``, ``ip``, ``port``, ``reporter``, ``addr_salt``; or, for a row of another case,
  ``{"seq", "redacted": True, "body_hash"}``. Its hashed fields are serialised by the canonical JSON encoder.
* a tuple in :data:`ROW_FIELDS` order (:data:`RowTuple`), or ``(seq, body_hash)`` for a row of another case
  (:data:`RedactedTuple`): the exporter's fast path (investigate/export.py streams a million of them). The fixed
  keys are spelled out in sorted order by one format string, with every string value through the JSON string
  encoder; ``tests/bundle/test_bundle_rows.py`` checks it is byte-identical to the canonical encoder.

Whatever the shape, every row is checked before its line is written: ``seq`` follows the previous row,
``prev_hash`` is the previous row's hash, ``row_hash`` re-computes from the serialised fields, a disclosed
address matches its salted digest (or is wholly purged). A row that fails raises :class:`BundleError`, so
a chain that does not verify is never exported. The lines are the same bytes either way because the hash is
computed over exactly the bytes written: a field serialised wrongly fails the export.

:class:`ChunkPipe` runs the deflate, CRC-32, SHA-256 and file writes of the entry in a second thread, on
chunks of about 1 MiB: zlib, hashlib and file writes release the GIL on buffers that large, so that work
overlaps with the per-row hashing, which holds it (hashlib keeps the GIL for inputs under 2 KiB).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from evidence.hashchain import NOT_HASHED, address_digest, canonical_bytes, is_hash, link_hash
from evidence.proofs import TorrentIndex
from p2pwatch.errors import BundleError
from p2pwatch.storage.chain import observation_template

#: Field order of a row given as a tuple (:data:`RowTuple`).
ROW_FIELDS = ("seq", "observed_at", "torrent", "addr", "level", "source", "client", "peer_id", "have_fraction",
              "transcript", "prev_hash", "row_hash", "ip", "port", "reporter", "addr_salt")
RowTuple = tuple[int, str, str, str, int, str, "str | None", "str | None", "float | None", "str | None", str, str,
                 "str | None", "int | None", "str | None", "str | None"]
#: A row of another case as a tuple: ``(seq, body_hash hex)``.
RedactedTuple = tuple[int, str]
ExportedRow = Mapping[str, Any] | RowTuple | RedactedTuple
#: Lines joined into one chunk for the compressing thread (about 1 MiB of observations).
CHUNK_LINES = 2048
_string = json.encoder.encode_basestring  # the C encoder of JSON strings (non-ASCII kept, as the chain's)
_sha256 = hashlib.sha256


class ChunkPipe:
    """Hands chunks to ``write`` in a second thread, through a bounded queue (memory stays bounded).

    ``close()`` waits for the thread and re-raises what ``write`` raised; ``abort()`` stops it without
    raising. After a failure the thread keeps draining the queue so the producer never blocks.
    """

    def __init__(self, write: Callable[[bytes], None], depth: int = 4) -> None:
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-deflate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(chunk)
                except BaseException as exc:  # re-raised by close() in the producer's thread
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(chunk)

    def close(self) -> None:
        self.abort()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class Observations:
    """Turns exported rows into observations.jsonl lines, checking every link, and summarises them."""

    def __init__(self, torrents: TorrentIndex, first_prev_hash: str | None) -> None:
        self.torrents = torrents
        self.prev = first_prev_hash
        self.first_prev = first_prev_hash
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.rows = 0
        self.redacted = 0
        self.levels = [0] * 5
        self.transcripts: set[str] = set()
        self._keys: dict[Any, str] = {}
        #: (torrent, ip, port) -> [level, first_seen, last_seen, observations, sources, client]
        self.peers: dict[tuple[str, str, int], list[Any]] = {}

    def stream(self, rows: Iterable[ExportedRow], emit: Callable[[bytes], None]) -> None:
        """Check every row and pass the lines to ``emit``, :data:`CHUNK_LINES` lines per call."""
        buffer: list[bytes] = []
        try:
            self._stream(rows, emit, buffer)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise BundleError(f"malformed observation row after seq {self.last_seq}: {exc}") from exc
        if buffer:
            emit(b"".join(buffer))

    def _stream(self, rows: Iterable[ExportedRow], emit: Callable[[bytes], None], buffer: list[bytes]) -> None:
        # The hot loop of an export: the state lives in locals and is written back to self around the
        # (rare) mapping rows and at the end, so a million rows pay no attribute look-ups.
        append, sha256, string, template = buffer.append, _sha256, _string, observation_template
        levels, transcripts, peers, keys = self.levels, self.transcripts, self.peers, self._keys
        prev, last, rows_done, redacted = self.prev, self.last_seq, self.rows, self.redacted
        prev_raw = None if prev is None else bytes.fromhex(prev)
        try:
            for row in rows:
                if type(row) is not tuple:
                    self.prev, self.last_seq, self.rows, self.redacted = prev, last, rows_done, redacted
                    append(self.line(row))  # type: ignore[arg-type]
                    prev, last, rows_done, redacted = self.prev, self.last_seq, self.rows, self.redacted
                    prev_raw = None if prev is None else bytes.fromhex(prev)
                elif len(row) == 2:
                    seq, body_hash = row
                    if type(seq) is not int or (last is not None and seq != last + 1):
                        raise BundleError(f"observation seq {seq} does not follow {last}: export the rows in seq "
                                          "order, with the rows of other cases as redacted rows")
                    if prev_raw is None:
                        raise BundleError("a segment that opens with a redacted row needs "
                                          "chain_anchor['first_prev_hash']")
                    if not is_hash(body_hash):
                        raise BundleError(f"observation seq {seq}: body_hash must be 64 lowercase hex digits")
                    link = sha256(prev_raw + bytes.fromhex(body_hash))
                    prev, prev_raw = link.hexdigest(), link.digest()
                    append(b'{"body_hash":"%s","redacted":true,"seq":%d}\n' % (body_hash.encode("ascii"), seq))
                    redacted += 1
                    if self.first_seq is None:
                        self.first_seq = seq
                    last = seq
                else:
                    (seq, at, torrent, addr, level, source, client, peer_id, have, transcript, row_prev, stored,
                     ip, port, reporter, salt) = row
                    if type(seq) is not int or (last is not None and seq != last + 1):
                        raise BundleError(f"observation seq {seq} does not follow {last}: export the rows in seq "
                                          "order, with the rows of other cases as redacted rows")
                    if type(level) is not int or not 0 <= level <= 4:
                        raise BundleError(f"observation seq {seq}: level must be an integer 0..4")
                    try:  # the chain's own serialisation of the hashed fields, less the seq
                        prefix, suffix = template(observed_at=at, torrent=torrent, addr=addr, level=level,
                                                  source=source, client=client, peer_id=peer_id,
                                                  have_fraction=have, transcript=transcript)
                    except ValueError as exc:
                        raise BundleError(f"observation seq {seq}: {exc}") from None
                    body = b"%b%d%b" % (prefix, seq, suffix)
                    if prev is None:
                        if not is_hash(row_prev):
                            raise BundleError(f"observation seq {seq}: prev_hash must be 64 lowercase hex digits")
                        self.first_prev, prev_raw = row_prev, bytes.fromhex(row_prev)
                    elif row_prev != prev:
                        raise BundleError(f"observation seq {seq}: prev_hash is not the hash of the row before")
                    link = sha256(prev_raw + sha256(body).digest())  # type: ignore[operator]
                    digest = link.hexdigest()
                    if digest != stored:
                        raise BundleError(f"observation seq {seq}: row_hash does not match its fields "
                                          "(the chain is broken)")
                    if ip is not None:
                        quoted = string(ip)
                        reported = "null" if reporter is None else string(reporter)
                        if (type(port) is not int or not is_hash(salt, 16)
                                or address_digest(salt, ip, port, reporter) != addr):
                            raise BundleError(f"observation seq {seq}: the address does not match its digest")
                        append(body[:-1])
                        append(f',"addr_salt":"{salt}","ip":{quoted},"port":{port},"prev_hash":"{row_prev}",'
                               f'"reporter":{reported},"row_hash":"{digest}"}}\n'.encode())
                        key = keys.get(torrent)
                        if key is None:
                            key = keys[torrent] = self.torrents.get(torrent)[0]
                        merge_peer(peers, (key, ip, port), level, at, source, client)
                    elif port is None and reporter is None and salt is None:
                        append(body[:-1])
                        append(f',"addr_salt":null,"ip":null,"port":null,"prev_hash":"{row_prev}",'
                               f'"reporter":null,"row_hash":"{digest}"}}\n'.encode("ascii"))
                    else:
                        raise BundleError(f"observation seq {seq}: a partly purged address")
                    levels[level] += 1
                    if transcript is not None:
                        transcripts.add(transcript)
                    prev, prev_raw = digest, link.digest()
                    rows_done += 1
                    if self.first_seq is None:
                        self.first_seq = seq
                    last = seq
                if len(buffer) >= CHUNK_LINES:
                    emit(b"".join(buffer))
                    buffer.clear()
        finally:
            self.prev, self.last_seq, self.rows, self.redacted = prev, last, rows_done, redacted

    def line(self, row: Mapping[str, Any]) -> bytes:
        """The line of one row given as a mapping (the canonical encoder's path)."""
        seq = row.get("seq")
        if type(seq) is not int or (self.last_seq is not None and seq != self.last_seq + 1):
            raise BundleError(f"observation seq {seq} does not follow {self.last_seq}: export the rows in seq order, "
                              "with the rows of other cases as redacted rows")
        if row.get("redacted") is True:
            if self.prev is None:
                raise BundleError("a segment that opens with a redacted row needs chain_anchor['first_prev_hash']")
            out = canonical_bytes({"seq": seq, "redacted": True, "body_hash": row["body_hash"]})
            self.prev = link_hash(self.prev, bytes.fromhex(row["body_hash"]))
            self.redacted += 1
        else:
            out = self._full(row, seq)
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        return out + b"\n"

    def _full(self, row: Mapping[str, Any], seq: int) -> bytes:
        fields = dict(row)
        for name in NOT_HASHED:
            fields.pop(name, None)
        body = canonical_bytes(fields)
        prev = str(row.get("prev_hash"))
        if self.prev is not None and prev != self.prev:
            raise BundleError(f"observation seq {seq}: prev_hash is not the hash of the row before")
        if self.first_prev is None:
            if not is_hash(prev):
                raise BundleError(f"observation seq {seq}: prev_hash must be 64 lowercase hex digits")
            self.first_prev = prev
        digest = link_hash(prev, _sha256(body).digest())
        if digest != row.get("row_hash"):
            raise BundleError(f"observation seq {seq}: row_hash does not match its fields (the chain is broken)")
        ip, reporter, salt = row.get("ip"), row.get("reporter"), row.get("addr_salt")
        port: Any = row.get("port")
        if ip is not None:
            if type(salt) is not str or len(salt) != 32 or salt != salt.lower() or type(port) is not int or \
                    address_digest(salt, ip, port, reporter) != row.get("addr"):
                raise BundleError(f"observation seq {seq}: the address does not match its digest")
            extra = (f',"addr_salt":"{salt}","ip":{_string(ip)},"port":{port},"prev_hash":"{prev}",'
                     f'"reporter":{"null" if reporter is None else _string(reporter)},"row_hash":"{digest}"}}')
        elif port is None and reporter is None and salt is None:
            extra = (f',"addr_salt":null,"ip":null,"port":null,"prev_hash":"{prev}","reporter":null,'
                     f'"row_hash":"{digest}"}}')
        else:
            raise BundleError(f"observation seq {seq}: a partly purged address")
        self.prev = digest
        self.rows += 1
        level = row["level"]
        self.levels[level] += 1
        transcript = row.get("transcript")
        if transcript is not None:
            self.transcripts.add(transcript)
        if ip is not None:
            torrent = row.get("torrent")
            key = self._keys.get(torrent)
            if key is None:
                key = self._keys[torrent] = self.torrents.get(torrent)[0]
            self._peer(key, ip, port, level, row)
        return body[:-1] + extra.encode("utf-8")

    def _peer(self, key: str, ip: str, port: int, level: int, row: Mapping[str, Any]) -> None:
        merge_peer(self.peers, (key, ip, port), level, row["observed_at"], row.get("source"), row.get("client"))


def merge_peer(peers: dict[Any, list[Any]], peer_key: tuple[str, str, int], level: int, at: str,
               source: Any, client: Any) -> None:
    """Fold one observation into its peer's summary ``[max level, first seen, last seen, count, sources,
    client]`` (the per-peer table of bundle.json)."""
    peer = peers.get(peer_key)
    if peer is None:
        peers[peer_key] = [level, at, at, 1, {source}, client]
        return
    if level > peer[0]:
        peer[0] = level
    if at < peer[1]:
        peer[1] = at
    if at > peer[2]:
        peer[2] = at
    peer[3] += 1
    peer[4].add(source)
    if client:
        peer[5] = client
