"""Bearer-token authentication (ASGI middleware).

When a key is configured, every route except /health needs `Authorization: Bearer <key>`;
anything else gets 401 before the request body is read. Both sides are hashed to equal
length first and compared with `hmac.compare_digest`, so the comparison takes the same time
whatever the key or the guess (their lengths included).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from titaninfer.server.limits import send_error


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BearerAuth:
    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key_digest = _digest(api_key.encode("utf-8"))

    def authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.strip().partition(b" ")
        # Compare even when the scheme is wrong, so a bad scheme costs the same time.
        match = hmac.compare_digest(_digest(token.strip()), self._key_digest)
        return match and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        await send_error(send, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                         code="invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])
