"""The ASGI application (Starlette) of ``p2pwatch web``: request plumbing shared by every page (issue 14).

``p2pwatch.web.routes.build_app`` wires the routes of ``pages_cases``, ``pages_torrents`` and
``pages_admin``. Each page is a function ``async (Page) -> Response`` declared with ``@view(permission)``, which

* finds the session from its cookie (or starts an anonymous one, which has a CSRF token too),
* picks the language: the ``p2pwatch_lang`` cookie set by the switch, else Accept-Language,
* refuses a POST whose ``csrf`` field does not match the session's (403),
* sends a visitor who is not signed in to ``/signin``, and answers 403 to a role without the permission.

Database work runs in a worker thread (``Page.db``), one transaction per call, with sessions of the CLI's
kind made by one factory on the app's one engine (``WebState.db_sessions``; lookups reuse the engine too).
Templates are Jinja2 with autoescaping, rendered on the server. The only script is ``static/file-input.js``
(served from here, ``script-src 'self'``): it shows the chosen file names of the localised file pickers
(``templates/_file_input.html``); every page works without it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from p2pwatch import locale as i18n
from p2pwatch.config import MonitorConfig
from p2pwatch.errors import ConfigError, P2PWatchError
from p2pwatch.storage.db import first_line, writer_sessionmaker
from p2pwatch.web.accounts import Account, load_account
from p2pwatch.web.security import COOKIE, CSRF_FIELD, SessionStore, SignInLimiter, WebSession, csrf_ok

LANG_COOKIE = "p2pwatch_lang"
DRAIN_FACTOR = 4  # an oversized upload up to this many times the limit is read and discarded, then refused
TEMPLATES = Path(__file__).resolve().parent / "templates"
FILE_INPUT_SCRIPT = (Path(__file__).resolve().parent / "static" / "file-input.js").read_bytes()
T = TypeVar("T")


@dataclass
class WebState:
    """What every request shares: configuration, database, sessions, limiter, templates, lookup jobs."""

    config: MonitorConfig
    engine: Engine
    home: Path
    sessions: SessionStore
    limiter: SignInLimiter
    templates: jinja2.Environment
    #: the CLI's context object (home, db_url, config_file), for the functions the CLI commands share
    obj: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, Any] = field(default_factory=dict)
    #: database sessions of every request and lookup, on the one engine (disposed at the app's shutdown)
    db_sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.db_sessions = writer_sessionmaker(self.engine)


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)
    env.filters["quote"] = lambda text: quote(str(text), safe="")
    env.filters["bytes"] = lambda n: "" if n is None else f"{int(n):,}"
    return env


class Page:
    """One request as a page sees it: the account, the language, the form, rendering and the database."""

    def __init__(self, request: Request, state: WebState, token: str | None, session: WebSession,
                 account: Account | None, language: str, form: FormData | None) -> None:
        self.request, self.state, self.token, self.session = request, state, token, session
        self.account, self.language, self.form = account, language, form
        self.new_token: str | None = None

    @property
    def actor(self) -> str:
        return f"web:{self.account.name}" if self.account else "web:anonymous"

    @property
    def client(self) -> str:
        return self.request.client.host if self.request.client else ""

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def time(self, moment: Any) -> str:
        return i18n.local_time(moment, self.state.config.time_zone)

    def flash(self, message: str, kind: str = "ok") -> None:
        self.session.flash.append((kind, message))

    async def db(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in a worker thread, in one transaction (committed when it returns)."""
        def run() -> T:
            token = i18n.set_language(self.language)
            try:
                with self.state.db_sessions() as session, session.begin():
                    return work(session)
            finally:
                i18n.reset_language(token)
        return await run_in_threadpool(run)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        i18n.set_language(self.language)
        flashes, self.session.flash[:] = list(self.session.flash), []
        base = {"_": i18n.tr, "gettext": i18n.gettext, "ngettext": i18n.ngettext, "account": self.account,
                "csrf": self.session.csrf, "csrf_field": CSRF_FIELD, "lang": self.language, "t": self.time,
                "path": self.request.url.path, "flashes": flashes, "languages": i18n.LANGUAGES}
        body = self.state.templates.get_template(template).render(**base, **context)
        return HTMLResponse(body, status_code=status)

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    def error(self, status: int, message: str) -> HTMLResponse:
        return self.render("error.html", status=status, message=message)


def _set_cookie(response: Response, state: WebState, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=state.config.web.session_minutes * 60, path="/", httponly=True,
                        samesite="strict", secure=state.config.web.secure_cookies)


def language_of(request: Request) -> str:
    chosen = i18n.normalize_language(request.cookies.get(LANG_COOKIE))
    return chosen or i18n.negotiate(request.headers.get("accept-language"))


PageFunction = Callable[[Page], Awaitable[Response]]


def view(permission: str | None = "cases", *, max_form_bytes: int = 1 << 20
         ) -> Callable[[PageFunction], Callable[[Request], Awaitable[Response]]]:
    """Wrap a page: session, language, CSRF on POST, sign-in and role checks (see the module docstring)."""

    def wrap(func: PageFunction) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(func)
        async def endpoint(request: Request) -> Response:
            state: WebState = request.app.state.web
            token = request.cookies.get(COOKIE)
            session = state.sessions.get(token)
            new_token = None
            if session is None:
                new_token, session = state.sessions.new()
            language = language_of(request)
            account = None
            if session.user_id is not None:
                user_id = session.user_id
                account = await run_in_threadpool(_load, state.db_sessions, user_id)
                if account is None:  # disabled or gone: the session ends here
                    state.sessions.drop(token)
                    new_token, session = state.sessions.new()
            form = None
            page = Page(request, state, new_token or token, session, account, language, None)
            if request.method == "POST":
                limit = state.config.web.max_upload_mb * 1024 * 1024
                try:
                    declared = int(request.headers.get("content-length") or 0)
                except ValueError:
                    declared = 0
                if declared > limit:
                    if declared <= DRAIN_FACTOR * limit:
                        # read the refused body to its end, so a client that sends it all before reading (urllib,
                        # curl) gets the 413 instead of a broken pipe; far larger ones are cut off at once
                        async for _chunk in request.stream():
                            pass
                    return _finish(page.error(413, i18n.tr("The upload is larger than the %(n)s MB this server "
                                                           "accepts.", n=state.config.web.max_upload_mb)),
                                   state, page, new_token)
                form = await request.form(max_files=4, max_fields=200, max_part_size=max_form_bytes)
                page.form = form
                if not csrf_ok(None if new_token else session, form.get(CSRF_FIELD)):
                    response: Response = page.error(403, i18n.tr(
                        "This form has expired or did not come from this site. Go back, reload the page "
                        "and try again."))
                    await form.close()
                    return _finish(response, state, page, new_token)
            if permission is not None and account is None:
                response = page.redirect("/signin?next=" + quote(request.url.path, safe=""))
            elif permission is not None and account is not None and not account.can(permission):
                response = page.error(403, i18n.tr("Your role does not allow this page."))
            else:
                try:
                    response = await func(page)
                except P2PWatchError as exc:  # bad input or a failed operation: one clear line, never a 500
                    response = page.error(409 if isinstance(exc, ConfigError) else 500, first_line(exc))
                finally:
                    if form is not None:
                        await form.close()
            return _finish(response, state, page, new_token)

        return endpoint

    return wrap


def _finish(response: Response, state: WebState, page: Page, new_token: str | None) -> Response:
    token = page.new_token or new_token
    if token:
        _set_cookie(response, state, token)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


async def file_input_script(request: Request) -> Response:
    """``/static/file-input.js``: the file pickers' script (no session, no cookie)."""
    return Response(FILE_INPUT_SCRIPT, media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def _load(sessions: sessionmaker[Session], user_id: int) -> Account | None:
    with sessions() as session:
        return load_account(session, user_id)
