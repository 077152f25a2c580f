"""HTTP client of the simulator's fault API, for ``tapline sim inject|clear|faults``.

It logs in (``POST /auth/token``) and calls ``/sim/faults`` of a running demo (or of ``tapline sim
rooms --api-port``). The only module of the simulator that imports httpx; its errors and the API's
JSON errors become ``SimApiError`` here. ``transport`` lets tests run it against an in-process app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from tapline.sim.faults import ParamValue

__all__ = ["FaultApi", "SimApiError", "parse_params"]


class SimApiError(Exception):
    """The API refused the request (``status``, ``code`` from its JSON error) or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: str = "unreachable") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_params(items: Sequence[str]) -> dict[str, ParamValue]:
    """``["code=8976", "to_mpa=0.1", "point=plc/Flow"]`` → typed values (int, float, bool, else text)."""
    params: dict[str, ParamValue] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"a parameter is name=value, got {item!r}")
        value: ParamValue
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            try:
                value = int(text, 0)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        params[name] = value
    return params


class FaultApi:
    """``/api/v1/sim/faults`` of one tapline API, logged in as one user."""

    def __init__(
        self, api: str, user: str, password: str, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.api = api.rstrip("/")
        self.user = user
        self.password = password
        self._transport = transport

    async def inject(
        self,
        kind: str,
        *,
        site: str | None = None,
        district: str | None = None,
        device: str | None = None,
        params: dict[str, ParamValue] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "params": params or {}}
        body.update({k: v for k, v in (("site", site), ("district", district), ("device", device)) if v})
        return await self._call("POST", "/sim/faults", json=body)

    async def clear(self, fault_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/sim/faults/{fault_id}")

    async def faults(self) -> dict[str, Any]:
        return await self._call("GET", "/sim/faults")

    async def _call(self, method: str, path: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(
                base_url=f"{self.api}/api/v1", timeout=10.0, transport=self._transport
            ) as http:
                credentials = {"username": self.user, "password": self.password}
                login = await http.post("/auth/token", data=credentials)
                token = _json(login)["access_token"]
                response = await http.request(
                    method, path, json=json, headers={"Authorization": f"Bearer {token}"}
                )
                return _json(response)
        except httpx.HTTPError as exc:
            raise SimApiError(f"cannot reach the tapline API at {self.api}: {exc}") from exc


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "http_error")), str(error.get("message", ""))
    elif response.status_code == 404:
        code, message = "not_found", "no such route: does this API run a simulator (tapline demo)?"
    else:
        code, message = "http_error", response.text[:200]
    raise SimApiError(f"{code}: {message} (HTTP {response.status_code})", response.status_code, code)
