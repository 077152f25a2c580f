"""Webhook channel: POST one JSON document per notice (the only module in notify that imports httpx).

Rules:
- The body is ``Notice.as_dict()`` as compact UTF-8 JSON (Chinese kept as is, not \\u-escaped).
- With a secret for the recipient, the body is signed: ``X-Tapline-Signature: sha256=<hex HMAC-SHA256
  of the exact body bytes>``; a receiver recomputes it over the raw body before parsing. The body
  carries ``created_ms``, so a receiver can also refuse stale replays.
- A 2xx answer is delivery. A timeout, a connection failure, 408, 429 or 5xx is a retryable
  ``DeliveryError``; any other status (a 4xx: wrong URL, bad signature) is not, since sending the
  same thing again will be refused again. Redirects are not followed (a moved endpoint is config).
- One short-lived client per notice (with a TLS context built once): alarms are rare and bursty, and
  a pooled keep-alive connection would mostly be found closed by the receiver when the next comes.
- httpx exceptions never leave this module.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

import httpx
import orjson

from tapline.notify.errors import DeliveryError
from tapline.notify.policy import Notice

SIGNATURE_HEADER = "X-Tapline-Signature"
_RETRYABLE_STATUS = frozenset({408, 429})


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookChannel:
    """Delivers notices by HTTP POST; ``secrets`` maps recipient names to their signing secret."""

    def __init__(
        self,
        secrets: Mapping[str, str] | None = None,
        *,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._secrets = dict(secrets or {})
        self._timeout = httpx.Timeout(timeout_s)
        self._client = client
        # Built once: loading the CA bundle costs more than a whole local request would.
        self._tls = httpx.create_ssl_context()

    async def send(self, notice: Notice) -> None:
        """POST ``notice`` to its address; ``DeliveryError`` unless the answer is 2xx."""
        body = orjson.dumps(notice.as_dict())
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "tapline-notify"}
        secret = self._secrets.get(notice.recipient)
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        try:
            if self._client is not None:
                response = await self._client.post(
                    notice.address, content=body, headers=headers, timeout=self._timeout
                )
            else:
                async with httpx.AsyncClient(
                    timeout=self._timeout, verify=self._tls, follow_redirects=False
                ) as client:
                    response = await client.post(notice.address, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"webhook {notice.address} timed out") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {notice.address} failed: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        raise DeliveryError(f"webhook {notice.address} answered {status}", retryable=retryable)
