"""Pages: export a case's bundle (download), verify an uploaded bundle, the audit log, accounts (issue 14).

Export calls ``p2pwatch export``'s function (p2pwatch.investigate.export.export_case), which writes the audit
entry; the bundle is written to a private temporary directory, streamed to the browser and deleted.
Verification runs the stand-alone verifier (evidence.verify_bundle), as ``python -m evidence verify`` does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from p2pwatch.errors import ConfigError
from p2pwatch.locale import tr as _
from p2pwatch.storage.models import ROLES, AuditEntry
from p2pwatch.web.accounts import add_user, disable_user, list_users
from p2pwatch.web.app import Page, view

AUDIT_PAGE = 100


@view(permission="export")
async def export_page(page: Page) -> Response:
    from p2pwatch.investigate.export import ExportRequest, export_case

    name = page.request.path_params["name"]
    workdir = Path(tempfile.mkdtemp(prefix="p2pwatch-export-"))
    os.chmod(workdir, 0o700)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "case"
    out = workdir / f"{safe}-evidence.zip"
    config = page.state.config
    request = ExportRequest(name, out, page.state.home, None, config.digest(), actor=page.actor,
                            language=page.language, time_zone=config.time_zone)
    try:
        await page.db(lambda s: export_case(s, request))
    except ConfigError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        return page.error(409, str(exc))
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(out, media_type="application/zip", filename=out.name,
                        background=BackgroundTask(shutil.rmtree, workdir, True))


def _verify_upload(upload: UploadFile) -> dict[str, Any]:
    from evidence.verify import verify_bundle

    upload.file.seek(0)
    result = verify_bundle(upload.file)
    return {"exit_code": result.exit_code, "checks": [{"name": c.name, "status": c.status, "summary": c.summary,
                                                       "details": c.details} for c in result.checks]}


@view(permission="cases", max_form_bytes=4 << 30)
async def verify_page(page: Page) -> Response:
    if page.request.method == "GET":
        return page.render("verify.html", result=None)
    assert page.form is not None
    upload = page.form.get("bundle")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return page.render("verify.html", status=400, result=None, error=_("Choose a bundle (.zip) to verify."))
    result = await run_in_threadpool(_verify_upload, upload)
    await page.db(lambda s: _audit_verify(s, page, upload.filename or "", result["exit_code"]))
    return page.render("verify.html", result=result, filename=upload.filename)


def _audit_verify(session: Session, page: Page, name: str, code: int) -> None:
    from p2pwatch.storage.ledger import append_audit

    append_audit(session, page.actor, "web.verify", {"bundle": name[:200], "exit_code": code})


@view(permission="audit")
async def audit_page(page: Page) -> Response:
    try:
        before = int(page.request.query_params.get("before", "0"))
    except ValueError:
        before = 0

    def load(session: Session) -> tuple[list[AuditEntry], int]:
        query = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(AUDIT_PAGE)
        if before > 0:
            query = query.where(AuditEntry.seq < before)
        rows = list(session.execute(query).scalars())
        return rows, int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
    rows, total = await page.db(load)
    return page.render("audit.html", rows=rows, total=total, page_size=AUDIT_PAGE)


@view(permission="users")
async def users_page(page: Page) -> Response:
    if page.request.method == "POST":
        action = page.field("action")
        name = page.field("username")
        try:
            if action == "add":
                role, password = page.field("role"), page.field("password")
                await page.db(lambda s: add_user(s, name, role, password, actor=page.actor))
                page.flash(_("Account %(user)s added.", user=name))
            elif action == "disable" and page.account is not None and name == page.account.name:
                page.flash(_("You cannot disable your own account; ask another admin."), "error")
            elif action == "disable":
                user = await page.db(lambda s: disable_user(s, name, actor=page.actor).id)
                page.state.sessions.drop_user(user)
                page.flash(_("Account %(user)s disabled.", user=name))
        except ConfigError as exc:
            page.flash(str(exc), "error")
        return page.redirect("/users")
    return page.render("users.html", users=await page.db(list_users), roles=ROLES)


ROUTES = [
    Route("/cases/{name}/export", export_page, methods=["POST"]),
    Route("/verify", verify_page, methods=["GET", "POST"]),
    Route("/audit", audit_page),
    Route("/users", users_page, methods=["GET", "POST"]),
]
