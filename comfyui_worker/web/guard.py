"""Who may use the jobs page, and from where.

- With ``WORKER_UI_TOKEN``, every API call needs the token: as ``Authorization:
  Bearer`` (scripts) or as the session cookie ``/api/login`` sets (the page, so
  thumbnails load too). The cookie holds an HMAC of the token, never the token, and
  is ``HttpOnly; SameSite=Strict``.
- Without a token the page listens on loopback only (``jobsettings`` refuses
  otherwise), and a request must name a loopback host or the bound one in ``Host``:
  a web page elsewhere cannot reach it by rebinding a DNS name to 127.0.0.1.
- Writes must be JSON and, when the browser says where they come from (``Origin``),
  come from the page itself: no other site can post a form at it.
"""

from __future__ import annotations

import hashlib
import hmac
from email.message import Message
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

from comfyui_worker.jobs.settings import UiSettings, is_loopback

COOKIE = "comfyui_worker_ui"


class Guard:
    """The checks each request passes before it reaches the API."""

    def __init__(self, ui: UiSettings) -> None:
        self.host = ui.host
        token = ui.token.get_secret_value() if ui.token is not None else None
        self._token = token.encode() if token else None
        self._session = (
            hmac.new(self._token, b"comfyui-worker-ui-session", hashlib.sha256).hexdigest()
            if self._token
            else None
        )

    @property
    def needs_login(self) -> bool:
        """Whether a token protects the API."""
        return self._token is not None

    def host_ok(self, host_header: str | None) -> bool:
        """Without a token, only requests addressed to this machine by name or address."""
        if self._token is not None:
            return True
        name = urlsplit(f"//{host_header or ''}").hostname or ""
        return is_loopback(name) or name == self.host.strip("[]").lower()

    def same_origin(self, headers: Message) -> bool:
        """A browser's write comes from this page (no ``Origin``: not a browser form)."""
        origin = headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == headers.get("Host", "")

    def authorized(self, headers: Message) -> bool:
        """The bearer token or the session cookie (always, without a token)."""
        if self._token is None or self._session is None:
            return True
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), self._token):
            return True
        cookie = SimpleCookie(headers.get("Cookie") or "").get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.value, self._session)

    def login(self, token: str) -> str | None:
        """The ``Set-Cookie`` value for the right token, else None."""
        if self._token is None or self._session is None:
            return None
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return f"{COOKIE}={self._session}; HttpOnly; SameSite=Strict; Path=/"
