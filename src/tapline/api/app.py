"""The FastAPI application: REST under /api/v1, the console page at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse

from tapline import __version__
from tapline.accounts import Accounts
from tapline.api import alarms, auth, diagnostics, metrics, sites, stream
from tapline.api import users as user_routes
from tapline.api.errors import install_error_handlers
from tapline.auth import UserDirectory
from tapline.services import Services

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def create_app(services: Services, users: UserDirectory, *, public_read: bool = False) -> FastAPI:
    """The HTTP app. ``public_read`` lets read-only routes answer without a token (the demo)."""
    app = FastAPI(
        title="tapline",
        version=__version__,
        description="二次供水泵房云边协同监控平台 · secondary water supply pump-room monitoring and control",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.users = users
    accounts = services.extras.get("accounts")
    app.state.accounts = (
        accounts if isinstance(accounts, Accounts) and accounts.directory is users else Accounts(users, None)
    )
    app.state.public_read = public_read
    install_error_handlers(app)

    api = APIRouter(prefix="/api/v1")
    api.include_router(auth.router)
    api.include_router(sites.router)
    api.include_router(alarms.router)
    api.include_router(stream.router)
    api.include_router(user_routes.router)
    api.include_router(diagnostics.router)
    if services.extras.get("sim") is not None:
        # Only with an in-process simulator (demo, tests); imported here so `serve` never loads it.
        from tapline.api import sim

        api.include_router(sim.router)
    app.include_router(api)
    app.include_router(metrics.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/", include_in_schema=False)
    async def console() -> HTMLResponse:
        return HTMLResponse((UI_DIR / "index.html").read_text(encoding="utf-8"))

    return app
