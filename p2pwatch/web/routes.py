"""The app's route table: every page module's ``ROUTES`` on one Starlette app with its shared state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import Route

from p2pwatch.config import MonitorConfig
from p2pwatch.web import pages_admin, pages_cases, pages_torrents
from p2pwatch.web.app import WebState, file_input_script, make_templates
from p2pwatch.web.security import SessionStore, SignInLimiter


def build_app(config: MonitorConfig, engine: Engine, home: Path, obj: dict[str, Any] | None = None) -> Starlette:
    """The app over ``engine``, which every request and lookup shares and the app's shutdown disposes of."""
    routes: list[Route] = [*pages_cases.ROUTES, *pages_torrents.ROUTES, *pages_admin.ROUTES,
                           Route("/static/file-input.js", file_input_script)]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.web = WebState(config=config, engine=engine, home=home,
                             sessions=SessionStore(config.web.session_minutes * 60),
                             limiter=SignInLimiter(config.web.signin_attempts, config.web.signin_window),
                             templates=make_templates(), obj=dict(obj or {"home": home}))
    return app
