"""Keep the matcher's :class:`RegistryIndex` in step with the store, reading only what changed.

Reloading the whole registry whenever one item is registered or withdrawn parses every stored fingerprint
again: O(registry) per registration, minutes at 100,000 items. Instead :meth:`RegistrySync.read` (run in a
worker thread, since it reads the database and parses fingerprints) collects the changes since the last read
and :meth:`RegistrySync.apply` (in the thread that matches, so the index never changes under a lookup)
applies them, each costing the changed items' own hashes:

- content rows are only ever deleted by withdrawing their case (:func:`p2pwatch.investigate.registry.withdraw_case`
  deletes them and marks the case withdrawn in one transaction), so a case newly withdrawn removes its items;
- new rows are those with an id above the highest one still held. SQLite may hand a deleted top id out again,
  which is why the bound is recomputed after withdrawals, from the rows still held;
- keywords are few: re-read whole whenever their count or highest id changes;
- with a session factory, items are held slim (:class:`p2pwatch.match.registered.SlimFingerprint`: no leaf
  hashes, no v1 tables) and the index reads the full fingerprints of the items a torrent's file sizes select
  through :func:`store_tables`, cached (:class:`p2pwatch.match.registered.TableCache`);
- as a safety net, when the count of active content rows differs from the rows held after applying all
  that, the ids are compared (integers only, no fingerprint parsed) and the difference is resynchronised.

One bad row never holds the rest back: an item the index refuses (:meth:`RegistryIndex.add` raising, which
leaves no part of it behind) is held unindexed with its error, the other changes apply, and every later
apply tries it again (:attr:`RegistrySync.unindexed`; the monitor then reads at every refresh). A stored
fingerprint that does not parse is held unindexed too, and not tried again: it is the same bytes every time.
Both stay registered (withdrawing their case drops them) and are counted by the monitor's gauge
``p2pwatch_registry_unindexed_items``: a registered item that is not matched is never silent.

:meth:`RegistrySync.apply` is retryable: each row is taken into the bookkeeping right after the index took
(or dropped) it, and :meth:`RegistryIndex.add` is all or nothing, so an apply that fails halfway leaves the
rows held exactly matching the index. The withdrawn cases and keyword version advance only at its end, and
until an apply finishes (:attr:`RegistrySync.settled`) every read compares the ids: the next read then finds
exactly what is still missing or stale, whatever the counts say, and applying it ends with the index holding
the registered items, none missed and none twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from p2pwatch.errors import FingerprintError, P2PWatchError
from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.matcher import RegistryIndex
from p2pwatch.match.registered import RegisteredContent, SlimFingerprint, TableCache, TableLoader
from p2pwatch.storage.models import Case, Content, Keyword

log = logging.getLogger(__name__)

#: What is read of a content row: plain columns streamed in batches, no ORM objects kept in the session.
_COLUMNS = (Content.id, Content.case_id, Content.fingerprint, Case.name)

Sessions = Callable[[], AbstractContextManager[Session]]


def store_tables(sessions: Sessions) -> TableLoader:
    """A :data:`TableLoader` reading full fingerprints by content row id, each call in a session of its own
    (so it may run in a worker thread); rows gone or unparsable are left out."""

    def load(content_ids: Sequence[str]) -> dict[str, Fingerprint]:
        ids = sorted({int(c) for c in content_ids if c.isdigit()})
        out: dict[str, Fingerprint] = {}
        with sessions() as session:
            for lo in range(0, len(ids), 500):
                query = select(Content.id, Content.fingerprint).where(Content.id.in_(ids[lo : lo + 500]))
                for row_id, doc in session.execute(query):
                    try:
                        out[str(row_id)] = Fingerprint.from_json(doc)
                    except FingerprintError as exc:
                        log.warning("registry: content %d is not matched: %s", row_id, exc)
        return out

    return load


@dataclass
class RegistryChanges:
    """What :meth:`RegistrySync.read` found: row ids to drop, rows to add (parsed, with their pieces roots),
    and the keywords when they changed."""

    removed: list[int] = field(default_factory=list)
    # row, case, item and pieces root (item None: a stored fingerprint that does not parse, held unindexed)
    added: list[tuple[int, int, RegisteredContent | None, bytes]] = field(default_factory=list)
    unparsable: dict[int, str] = field(default_factory=dict)  # the rows added with item None: why
    keywords: dict[str, list[str]] | None = None
    keyword_version: tuple[int, int] | None = None
    withdrawn: set[int] = field(default_factory=set)  # every withdrawn case id, as read

    def __bool__(self) -> bool:
        return bool(self.removed or self.added or self.keywords is not None)


@dataclass(frozen=True)
class Unindexed:
    """A registered row the index does not hold (its case is the row's in the rows held): its item (None:
    the stored fingerprint does not parse) and pieces root, and why."""

    item: RegisteredContent | None
    root: bytes
    reason: str


@dataclass
class Applied:
    """The items one :meth:`RegistrySync.apply` removed from the index and added to it."""

    added: list[RegisteredContent] = field(default_factory=list)
    removed: list[RegisteredContent] = field(default_factory=list)


class RegistrySync:
    """The registry index of every active case, updated incrementally from the store."""

    def __init__(self, sessions: Sessions | None = None, *, cache_items: int = 512) -> None:
        """``sessions``: where the full fingerprints of slim items are read from (None: items are held whole)."""
        self.index = RegistryIndex([])
        self._slim = sessions is not None
        if sessions is not None:
            self.index.tables = TableCache(store_tables(sessions), max_items=cache_items)
        self._rows: dict[int, int] = {}  # content row id -> case id
        self._withdrawn: set[int] = set()
        self._keyword_version: tuple[int, int] | None = None
        self._settled = True  # False from the start of an apply until it finishes
        self._unindexed: dict[int, Unindexed] = {}  # held rows the index does not hold (a subset of _rows)

    @property
    def settled(self) -> bool:
        """False after an :meth:`apply` that failed halfway, until one finishes: the store must be read again
        (and the next :meth:`read` compares the ids), whatever a registry version says."""
        return self._settled

    @property
    def unindexed(self) -> dict[int, str]:
        """Registered rows the index does not hold (not matched), with why: a fingerprint that does not parse,
        or the error the index raised for the item."""
        return {row: held.reason for row, held in self._unindexed.items()}

    @property
    def retrying(self) -> bool:
        """Are there items the index refused, to be tried again at the next :meth:`apply`?"""
        return any(held.item is not None for held in self._unindexed.values())

    def read(self, session: Session) -> RegistryChanges:
        """The changes since the last :meth:`apply` (reads only; safe in a worker thread while the index is
        being queried elsewhere)."""
        changes = RegistryChanges()
        changes.withdrawn = set(session.execute(select(Case.id).where(Case.withdrawn_at.is_not(None))).scalars())
        newly = changes.withdrawn - self._withdrawn
        if newly:
            changes.removed = [row for row, case in self._rows.items() if case in newly]
        held = set(self._rows) - set(changes.removed)
        bound = max(held, default=0)
        active = Case.withdrawn_at.is_(None)
        query = (select(*_COLUMNS).join(Case, Content.case_id == Case.id)
                 .where(Content.id > bound, active).order_by(Content.id))
        for row_id, case_id, doc, case in session.execute(query.execution_options(yield_per=1000)):
            if row_id not in held:
                self._parse(changes, row_id, case_id, doc, case)
        stored = session.scalar(select(func.count()).select_from(Content).join(Case, Content.case_id == Case.id)
                                .where(active)) or 0
        if not self._settled:
            log.info("registry: the last apply did not finish: comparing ids")
            self._resync(session, held, changes)
        elif stored != len(held) + len(changes.added):
            log.warning("registry: %d active content rows, %d held: comparing ids", stored,
                        len(held) + len(changes.added))
            self._resync(session, held, changes)
        version = session.execute(select(func.count(), func.max(Keyword.id)).select_from(Keyword)).one()
        keyword_version = (int(version[0]), int(version[1] or 0))
        if keyword_version != self._keyword_version or newly:
            changes.keywords = {}
            for case, text in session.execute(select(Case.name, Keyword.text).join(Case, Keyword.case_id == Case.id)
                                              .where(active).order_by(Keyword.id)):
                changes.keywords.setdefault(case, []).append(text)
            changes.keyword_version = keyword_version
        return changes

    def _parse(self, changes: RegistryChanges, row_id: int, case_id: int, doc: Any, case: str) -> None:
        """Add one row to ``changes``: its item and pieces root, or None and why it does not parse."""
        try:
            fp: Fingerprint | SlimFingerprint = (SlimFingerprint.from_json(doc) if self._slim
                                                 else Fingerprint.from_json(doc))
        except FingerprintError as exc:
            log.warning("registry: content %d of case %s is not matched: %s", row_id, case, exc)
            changes.added.append((row_id, case_id, None, b""))
            changes.unparsable[row_id] = f"the stored fingerprint does not parse: {exc}"
            return
        changes.added.append((row_id, case_id, RegisteredContent(str(row_id), case, fp), fp.pieces_root()))

    def _resync(self, session: Session, held: set[int], changes: RegistryChanges) -> None:
        joined = select(Content.id).join(Case, Content.case_id == Case.id).where(Case.withdrawn_at.is_(None))
        ids = set(session.execute(joined).scalars())
        changes.removed += sorted(held - ids)
        have = held | {added[0] for added in changes.added}
        missing = sorted(ids - have)
        for lo in range(0, len(missing), 500):
            query = (select(*_COLUMNS).join(Case, Content.case_id == Case.id)
                     .where(Content.id.in_(missing[lo : lo + 500])))
            for row_id, case_id, doc, case in session.execute(query):
                self._parse(changes, row_id, case_id, doc, case)

    def apply(self, changes: RegistryChanges, into: Applied | None = None) -> Applied:
        """Apply what :meth:`read` found (in the thread that queries the index); returns the items the index
        lost and gained, for what follows the index incrementally (the triage's profile), collected in
        ``into`` when given: after a failure halfway it holds what the index did take. Retryable (see the
        module docstring): until it finishes, :attr:`settled` is False."""
        applied = into if into is not None else Applied()
        self._settled = False
        for row_id in changes.removed:
            if self._unindexed.pop(row_id, None) is not None:  # nothing of it in the index
                del self._rows[row_id]
            elif row_id in self._rows:
                content_id = str(row_id)
                items = [self.index.item(seq) for seq in self.index.seqs_of(content_id)]
                self.index.remove(content_id)
                del self._rows[row_id]
                applied.removed += items
        for row_id, held in list(self._unindexed.items()):  # the items refused before: tried again
            if held.item is not None:
                self._index_row(row_id, held.item, held.root, applied)
        for row_id, case_id, item, root in changes.added:
            if row_id in self._rows:
                continue
            if item is not None:
                self._index_row(row_id, item, root, applied)
            else:
                self._unindexed[row_id] = Unindexed(None, b"", changes.unparsable.get(row_id, "not parsed"))
            self._rows[row_id] = case_id
        if changes.keywords is not None:
            self.index.keywords = changes.keywords
            self._keyword_version = changes.keyword_version
        self._withdrawn = changes.withdrawn
        self._settled = True
        return applied

    def _index_row(self, row_id: int, item: RegisteredContent, root: bytes, applied: Applied) -> None:
        """Index one row's item; one the index refuses is held unindexed with the error (once logged), and
        the apply goes on: one bad row never holds back the others' registrations."""
        try:
            self.index.add(item, pieces_root=root)  # all or nothing: a refusal leaves no part of it behind
        except MemoryError:
            raise
        except Exception as exc:
            if row_id not in self._unindexed:
                log.warning("registry: content %d of case %s is not matched (it stays registered; tried again "
                            "at every refresh): %s: %s", row_id, item.case, type(exc).__name__, exc,
                            exc_info=not isinstance(exc, P2PWatchError))
            self._unindexed[row_id] = Unindexed(item, root, f"{type(exc).__name__}: {exc}")
            return
        if self._unindexed.pop(row_id, None) is not None:
            log.info("registry: content %d of case %s is indexed now", row_id, item.case)
        applied.added.append(item)

    def __len__(self) -> int:
        return len(self._rows)
