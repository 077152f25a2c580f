"""``/users``: accounts (admin), and ``/users/me`` for everyone logged in. Routes only translate HTTP
to ``accounts.Accounts``: unknown user 404, existing name 409, the last admin 409 ``last_admin``, a
short password 422 ``weak_password``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from tapline.accounts import (
    NAME_PATTERN,
    AccountError,
    Accounts,
    LastAdmin,
    UnknownUser,
    UserExists,
    WeakPassword,
    WrongPassword,
    user_dict,
)
from tapline.api.auth import Admin, require
from tapline.api.errors import ApiError
from tapline.auth import Principal, Role

router = APIRouter(tags=["users"])
_T = TypeVar("_T")

RoleName = Annotated[str, Field(pattern="^(viewer|operator|engineer|admin)$")]
Password = Annotated[str, Field(min_length=1, max_length=200)]
LoggedIn = Annotated[Principal | None, Depends(require(Role.VIEWER))]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(_Body):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    password: Password
    role: RoleName
    display_name: Annotated[str, Field(max_length=200)] = ""


class UserChange(_Body):
    role: RoleName | None = None
    display_name: Annotated[str | None, Field(max_length=200)] = None
    disabled: bool | None = None
    password: Password | None = None


class PasswordChange(_Body):
    current: Password
    new: Password


def _accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


async def _call(action: Awaitable[_T]) -> _T:
    try:
        return await action
    except UnknownUser as exc:
        raise ApiError(404, "user_not_found", f"no user {exc.args[0]!r}") from None
    except UserExists as exc:
        raise ApiError(409, "user_exists", f"user {exc.args[0]!r} exists") from None
    except LastAdmin as exc:
        raise ApiError(409, "last_admin", str(exc)) from None
    except WeakPassword as exc:
        raise ApiError(422, "weak_password", str(exc)) from None
    except WrongPassword as exc:
        raise ApiError(403, "wrong_password", str(exc)) from None
    except AccountError as exc:  # pragma: no cover - every subclass is mapped above
        raise ApiError(400, "account_error", str(exc)) from None


@router.get("/users")
async def list_users(request: Request, _: Admin) -> list[dict[str, Any]]:
    return _accounts(request).listing()


@router.post("/users", status_code=201)
async def create_user(request: Request, _: Admin, body: NewUser) -> dict[str, Any]:
    """Create an account (passwords: at least 8 characters)."""
    accounts = _accounts(request)
    user = await _call(accounts.create(body.name, body.password, Role.parse(body.role), body.display_name))
    return user_dict(user)


@router.patch("/users/{name}")
async def change_user(request: Request, _: Admin, name: str, body: UserChange) -> dict[str, Any]:
    """Change role, display name, disabled flag or password (the last admin stays an admin)."""
    role = Role.parse(body.role) if body.role is not None else None
    user = await _call(
        _accounts(request).update(
            name, role=role, display_name=body.display_name, disabled=body.disabled, password=body.password
        )
    )
    return user_dict(user)


@router.delete("/users/{name}", status_code=204)
async def delete_user(request: Request, _: Admin, name: str) -> None:
    await _call(_accounts(request).delete(name))


@router.get("/users/me")
async def me(request: Request, principal: LoggedIn) -> dict[str, Any]:
    if principal is None:
        raise ApiError(401, "unauthorized", "log in first")
    user = _accounts(request).directory.get(principal.name)
    if user is None:
        raise ApiError(401, "unauthorized", "user no longer exists")
    return user_dict(user)


@router.post("/users/me/password", status_code=204)
async def change_password(request: Request, principal: LoggedIn, body: PasswordChange) -> None:
    if principal is None:
        raise ApiError(401, "unauthorized", "log in first")
    await _call(_accounts(request).change_own_password(principal.name, body.current, body.new))
