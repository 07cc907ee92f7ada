"""The jobs page's routes: each turns one request into a call of ``api.UiApi``.

The server (``server.py``) has already checked the Host, the origin of writes and,
except for the two public routes, the token. Routes see the request through the
``Request`` protocol, so this module does not import the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import Message
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from comfyui_worker.web.api import UiApi
from comfyui_worker.web.guard import Guard

JOB = r"/api/jobs/(?P<id>[A-Za-z0-9._-]{1,128})"
DEFAULT_LIMIT = 50

Headers = dict[str, str]


class App(Protocol):
    """What routes need of the server: the guard and the API."""

    @property
    def guard(self) -> Guard:
        """Tokens, cookies, hosts and origins."""

    @property
    def api(self) -> UiApi:
        """The jobs, as the page sees them."""


class Request(Protocol):
    """One request as routes see it (the server's handler)."""

    path: str

    @property
    def app(self) -> App:
        """The server this request arrived at."""

    @property
    def headers(self) -> Message:
        """The request's headers."""

    def body(self) -> object:
        """The JSON body, parsed and bounded."""

    def reply(self, data: object, status: int = 200, headers: Headers | None = None) -> None:
        """Answer with JSON."""

    def stream(self, media_type: str, filename: str, chunks: Any) -> None:
        """Answer with a file, streamed."""


Route = Callable[..., None]


def _session(handler: Request) -> None:
    guard = handler.app.guard
    handler.reply({"login": guard.needs_login, "ok": guard.authorized(handler.headers)})


def _login(handler: Request) -> None:
    body = handler.body()
    token = body.get("token") if isinstance(body, dict) else None
    cookie = handler.app.guard.login(str(token or ""))
    if cookie is None and handler.app.guard.needs_login:
        return handler.reply({"error": "unauthorized", "message": "wrong token"}, 401)
    handler.reply({"ok": True}, headers={"Set-Cookie": cookie} if cookie else None)
    return None


def _catalog(handler: Request) -> None:
    handler.reply(handler.app.api.catalog())


def _list(handler: Request) -> None:
    query = parse_qs(urlsplit(handler.path).query)
    limit = query.get("limit", [""])[0]
    tab = query.get("tab", ["active"])[0]
    handler.reply(handler.app.api.tab(tab, int(limit) if limit.isdigit() else DEFAULT_LIMIT))


def _show(handler: Request, id: str) -> None:
    handler.reply(handler.app.api.job(id))


def _submit(handler: Request) -> None:
    handler.reply(handler.app.api.submit(handler.body()), 201)


def _retry(handler: Request, id: str) -> None:
    handler.reply(handler.app.api.retry(id), 201)


def _cancel(handler: Request, id: str) -> None:
    handler.reply(handler.app.api.cancel(id))


def _output(handler: Request, id: str, index: str) -> None:
    with handler.app.api.output(id, int(index)) as (output, chunks):
        handler.stream(output.media_type, output.filename, chunks)


GET_ROUTES: list[tuple[re.Pattern[str], Route]] = [
    (re.compile(r"/api/session"), _session),
    (re.compile(r"/api/templates"), _catalog),
    (re.compile(r"/api/jobs"), _list),
    (re.compile(JOB), _show),
    (re.compile(JOB + r"/outputs/(?P<index>\d{1,6})"), _output),
]
POST_ROUTES: list[tuple[re.Pattern[str], Route]] = [
    (re.compile(r"/api/login"), _login),
    (re.compile(r"/api/jobs"), _submit),
    (re.compile(JOB + r"/retry"), _retry),
    (re.compile(JOB + r"/cancel"), _cancel),
]
PUBLIC = (_session, _login)
