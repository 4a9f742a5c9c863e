"""Pages: a torrent (files, swarm status, peer-count plot, peers by level), lookup, watch/unwatch (issue 14).

The torrent page reads what ``p2pwatch timeline`` and ``p2pwatch peers`` print (p2pwatch.investigate.summaries);
the lookup runs ``p2pwatch lookup --record``'s own function (p2pwatch.cli.lookup.lookup_document) in a
worker thread, on the app's engine, while its page refreshes itself. Peer addresses are shown only to roles
with ``peers``, and every such view is written to the audit log (who, when, which torrent, how many addresses).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response
from starlette.routing import Route

from p2pwatch.errors import ConfigError, P2PWatchError
from p2pwatch.investigate.registry import get_case, unwatch, upsert_torrent, watch
from p2pwatch.investigate.summaries import LEVEL_NAMES, peer_rows, torrent_timeline
from p2pwatch.locale import N_
from p2pwatch.locale import tr as _
from p2pwatch.storage.ledger import append_audit
from p2pwatch.storage.models import CaseWatch, Torrent, TorrentFile
from p2pwatch.storage.models import Match as MatchRow
from p2pwatch.torrent.magnet import parse_infohash, parse_magnet
from p2pwatch.web.accounts import visible_case_ids
from p2pwatch.web.app import Page, view
from p2pwatch.web.svgplot import timeline_svg

#: Evidence levels for people (docs/glossary-ko.md); only 3 and 4 show distribution.
LEVEL_LABELS = {0: N_("0 listed: an address someone reported (a lead)"),
                1: N_("1 connected: the peer answered for this torrent (a lead)"),
                2: N_("2 advertised: the peer claims to have pieces (a lead)"),
                3: N_("3 served: a piece from this peer was verified (distribution)"),
                4: N_("4 served whole: the whole file from this peer was verified (distribution)")}
#: Words shown through ``_(value)`` in templates: where a peer was seen, why a torrent is watched.
TERMS = (N_("dht"), N_("tracker"), N_("pex"), N_("probe"), N_("announce"), N_("match"), N_("watch"))
STATUS_LABELS = {"alive": N_("alive"), "dormant": N_("dormant"), "gone": N_("gone"), "unknown": N_("unknown")}


def parse_web_target(text: str) -> tuple[bytes, str | None]:
    """An infohash or magnet typed into a form → (DHT id, magnet). Never a server path."""
    text = text.strip()
    try:
        if text.startswith("magnet:"):
            return parse_magnet(text).infohash.dht_id, text
        return parse_infohash(text).dht_id, None
    except P2PWatchError:
        raise ConfigError(_("%(text)s is not an infohash (40 or 64 hex characters, or 32 base32) or a magnet "
                            "link.", text=repr(text[:80]))) from None


def _torrent_for(session: Session, page: Page, infohash: str) -> Torrent:
    torrent = session.execute(select(Torrent).where(Torrent.dht_id == infohash.lower())).scalar_one_or_none()
    if torrent is None:
        raise ConfigError(_("Torrent %(infohash)s is not in the database.", infohash=infohash[:64]))
    assert page.account is not None
    allowed = visible_case_ids(session, page.account)
    if allowed is not None:
        linked = set(session.execute(select(CaseWatch.case_id).where(CaseWatch.torrent_id == torrent.id)).scalars())
        linked |= set(session.execute(select(MatchRow.case_id).where(MatchRow.torrent_id == torrent.id)).scalars())
        if not linked & allowed:
            raise ConfigError(_("You have no access to this torrent."))
    return torrent


@view()
async def torrent_page(page: Page) -> Response:
    infohash = page.request.path_params["infohash"]
    assert page.account is not None
    show_peers = page.account.can("peers")

    def load(session: Session) -> dict[str, Any]:
        torrent = _torrent_for(session, page, infohash)
        files = list(session.execute(select(TorrentFile).where(TorrentFile.torrent_id == torrent.id,
                                                               TorrentFile.padding.is_(False))
                                     .order_by(TorrentFile.file_index)).scalars())
        timeline = torrent_timeline(session, torrent, page.state.config)
        peers = peer_rows(session, torrent, 0)
        by_level = {level: [p for p in peers if p["level"] == level] for level in sorted(LEVEL_NAMES, reverse=True)}
        if show_peers and peers:
            append_audit(session, page.actor, "web.peers.view", {"torrent": torrent.dht_id, "addresses": len(peers),
                                                                  "client": page.client})
        cases = [c for (c,) in session.execute(select(CaseWatch.case_id).where(CaseWatch.torrent_id == torrent.id))]
        return {"torrent": torrent, "files": files, "timeline": timeline, "by_level": by_level,
                "counts": {level: len(rows) for level, rows in by_level.items()}, "watched_by": len(cases)}
    try:
        data = await page.db(load)
    except ConfigError as exc:
        return page.error(404, str(exc))
    plot = Markup(timeline_svg(data["timeline"]["samples"], time_zone=page.state.config.time_zone,
                               title=_("Peers over time"), empty_text=_("No swarm samples recorded yet.")))
    return page.render("torrent.html", **data, plot=plot, show_peers=show_peers, levels=LEVEL_LABELS,
                       statuses=STATUS_LABELS)


@view(permission="watch")
async def watch_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    action = "unwatch" if page.request.url.path.endswith("/unwatch") else "watch"
    try:
        dht_id, magnet = parse_web_target(page.field("target"))

        def change(session: Session) -> str:
            case = get_case(session, name)
            torrent = upsert_torrent(session, dht_id, magnet=magnet, source="watch")
            if action == "watch":
                watch(session, case, torrent)
                append_audit(session, page.actor, "watch.add", {"case": name, "torrent": torrent.dht_id})
                return _("Watching %(infohash)s for case %(case)s.", infohash=torrent.dht_id, case=name)
            unwatch(session, case, torrent, actor=page.actor)
            return _("No longer watching %(infohash)s for case %(case)s.", infohash=torrent.dht_id, case=name)
        page.flash(await page.db(change))
    except ConfigError as exc:
        page.flash(str(exc), "error")
    from urllib.parse import quote

    return page.redirect(f"/cases/{quote(name, safe='')}")


#: Lookups running at once (each is a DHT node, trackers and probes) and how long a finished one is kept.
MAX_RUNNING_LOOKUPS = 3
JOB_KEEP_SECONDS = 3600.0


@dataclass
class LookupJob:
    """A web lookup running in a worker thread (its own trio loop), watched by a refreshing page."""

    id: str
    owner: int
    target: str
    timeout: float
    started: float = field(default_factory=time.monotonic)
    done: bool = False
    doc: dict[str, Any] | None = None
    error: str | None = None
    audited: bool = False
    finished: threading.Event = field(default_factory=threading.Event, repr=False)  # set with ``done``

    def progress(self) -> int:
        return 100 if self.done else min(99, int(100 * (time.monotonic() - self.started) / max(self.timeout, 1)))


def _run_job(job: LookupJob, page: Page, dht_id: bytes, magnet: str | None) -> None:
    from p2pwatch.cli.lookup import lookup_document
    from p2pwatch.cli.options import NetworkOptions

    config = page.state.config
    net = NetworkOptions(bootstrap=tuple(config.dht.bootstrap), trackers=tuple(config.watcher.trackers),
                         bind=None if config.dht.bind == "0.0.0.0" else config.dht.bind,
                         allow_local=config.dht.allow_local, timeout=job.timeout)
    try:
        job.doc = lookup_document(page.state.obj, dht_id, None, magnet, net, record=True, engine=page.state.engine)
    except P2PWatchError as exc:
        job.error = str(exc)
    except Exception as exc:
        job.error = f"{type(exc).__name__}: {exc}"
    finally:
        job.done = True
        job.finished.set()


@view(permission="lookup")
async def lookup_page(page: Page) -> Response:
    if page.request.method == "GET":
        return page.render("lookup.html", target="")
    target = page.field("target")
    try:
        dht_id, magnet = parse_web_target(target)
    except ConfigError as exc:
        return page.render("lookup.html", status=400, target=target, error=str(exc))
    assert page.account is not None
    jobs = page.state.jobs
    for key in [k for k, j in jobs.items() if j.done and time.monotonic() - j.started > JOB_KEEP_SECONDS]:
        del jobs[key]
    if sum(1 for j in jobs.values() if not j.done) >= MAX_RUNNING_LOOKUPS:
        return page.render("lookup.html", status=429, target=target,
                           error=_("%(n)s lookups are already running; try again when one has finished.",
                                   n=MAX_RUNNING_LOOKUPS))
    job = LookupJob(secrets.token_urlsafe(12), page.account.id, dht_id.hex(), page.state.config.web.lookup_timeout)
    page.state.jobs[job.id] = job
    await page.db(lambda s: append_audit(s, page.actor, "web.lookup", {"torrent": job.target}))
    threading.Thread(target=_run_job, args=(job, page, dht_id, magnet), name=f"lookup-{job.id}", daemon=True).start()
    return page.redirect(f"/lookup/{job.id}")


@view(permission="lookup")
async def lookup_job_page(page: Page) -> Response:
    job = page.state.jobs.get(page.request.path_params["job"])
    assert page.account is not None
    if not isinstance(job, LookupJob) or job.owner != page.account.id:
        return page.error(404, _("No such lookup."))
    if job.done and job.doc and job.doc.get("peers") and not job.audited:
        job.audited = True
        await page.db(lambda s: append_audit(s, page.actor, "web.peers.view", {
            "torrent": job.target, "addresses": len(job.doc["peers"]) if job.doc else 0, "client": page.client}))
    return page.render("lookup_job.html", job=job, levels=LEVEL_LABELS)


ROUTES = [
    Route("/torrents/{infohash}", torrent_page),
    Route("/cases/{name}/watch", watch_page, methods=["POST"]),
    Route("/cases/{name}/unwatch", watch_page, methods=["POST"]),
    Route("/lookup", lookup_page, methods=["GET", "POST"]),
    Route("/lookup/{job}", lookup_job_page),
]
