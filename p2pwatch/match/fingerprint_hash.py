"""The hashes of a fingerprint, from one read of a file, on every core (docs/fingerprint-format.md).

One read gives the size, MD5, SHA-1 and SHA-256; the BitTorrent v2 leaf layer (BEP 52: SHA-256 of every
16 KiB block); and the BitTorrent v1 (BEP 3) SHA-1 piece tables of the file placed at offset 0, for every
power-of-two piece length from 16 KiB to 16 MiB.

How the v1 tables stay cheap: SHA-1 is a Merkle-Damgard hash, so two pieces that start at the same offset
share their prefix state. A piece of length ``S`` starts at every multiple of ``S``; from each 16 KiB-aligned
offset ``o`` one SHA-1 chain runs for ``lowbit(o)`` bytes (capped at 16 MiB), and its digest is taken whenever
it has covered 16 KiB, 32 KiB, ... bytes. The chain from offset 0 runs on to the end of the file and *is*
the whole-file SHA-1. That is 7 SHA-1 passes for 11 tables and the file's SHA-1, instead of 12.

How the work is spread: the file is read into a ring of chunk buffers (``chunk`` bytes, a power of two,
aligned: every chunk but the last is full). Per chunk there are *serial* tasks, which carry state from one
chunk to the next and so run in chunk order (MD5, SHA-256, the chain from offset 0, the chains longer than a
chunk), and *free* tasks, which need nothing but the chunk (the leaf hashes, the chains that start and end
inside it, in three groups) and run in any order. One worker per core takes the task of the oldest chunk
first, the costliest first among equals, so every core stays busy until the last chunk and MD5 (the longest
serial task: no hardware support) is never left alone at the end. hashlib releases the GIL while it hashes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from p2pwatch.errors import LocalProtocolError
from p2pwatch.match.media import SNIFF_BYTES
from p2pwatch.torrent import merkle

MIN_V1_PIECE = 16 * 1024
MAX_V1_PIECE = 16 * 1024 * 1024
#: The v1 piece lengths whose tables a fingerprint holds (16 KiB .. 16 MiB).
V1_PIECE_LENGTHS = tuple(1 << k for k in range(14, 25))
CHUNK_SIZE = 4 * 1024 * 1024
#: Chunk buffers in flight per worker (what lets a slow task lag without stalling the others).
BUFFERS_PER_WORKER = 4
MAX_WORKERS = 8

#: progress(bytes_done, bytes_total)
ProgressCallback = Callable[[int, int], None]
#: fill(buffer) -> bytes placed at its start; less than its length only at the end of the file
Fill = Callable[[memoryview], int]
#: (piece length, piece index) -> SHA-1
Digests = dict[tuple[int, int], bytes]


@dataclass(frozen=True)
class FileHashes:
    size: int
    md5: str
    sha1: str
    sha256: str
    leaf_hashes: bytes
    v1_piece_tables: MappingProxyType[int, bytes]
    head: bytes


def _table_lengths(size: int) -> list[int]:
    lengths = [n for n in V1_PIECE_LENGTHS if n < size]
    bigger = [n for n in V1_PIECE_LENGTHS if n >= size]
    return lengths + bigger[:1]


def _lowbit(value: int) -> int:
    return value & -value


class _Chain:
    """A SHA-1 chain from ``start`` that takes a digest at every power of two from 16 KiB up to ``span`` bytes
    and stops there (``whole``: runs on to the end of the file)."""

    __slots__ = ("emit", "hashed", "sha", "span", "start", "whole")

    def __init__(self, start: int, span: int, whole: bool = False) -> None:
        self.start, self.span, self.whole = start, span, whole
        self.sha = hashlib.sha1(usedforsecurity=False)
        self.hashed, self.emit = 0, MIN_V1_PIECE

    def feed(self, base: int, view: memoryview, out: Digests) -> bool:
        """Hash the part of the chunk at ``base`` that is the chain's; False once it is complete."""
        pos = self.start + self.hashed - base  # where the chain goes on, in the chunk
        end = len(view)
        while self.emit <= self.span and pos < end:
            stop = min(pos + self.emit - self.hashed, end)
            self.sha.update(view[pos:stop])
            self.hashed += stop - pos
            pos = stop
            if self.hashed == self.emit:
                out[(self.emit, self.start // self.emit)] = self.sha.digest()
                self.emit <<= 1
        if self.whole and pos < end:
            self.sha.update(view[pos:])
            self.hashed += end - pos
        return self.whole or self.emit <= self.span

    def finish(self, largest: int, out: Digests) -> None:
        """End of file: the chain's truncated piece is the last one of every longer table up to ``span``."""
        digest = self.sha.digest()
        while self.emit <= min(self.span, largest):
            out[(self.emit, self.start // self.emit)] = digest
            self.emit <<= 1


def _short_chains(spans: tuple[int, ...], chunk: int) -> Callable[[int, memoryview, Digests], None]:
    """A free task: the chains of ``spans`` (each at most ``chunk``) that start in a chunk, hence end in it
    (or at the end of the file)."""

    def run(base: int, view: memoryview, out: Digests) -> None:
        end = len(view)
        for span in spans:
            if span < chunk:  # odd multiples of span within the chunk
                starts: range | tuple[int, ...] = range(span, end, 2 * span)
            elif base and min(_lowbit(base), MAX_V1_PIECE) == span:  # the chunk's own start
                starts = (0,)
            else:
                continue
            for start in starts:
                sha = hashlib.sha1(view[start : start + MIN_V1_PIECE], usedforsecurity=False)
                length, offset = MIN_V1_PIECE, base + start
                out[(length, offset // length)] = sha.digest()
                while length < span:
                    if start + length < end:
                        sha.update(view[start + length : start + 2 * length])
                    length <<= 1
                    out[(length, offset // length)] = sha.digest()

    return run


class _Task:
    __slots__ = ("busy", "name", "next_chunk", "run", "serial")

    def __init__(self, name: str, run: Callable[[int, memoryview], None], serial: bool) -> None:
        self.name, self.run, self.serial = name, run, serial
        self.next_chunk, self.busy = 0, False


class _Chunk:
    __slots__ = ("base", "buffer", "index", "pending", "view")

    def __init__(self, index: int, base: int, buffer: bytearray, length: int, free: list[_Task]) -> None:
        self.index, self.base, self.buffer = index, base, buffer
        self.view = memoryview(buffer)[:length]
        self.pending = list(free)  # free tasks not yet started


class _Scheduler:
    """Hands (task, chunk) pairs to the workers: oldest chunk first, serial tasks (costliest first) before
    free ones; a serial task takes its chunks in order, one at a time."""

    def __init__(self, serial: list[_Task], free: list[_Task], buffers: int, chunk: int) -> None:
        self.serial, self.free = serial, free
        self.cond = threading.Condition()
        self.spare = [bytearray(chunk) for _ in range(buffers)]
        self.chunks: dict[int, _Chunk] = {}
        self.running: dict[int, int] = {}  # chunk index -> tasks running on it
        self.eof = False
        self.error: BaseException | None = None

    def take_buffer(self) -> bytearray | None:
        with self.cond:
            while not self.spare and self.error is None:
                self.cond.wait()
            return None if self.error is not None else self.spare.pop()

    def add(self, chunk: _Chunk) -> None:
        with self.cond:
            self.chunks[chunk.index] = chunk
            self.running[chunk.index] = 0
            self.cond.notify_all()

    def close(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.eof = True
            if error is not None and self.error is None:
                self.error = error
            self.cond.notify_all()

    def _pick(self) -> tuple[_Task, _Chunk] | None:
        for index in sorted(self.chunks):
            chunk = self.chunks[index]
            for task in self.serial:
                if not task.busy and task.next_chunk == index:
                    task.busy = True
                    return task, chunk
            if chunk.pending:
                return chunk.pending.pop(0), chunk
        return None

    def _done(self, chunk: _Chunk) -> bool:
        return (not chunk.pending and self.running[chunk.index] == 0
                and all(t.next_chunk > chunk.index for t in self.serial))

    def work(self) -> None:
        item: tuple[_Task, _Chunk] | None = None
        while True:
            with self.cond:
                if item is not None:
                    task, chunk = item
                    task.busy = False
                    task.next_chunk += task.serial
                    self.running[chunk.index] -= 1
                    if self._done(chunk):
                        del self.chunks[chunk.index], self.running[chunk.index]
                        self.spare.append(chunk.buffer)
                    self.cond.notify_all()
                while True:
                    if self.error is not None:
                        return
                    item = self._pick()
                    if item is not None:
                        self.running[item[1].index] += 1
                        break
                    if self.eof and not self.chunks:
                        return
                    self.cond.wait()
            try:
                item[0].run(item[1].base, item[1].view)
            except BaseException as exc:  # reported by the reader after join
                self.close(exc)
                return


def _workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def _profiled(task: _Task, profile: dict[str, float]) -> None:
    run, name = task.run, task.name

    def timed(base: int, view: memoryview) -> None:
        started = time.thread_time()
        run(base, view)
        spent = time.thread_time() - started
        with _PROFILE_LOCK:
            profile[name] = profile.get(name, 0.0) + spent

    task.run = timed


_PROFILE_LOCK = threading.Lock()


def hash_chunks(fill: Fill, total: int, progress: ProgressCallback | None = None, *, chunk: int = CHUNK_SIZE,
                workers: int | None = None, profile: dict[str, float] | None = None) -> FileHashes:
    """Every hash of a fingerprint, from ``fill`` calls until one leaves its buffer short (``total`` is for
    progress). ``chunk`` is a power of two from 16 KiB to 16 MiB. ``profile`` (for benchmarks) receives the
    thread CPU seconds of each task and of the reader."""
    if chunk & (chunk - 1) or not MIN_V1_PIECE <= chunk <= MAX_V1_PIECE:
        raise LocalProtocolError(f"chunk size must be a power of two from 16 KiB to 16 MiB, not {chunk}")
    workers = workers or _workers()
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    digests: Digests = {}
    whole = _Chain(0, MAX_V1_PIECE, whole=True)
    long_chains: list[_Chain] = []  # chains longer than a chunk, which start at a chunk (not the first)
    leaves: dict[int, bytes] = {}

    def feed_long(base: int, view: memoryview) -> None:
        if base and min(_lowbit(base), MAX_V1_PIECE) > chunk:
            long_chains.append(_Chain(base, min(_lowbit(base), MAX_V1_PIECE)))
        long_chains[:] = [c for c in long_chains if c.feed(base, view, digests)]

    def feed_whole(base: int, view: memoryview) -> None:
        whole.feed(base, view, digests)

    def feed_leaves(base: int, view: memoryview) -> None:
        leaves[base] = b"".join(hashlib.sha256(view[i : i + merkle.BLOCK_SIZE]).digest()
                                for i in range(0, len(view), merkle.BLOCK_SIZE))

    def short(spans: tuple[int, ...]) -> Callable[[int, memoryview], None]:
        run = _short_chains(spans, chunk)
        return lambda base, view: run(base, view, digests)

    spans = tuple(n for n in V1_PIECE_LENGTHS if n <= chunk)
    serial = [_Task("md5", lambda _b, v: md5.update(v), True),
              _Task("sha1", feed_whole, True),
              _Task("long", feed_long, True),
              _Task("sha256", lambda _b, v: sha256.update(v), True)]
    groups = [spans[i : i + 3] for i in range(0, len(spans), 3)]
    free = [_Task(f"chains{g[0]}", short(g), False) for g in groups] + [_Task("leaves", feed_leaves, False)]
    reader_started = time.thread_time()
    if profile is not None:
        for task in serial + free:
            _profiled(task, profile)
    scheduler = _Scheduler(serial, free, BUFFERS_PER_WORKER * workers, chunk)
    threads = [threading.Thread(target=scheduler.work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    done, head, index = 0, b"", 0
    try:
        while (buffer := scheduler.take_buffer()) is not None:
            got = fill(memoryview(buffer))
            if got:
                if not head:
                    head = bytes(buffer[: min(got, SNIFF_BYTES)])
                scheduler.add(_Chunk(index, done, buffer, got, free))
                index += 1
                done += got
                if progress is not None:
                    progress(done, max(total, done))
            if got < len(buffer):
                break
    except BaseException as exc:
        scheduler.close(exc)
        raise
    finally:
        scheduler.close()
        for thread in threads:
            thread.join()
    if scheduler.error is not None:
        raise scheduler.error
    if profile is not None:
        profile["reader"] = time.thread_time() - reader_started
    lengths = _table_lengths(done)
    largest = lengths[-1] if lengths else 0
    for chain in long_chains:
        chain.finish(largest, digests)
    whole.finish(largest, digests)
    tables: dict[int, bytes] = {}
    for length in lengths:
        try:
            tables[length] = b"".join([digests[(length, i)] for i in range(-(-done // length))])
        except KeyError as exc:  # pragma: no cover - would be a bug in the chains
            raise LocalProtocolError(f"v1 piece {exc} missing") from None
    return FileHashes(done, md5.hexdigest(), whole.sha.hexdigest(), sha256.hexdigest(),
                      b"".join(leaves[b] for b in sorted(leaves)), MappingProxyType(tables), head)


def hash_stream(read: Callable[[int], bytes], total: int, progress: ProgressCallback | None = None, *,
                chunk: int = CHUNK_SIZE, workers: int | None = None, profile: dict[str, float] | None = None
                ) -> FileHashes:
    """:func:`hash_chunks` from ``read(n)`` calls (short reads allowed) until one returns b""."""

    def fill(buffer: memoryview) -> int:
        got = 0
        while got < len(buffer) and (data := read(len(buffer) - got)):
            buffer[got : got + len(data)] = data
            got += len(data)
        return got

    return hash_chunks(fill, total, progress, chunk=chunk, workers=workers, profile=profile)


def hash_file_object(handle: Any, total: int, progress: ProgressCallback | None = None, *,
                     chunk: int = CHUNK_SIZE, workers: int | None = None, profile: dict[str, float] | None = None
                     ) -> FileHashes:
    """:func:`hash_chunks` of a binary file object read with ``readinto`` straight into the chunk buffers."""

    def fill(buffer: memoryview) -> int:
        got = 0
        while got < len(buffer) and (n := handle.readinto(buffer[got:])):
            got += n
        return got

    return hash_chunks(fill, total, progress, chunk=chunk, workers=workers, profile=profile)
