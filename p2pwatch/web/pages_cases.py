"""Pages: sign-in, cases (list, create, show, withdraw), register content, matches (issue 14).

They call the functions ``p2pwatch case …``, ``register`` and ``matches`` call (p2pwatch.investigate.registry,
p2pwatch.investigate.summaries, p2pwatch.match.fingerprint). Uploaded files are written to a private
temporary file, fingerprinted (hashes only) and deleted at once; no byte of them is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.routing import Route

from p2pwatch.errors import ConfigError, P2PWatchError
from p2pwatch.investigate.registry import add_content, add_keywords, create_case, get_case, list_cases
from p2pwatch.investigate.registry import withdraw_case as withdraw
from p2pwatch.investigate.summaries import case_matches
from p2pwatch.locale import LANGUAGES, N_
from p2pwatch.locale import tr as _
from p2pwatch.match.fingerprint import Fingerprint, fingerprint_file
from p2pwatch.storage.ledger import append_audit
from p2pwatch.storage.models import Case, CaseWatch, Content, Keyword, Torrent
from p2pwatch.web.accounts import Account, authenticate, get_user, grant_case, visible_case_ids
from p2pwatch.web.app import LANG_COOKIE, Page, view

#: How a match was proven, for people (the method names stay as they are in bundles).
METHOD_LABELS = {"exact-metadata": N_("exact: the torrent's own hashes equal the registered ones"),
                 "exact-piece": N_("exact: a downloaded piece equals the registered content"),
                 "perceptual": N_("perceptual: frames look the same (re-encoded copy)")}

#: Content kinds, shown through ``_(kind)``.
KINDS = (N_("video"), N_("image"), N_("other"))


@view(permission=None)
async def index(page: Page) -> Response:
    return page.redirect("/cases" if page.account else "/signin")


@view(permission=None)
async def signin(page: Page) -> Response:
    nxt = page.request.query_params.get("next", "")
    if page.request.method == "GET":
        return page.render("signin.html", next=nxt, username="")
    name, password = page.field("username"), page.field("password")
    nxt = page.field("next")
    limiter = page.state.limiter
    keys = (f"user:{name.lower()}", f"client:{page.client}")
    if limiter.blocked(*keys):
        return page.render("signin.html", status=429, next=nxt, username=name,
                           error=_("Too many failed sign-ins. Wait a few minutes and try again."))
    account: Account | None = await page.db(lambda s: authenticate(s, name, password, client=page.client))
    if account is None:
        limiter.failed(*keys)
        return page.render("signin.html", status=401, next=nxt, username=name,
                           error=_("Wrong account name or password, or the account is disabled."))
    limiter.succeeded(keys[0])
    page.state.sessions.drop(page.token)  # a fresh session on sign-in (no session fixation)
    page.new_token, page.session = page.state.sessions.new(account.id)
    target = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/cases"
    return page.redirect(target)


@view(permission=None)
async def signout(page: Page) -> Response:
    page.state.sessions.drop(page.token)
    page.new_token, page.session = page.state.sessions.new()
    return page.redirect("/signin")


@view(permission=None)
async def language(page: Page) -> Response:
    code = page.request.path_params["code"]
    nxt = page.request.query_params.get("next", "/")
    response = page.redirect(nxt if nxt.startswith("/") and not nxt.startswith("//") else "/")
    if code in LANGUAGES:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, path="/", httponly=True, samesite="strict",
                            secure=page.state.config.web.secure_cookies)
    return response


def _visible(session: Session, page: Page, name: str, *, active: bool = False) -> Case:
    """The case, if this account may open it (staff: their own cases); ConfigError otherwise."""
    assert page.account is not None
    case = get_case(session, name, active=active)
    allowed = visible_case_ids(session, page.account)
    if allowed is not None and case.id not in allowed:
        raise ConfigError(_("You have no access to case %(case)s.", case=name))
    return case


@view()
async def cases(page: Page) -> Response:
    assert page.account is not None
    account = page.account
    if page.request.method == "POST":
        name = page.field("name")

        def create(session: Session) -> None:
            case = create_case(session, name, actor=page.actor)
            grant_case(session, case, account)
        try:
            await page.db(create)
        except ConfigError as exc:
            page.flash(str(exc), "error")
            return page.redirect("/cases")
        page.flash(_("Case %(case)s created.", case=name))
        return page.redirect("/cases/" + _quote(name))

    def rows(session: Session) -> list[dict[str, Any]]:
        allowed = visible_case_ids(session, account)
        ids = {c.name: c.id for c in session.execute(select(Case)).scalars()}
        return [r for r in list_cases(session) if allowed is None or ids[r["case"]] in allowed]
    return page.render("cases.html", cases=await page.db(rows))


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@view()
async def case_page(page: Page) -> Response:
    name = page.request.path_params["name"]

    def load(session: Session) -> dict[str, Any]:
        c = _visible(session, page, name)
        contents = list(session.execute(select(Content).where(Content.case_id == c.id)).scalars())
        keywords = [k.text for k in session.execute(select(Keyword).where(Keyword.case_id == c.id)).scalars()]
        joined = select(CaseWatch, Torrent).join(Torrent, Torrent.id == CaseWatch.torrent_id)
        watched = [{"infohash": t.dht_id, "name": t.name, "reason": w.reason, "added_at": w.added_at}
                   for w, t in session.execute(joined.where(CaseWatch.case_id == c.id))]
        return {"case": c, "contents": contents, "keywords": keywords, "watched": watched,
                "matches": case_matches(session, c.name)}
    try:
        data = await page.db(load)
    except ConfigError as exc:
        return page.error(404, str(exc))
    return page.render("case.html", **data, methods=METHOD_LABELS)


@view()
async def matches_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    try:
        rows = await page.db(lambda s: (_visible(s, page, name), case_matches(s, name))[1])
    except ConfigError as exc:
        return page.error(404, str(exc))
    return page.render("matches.html", case_name=name, matches=rows, methods=METHOD_LABELS)


@view()
async def withdraw_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    if page.request.method == "GET":
        try:
            data = await page.db(lambda s: _withdraw_preview(s, page, name))
        except ConfigError as exc:
            return page.error(404, str(exc))
        return page.render("withdraw.html", case_name=name, **data)
    if page.field("confirm_name") != name:
        page.flash(_("Type the case name exactly to confirm the withdrawal."), "error")
        return page.redirect(f"/cases/{_quote(name)}/withdraw")
    try:
        detail = await page.db(lambda s: (_visible(s, page, name, active=True), withdraw(s, name, actor=page.actor))[1])
    except ConfigError as exc:
        return page.error(409, str(exc))
    page.flash(_("Case %(case)s withdrawn: %(fp)s fingerprints and %(kw)s keywords deleted, %(tw)s torrents "
                 "no longer watched.", case=name, fp=detail["fingerprints_deleted"], kw=detail["keywords_deleted"],
                 tw=detail["torrents_unwatched"]))
    return page.redirect(f"/cases/{_quote(name)}")


def _withdraw_preview(session: Session, page: Page, name: str) -> dict[str, Any]:
    c = _visible(session, page, name, active=True)
    from sqlalchemy import func

    from p2pwatch.storage.models import Match

    def count(model: Any, column: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(column == c.id)) or 0)
    return {"fingerprints": count(Content, Content.case_id), "keywords": count(Keyword, Keyword.case_id),
            "watched": count(CaseWatch, CaseWatch.case_id), "matches": count(Match, Match.case_id)}


def _fingerprint_upload(upload: UploadFile, *, media: bool = True) -> Fingerprint:
    """Copy the upload to a private temporary file, fingerprint it, delete it (in ``finally``)."""
    workdir = tempfile.mkdtemp(prefix="p2pwatch-upload-")
    try:
        os.chmod(workdir, 0o700)
        suffix = Path(upload.filename or "").suffix[:16]
        path = Path(workdir) / f"upload{suffix}"
        with open(path, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
        return fingerprint_file(path, media=media, keep_name=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@view(permission="register", max_form_bytes=8 << 30)
async def register_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    assert page.form is not None
    uploads = [u for u in page.form.getlist("file") if isinstance(u, UploadFile) and u.filename]
    words = [w.strip() for w in page.field("keywords").splitlines() if w.strip()]
    keep_label = page.field("label") == "on"
    if not uploads and not words:
        page.flash(_("Choose a file to register or give a keyword."), "error")
        return page.redirect(f"/cases/{_quote(name)}")
    fingerprints: list[tuple[Fingerprint, str | None]] = []
    try:
        for upload in uploads:
            fp = await run_in_threadpool(_fingerprint_upload, upload)
            fingerprints.append((fp, upload.filename if keep_label else None))
            await upload.close()
    except P2PWatchError as exc:
        page.flash(_("The file could not be fingerprinted: %(error)s", error=str(exc)), "error")
        return page.redirect(f"/cases/{_quote(name)}")

    def store(session: Session) -> list[dict[str, Any]]:
        c = _visible(session, page, name, active=True)
        out = []
        for fp, label in fingerprints:
            row, new = add_content(session, c, fp, label=label, actor=page.actor)
            out.append({"new": new, "fingerprint": fp, "id": row.id})
        out.append({"keywords": add_keywords(session, c, words)})
        return out
    try:
        results = await page.db(store)
    except ConfigError as exc:
        return page.error(409, str(exc))
    return page.render("registered.html", case_name=name, results=results[:-1], keywords_added=results[-1]["keywords"])


@view(permission="all_cases")
async def members_page(page: Page) -> Response:
    """Give a staff account access to a case (investigators and admins see every case anyway)."""
    name = page.request.path_params["name"]
    user_name = page.field("username")

    def grant(session: Session) -> None:
        case = get_case(session, name)
        user = get_user(session, user_name)
        grant_case(session, case, Account(user.id, user.name, user.role))
        append_audit(session, page.actor, "case.grant", {"case": name, "user": user_name})
    try:
        await page.db(grant)
        page.flash(_("%(user)s can now open case %(case)s.", user=user_name, case=name))
    except ConfigError as exc:
        page.flash(str(exc), "error")
    return page.redirect(f"/cases/{_quote(name)}")


ROUTES = [
    Route("/", index),
    Route("/signin", signin, methods=["GET", "POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/lang/{code}", language),
    Route("/cases", cases, methods=["GET", "POST"]),
    Route("/cases/{name}", case_page),
    Route("/cases/{name}/matches", matches_page),
    Route("/cases/{name}/withdraw", withdraw_page, methods=["GET", "POST"]),
    Route("/cases/{name}/register", register_page, methods=["POST"]),
    Route("/cases/{name}/members", members_page, methods=["POST"]),
]
