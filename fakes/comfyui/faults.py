"""Request faults a test can arm (FakeComfyUI's fault controls), applied by one middleware.

A rule matches a method (``"*"``: any) and an fnmatch pattern, tried on the path with and
without its ``/api`` prefix. Every request is recorded before any fault applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web

INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
_CUT: web.RequestKey[int | None] = web.RequestKey("cut_after")  # body bytes sent before a cut
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def internal_error() -> web.Response:
    """The 500 aiohttp sends when a ComfyUI handler raises (and closes the connection)."""
    response = web.Response(status=500, text=INTERNAL_ERROR_TEXT)
    response.force_close()
    return response


@dataclass
class Rule:
    """One armed fault."""

    kind: str
    method: str
    pattern: str
    count: int | None = None  # None: until cleared
    status: int = 500
    seconds: float = 0.0
    after_bytes: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to the request."""
        paths = (path, path[4:]) if path.startswith("/api/") else (path,)
        matching = any(fnmatch.fnmatchcase(p, self.pattern) for p in paths)
        return matching and self.method in ("*", method)


class Faults:
    """The armed faults, shared between the test thread and the server loop.

    Its public methods are FakeComfyUI's fault controls (FakeComfyUI exposes them).
    """

    def __init__(self, record: Callable[[str, str], None]) -> None:
        self._record = record
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._hung: list[tuple[asyncio.Future[bool], web.Request]] = []
        self._nodes: dict[str, tuple[str, str]] = {}

    def fail_node(
        self, class_type: str, exception_type: str = "Exception", message: str = "Fake failure"
    ) -> None:
        """Make every node of ``class_type`` raise when it runs (an execution_error)."""
        self._nodes[class_type] = (exception_type, message)

    def clear_failures(self) -> None:
        """Undo fail_node()."""
        self._nodes.clear()

    def node_failure(self, class_type: str) -> tuple[str, str] | None:
        """(exception type, message) armed for ``class_type``, if any."""
        return self._nodes.get(class_type)

    def fail_requests(self, method: str, path: str, count: int, status: int = 500) -> None:
        """Answer the next ``count`` matching requests with ``status``, without handling them."""
        self._arm(Rule("fail", method.upper(), path, count, status=status))

    def delay_requests(
        self, method: str, path: str, seconds: float, *, after: bool = False
    ) -> None:
        """Delay every matching request (0 s removes); ``after``: handle first, answer late."""
        self._arm(Rule("late" if after else "delay", method.upper(), path, seconds=seconds))

    def cut_requests(self, method: str, path: str, count: int, *, after_bytes: int = 0) -> None:
        """Handle the next ``count`` matching requests, then drop the connection.

        The client gets ``after_bytes`` bytes of the response body first (0: no answer at
        all): a download cut mid-file, or a lost answer to a POST that was done.
        """
        self._arm(Rule("cut", method.upper(), path, count, after_bytes=after_bytes))

    def hang_requests(self, method: str, path: str, count: int) -> None:
        """Hold the next ``count`` matching requests, unhandled, until release_hung() or stop."""
        self._arm(Rule("hang", method.upper(), path, count))

    def clear_request_faults(self) -> None:
        """Disarm fail/delay/cut/hang rules (requests already hung stay hung)."""
        with self._lock:
            self._rules.clear()

    def _arm(self, rule: Rule) -> None:
        same = (rule.kind, rule.method, rule.pattern)
        with self._lock:
            if rule.count is None:  # delay and late replace the rule for the same request
                self._rules = [r for r in self._rules if (r.kind, r.method, r.pattern) != same]
            if (rule.count > 0) if rule.count is not None else (rule.seconds > 0):
                self._rules.append(rule)

    def _take(self, method: str, path: str) -> dict[str, Rule]:
        """The first matching rule of each kind, using up one of its counted uses."""
        taken: dict[str, Rule] = {}
        with self._lock:
            for rule in self._rules:
                if rule.kind not in taken and rule.matches(method, path):
                    taken[rule.kind] = rule
                    if rule.count is not None:
                        rule.count -= 1
            self._rules = [r for r in self._rules if r.count is None or r.count > 0]
        return taken

    def release(self, *, answer: bool = True) -> None:
        """Let hung requests go on (answer=False: drop their connections). Loop thread only."""
        hung, self._hung = self._hung, []
        for future, request in hung:
            if not answer and request.transport is not None:
                request.transport.abort()
            if not future.done():
                future.set_result(answer)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the request, then apply whatever faults match it."""
        self._record(request.method, request.path)
        rules = self._take(request.method, request.path)
        if "hang" in rules:
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._hung.append((future, request))
            if not await future:
                return web.Response(status=503)  # never sent: the connection is gone
        if "delay" in rules:
            await asyncio.sleep(rules["delay"].seconds)
        if "fail" in rules:
            status = rules["fail"].status
            if status == 500:
                return internal_error()
            return web.Response(status=status, text=f"{status}: {HTTPStatus(status).phrase}")
        if "cut" in rules:
            request[_CUT] = rules["cut"].after_bytes
        response = await handler(request)
        if "late" in rules:
            await asyncio.sleep(rules["late"].seconds)
        body = response.body if isinstance(response, web.Response) else None
        if request.get(_CUT) is None or not isinstance(body, bytes) or response.prepared:
            return response
        partial = web.StreamResponse(status=response.status, headers=response.headers)
        partial.content_length = len(body)
        await send_chunks(request, partial, [body])  # a JSON answer, cut
        return partial


async def send_chunks(
    request: web.Request, response: web.StreamResponse, chunks: Iterable[bytes]
) -> None:
    """Prepare ``response`` and write ``chunks``, honouring a cut armed for this request.

    A cut after N bytes sends the headers and the first N bytes of the body, then closes
    the connection (the client sees a truncated body; a body of N bytes or less is sent
    whole); a cut after 0 bytes closes the connection before the headers. aiohttp then
    finds the connection gone and moves on.
    """
    limit = request.get(_CUT)
    request[_CUT] = None
    transport = request.transport
    if limit == 0:
        if transport is not None:
            transport.abort()
        return
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        sent = 0
        for chunk in chunks:
            if limit is not None and sent + len(chunk) > limit:
                await response.write(chunk[: limit - sent])
                if transport is not None:
                    transport.close()  # flushes what was written, then FIN
                return
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
