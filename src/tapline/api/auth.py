"""``POST /auth/token`` (OAuth2 password flow) and the role dependency routes use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request

from tapline.api.errors import ApiError
from tapline.auth import AuthError, Principal, Role, UserDirectory

router = APIRouter(tags=["auth"])


def directory(request: Request) -> UserDirectory:
    users: UserDirectory = request.app.state.users
    return users


@router.post("/auth/token")
async def token(
    request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]
) -> dict[str, Any]:
    """Exchange user name and password for a bearer token."""
    users = directory(request)
    try:
        user = users.authenticate(username, password)
    except AuthError as exc:
        raise ApiError(401, "invalid_credentials", str(exc)) from None
    return {
        "access_token": users.issue(user),
        "token_type": "bearer",
        "role": user.role.label,
        "expires_in": users.token_ttl_s,
    }


def authorise(request: Request, role: Role, token: str | None = None) -> Principal | None:
    """Who is calling, who must hold at least ``role``: the bearer token of the ``Authorization``
    header, else ``token`` (``GET /stream`` takes one as ``?access_token=``: browsers' EventSource
    cannot send headers). Read-only access (``Role.VIEWER``) needs none when the app allows public
    reads (the demo)."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise ApiError(401, "unauthorized", "expected 'Authorization: Bearer <token>'")
        token = value.strip()
    if not token:
        if role is Role.VIEWER and getattr(request.app.state, "public_read", False):
            return None
        raise ApiError(
            401, "unauthorized", "log in: POST /api/v1/auth/token, then send 'Authorization: Bearer …'"
        )
    try:
        principal = directory(request).verify(token)
    except AuthError as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None
    if principal.role < role:
        raise ApiError(403, "forbidden", f"needs role {role.label}, you are {principal.role.label}")
    return principal


def require(role: Role) -> Callable[[Request], Awaitable[Principal | None]]:
    """A dependency: the caller must hold at least ``role`` (see ``authorise``).

    Read-only routes pass ``Role.VIEWER``; when the app allows public reads (the demo), those need no
    token at all, so ``curl /api/v1/sites`` works out of the box.
    """

    async def dependency(request: Request) -> Principal | None:
        return authorise(request, role)

    return dependency


Viewer = Annotated[Principal | None, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal | None, Depends(require(Role.OPERATOR))]
Engineer = Annotated[Principal | None, Depends(require(Role.ENGINEER))]
Admin = Annotated[Principal | None, Depends(require(Role.ADMIN))]
