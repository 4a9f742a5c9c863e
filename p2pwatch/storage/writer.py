"""The one writer task (DESIGN.md principle 3): batched, synchronous SQLAlchemy run through a worker thread.

Usage::

    async with open_writer(engine) as writer:
        await writer.write(ObservationRecord(...))        # back-pressure: waits when the channel is full
        await writer.write_many(records)                  # one channel item for many rows (fast path)
        await writer.sample(SwarmSampleRecord(...))
        match_id = await writer.run(lambda session: ...)  # any other write, in order, own transaction
        last_seq = await writer.flush()                   # everything sent before is committed

Records travel over a bounded trio memory channel. The task takes the first waiting item, then whatever
else is already queued (up to ``batch_size`` rows), and commits it in one transaction through
``trio.to_thread.run_sync``, shielded from cancellation: a batch taken off the channel is always committed.
Observations get their ``seq`` and chain hashes there (p2pwatch.storage.ledger.append_observations), so
only this task extends the chain in a process; the chain-head lock keeps it linear across processes.
``on_commit`` is called after every committed batch with its ``CommitReport``: a reported seq is durable
(SQLite ``synchronous=FULL``, PostgreSQL's commit). A ``flush`` or ``run`` ends the current batch, so
ordering is the channel's order.

Leaving ``open_writer`` (normally, by an exception or by cancellation) closes the channel and, shielded
from cancellation, commits what was already queued before the task ends. If a batch fails, the task
raises into the caller's nursery (``StorageError`` when the database fails, ``LocalProtocolError`` when a
record names a torrent id that does not exist): losing evidence quietly is worse than stopping. ``run``
functions that raise only fail their caller.
SQLite in-memory databases are not supported (each worker thread would see its own database).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import trio
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from p2pwatch.errors import LocalProtocolError, P2PWatchError, StorageError
from p2pwatch.storage.db import writer_sessionmaker
from p2pwatch.storage.ledger import (
    ObservationRecord,
    PeerCache,
    SwarmSampleRecord,
    append_audit,
    append_observations,
    chain_head,
    insert_swarm_samples,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BATCH_SIZE = 5_000
DEFAULT_CHANNEL_SIZE = 1_000


@dataclass(frozen=True, slots=True)
class CommitReport:
    """One committed batch: observation seqs ``first_seq..last_seq`` (``observations`` rows) and samples."""

    first_seq: int
    last_seq: int
    observations: int
    samples: int


class _Marker(Generic[T]):
    """A flush or call travelling in the channel; settled by the writer task."""

    def __init__(self, fn: Callable[[Session], T] | None = None) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    async def wait(self) -> T | None:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


Item = ObservationRecord | SwarmSampleRecord | list[ObservationRecord | SwarmSampleRecord] | _Marker[Any]


def _rows(item: Item) -> int:
    return len(item) if isinstance(item, list) else 1


class ObservationWriter:
    """The single writer of a process. Create it with ``open_writer``."""

    def __init__(self, engine: Engine, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 channel_size: int = DEFAULT_CHANNEL_SIZE,
                 on_commit: Callable[[CommitReport], None] | None = None) -> None:
        if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
            raise LocalProtocolError("the writer needs a file or server database, not in-memory SQLite")
        self.engine = engine
        self.batch_size = batch_size
        self.on_commit = on_commit
        self.last_seq = 0
        self.committed = 0
        self._sessions = writer_sessionmaker(engine)
        self._send, self._receive = trio.open_memory_channel[Item](channel_size)
        self._dht_ids: dict[int, str] = {}
        self._peers = PeerCache()
        self._done = trio.Event()

    # ---- producer side -------------------------------------------------------------------------------
    async def write(self, record: ObservationRecord) -> None:
        """Queue one observation (waits while the channel is full)."""
        await self._send.send(record)

    async def write_many(self, records: Iterable[ObservationRecord | SwarmSampleRecord]) -> None:
        """Queue many records as one channel item."""
        batch = list(records)
        if batch:
            await self._send.send(batch)

    async def sample(self, sample: SwarmSampleRecord) -> None:
        """Queue one swarm sample."""
        await self._send.send(sample)

    async def flush(self) -> int:
        """Wait until everything queued before is committed; return the last committed observation seq."""
        await self._settle(_Marker[None]())
        return self.last_seq

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in the writer's thread, in its own transaction, after what was queued before."""
        return await self._settle(_Marker(fn))  # type: ignore[return-value]

    async def audit(self, actor: str, action: str, detail: dict[str, Any] | None = None, *,
                    at: datetime | None = None) -> int:
        """Append an audit-log entry; return its seq."""
        return await self.run(lambda s: append_audit(s, actor, action, detail, at=at).last_seq)

    async def _settle(self, marker: _Marker[T]) -> T | None:
        try:
            await self._send.send(marker)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StorageError("the observation writer has stopped") from None
        return await marker.wait()

    async def aclose(self) -> None:
        """Close the channel and wait until the task has committed what was queued and stopped."""
        await self._send.aclose()
        await self._done.wait()

    # ---- the task ---------------------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: commit batches until the channel is closed."""
        try:
            self.last_seq = await trio.to_thread.run_sync(self._read_head)
            task_status.started()
            while True:
                try:
                    first = await self._receive.receive()
                except trio.EndOfChannel:
                    break
                await self._cycle(first)
        finally:
            try:
                with trio.CancelScope(shield=True):
                    await self._drain()
            finally:
                self._receive.close()
                self._done.set()

    async def _cycle(self, first: Item) -> None:
        items = [first]
        rows = _rows(first)
        while rows < self.batch_size and not isinstance(items[-1], _Marker):
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            items.append(item)
            rows += _rows(item)
        last = items[-1]
        marker = last if isinstance(last, _Marker) else None
        if marker is not None:
            items.pop()
        # Off the channel, the batch exists nowhere else: a cancel must not drop it before the thread starts
        # (trio.to_thread.run_sync checks for a pending cancel first), so it is committed shielded.
        with trio.CancelScope(shield=True):
            await self._commit_batch(items, marker)

    async def _commit_batch(self, items: list[Item], marker: _Marker[Any] | None) -> None:
        if items:
            try:
                await self._commit(items)
            except BaseException:
                if marker is not None:  # its waiter must not wait for a writer that is gone
                    marker.error = StorageError("the observation writer failed before this point")
                    marker.done.set()
                raise
        if marker is not None:
            await self._run_marker(marker)

    async def _commit(self, items: list[Item]) -> None:
        observations: list[ObservationRecord] = []
        samples: list[SwarmSampleRecord] = []
        for item in items:
            for rec in item if isinstance(item, list) else [item]:
                if isinstance(rec, ObservationRecord):
                    observations.append(rec)
                elif isinstance(rec, SwarmSampleRecord):
                    samples.append(rec)
        report = await trio.to_thread.run_sync(self._commit_sync, observations, samples)
        self.committed += report.observations
        if report.observations:
            self.last_seq = report.last_seq
        if self.on_commit is not None:
            self.on_commit(report)

    def _commit_sync(self, observations: list[ObservationRecord],
                     samples: list[SwarmSampleRecord]) -> CommitReport:
        try:
            with self._sessions() as session, session.begin():
                result = append_observations(session, observations, dht_ids=self._dht_ids, peers=self._peers)
                insert_swarm_samples(session, samples)
        except SQLAlchemyError as exc:
            self._peers = PeerCache()  # its entries may describe rows that were rolled back
            raise StorageError(f"writing {len(observations)} observations failed: {exc}") from exc
        except P2PWatchError:
            self._peers = PeerCache()
            raise
        return CommitReport(result.first_seq, result.last_seq, result.count, len(samples))

    def _read_head(self) -> int:
        with self._sessions() as session:
            return chain_head(session)[0]

    async def _run_marker(self, marker: _Marker[Any]) -> None:
        if marker.fn is not None:
            try:
                marker.result = await trio.to_thread.run_sync(self._call_sync, marker.fn)
            except Exception as exc:  # not contained: it is handed to run()'s caller, who raises it; the writer goes on
                marker.error = exc
        marker.done.set()

    def _call_sync(self, fn: Callable[[Session], T]) -> T:
        with self._sessions() as session, session.begin():
            return fn(session)

    async def _drain(self) -> None:
        """Commit what is still queued (shielded; after a failure, queued records are logged as lost)."""
        pending: list[Item] = []
        while True:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if isinstance(item, _Marker):
                await self._flush_pending(pending)
                await self._run_marker(item)
            else:
                pending.append(item)
        await self._flush_pending(pending)

    async def _flush_pending(self, pending: list[Item]) -> None:
        if not pending:
            return
        try:
            await self._commit(list(pending))
        except Exception:  # stopping, nothing can retry: the loss is logged by its row count, the rest still settles
            log.exception("the writer could not commit %d queued items while stopping",
                          sum(_rows(i) for i in pending))
        pending.clear()


@asynccontextmanager
async def open_writer(engine: Engine, **kwargs: Any) -> AsyncIterator[ObservationWriter]:
    """Run an ``ObservationWriter`` task for the duration of the block; queued records are committed on exit."""
    writer = ObservationWriter(engine, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.serve)
        try:
            yield writer
        finally:
            with trio.CancelScope(shield=True):
                await writer.aclose()
