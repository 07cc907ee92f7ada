"""The fake's WebSocket fan-out: open sockets by client id and one ordered outbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSCloseCode, web


class Hub:
    """Open WebSockets by client id, and one ordered outbox (sid None: every socket)."""

    def __init__(self) -> None:
        self.by_sid: dict[str, web.WebSocketResponse] = {}
        self.open: dict[web.WebSocketResponse, web.Request] = {}
        self.outbox: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()

    def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """Queue a message; messages leave in order."""
        self.outbox.put_nowait((json.dumps({"type": event, "data": data}), sid))

    async def publish(self) -> None:
        """Deliver queued messages, forever."""
        while True:
            text, sid = await self.outbox.get()
            everyone = sid is None
            for ws in [s for key, s in self.by_sid.items() if everyone or key == sid]:
                with contextlib.suppress(Exception):
                    await ws.send_str(text)

    async def close_all(self, *, abrupt: bool) -> None:
        """Close every socket (abrupt: drop the TCP connection without a close frame)."""
        for ws, request in list(self.open.items()):
            if abrupt and request.transport is not None:
                request.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server restart")
