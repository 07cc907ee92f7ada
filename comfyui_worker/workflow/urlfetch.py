"""Fetch an input image from a URL without letting a task input reach the worker's network.

Only with ``COMFYUI_ALLOW_INPUT_URLS=true``. On every hop (redirects are followed
here, one by one) the host is resolved and every address checked: loopback,
private, link-local, multicast, reserved and unspecified addresses (IPv4 and IPv6,
in every spelling the resolver accepts: ``2130706433``, ``0x7f000001``, ``127.1``,
``::ffff:127.0.0.1``) are refused unless listed in ``COMFYUI_INPUT_URL_ALLOW``. The
connection then goes to the address that was checked (no second lookup to rebind),
with the original name as Host and TLS server name. Environment proxies are ignored
unless ``COMFYUI_INPUT_URL_TRUST_ENV=true``. The whole fetch has one deadline, the
drain can cut it at any moment, and every failure after the address check reads the
same, so the error cannot be used to scan ports. Response bytes are never echoed.

``Fetcher.fetch`` raises our errors, naming what was fetched (``Subject``): a refused
or failed URL and a body over the limit are ``InvalidWorkflowError``; a fetch cut by
the drain is ``WorkerShuttingDownError``. ``pin`` (the address check, raising
``URLRefused`` or ``URLFailed``) also guards model downloads (``models/sources.py``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from comfyui_worker.errors import InvalidWorkflowError, UnreachableError, WorkerShuttingDownError
from comfyui_worker.settings import ComfySettings, redact_url
from comfyui_worker.transport import mapped

log = structlog.get_logger("comfyui_worker.workflow.urlfetch")

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


FETCH_FAILED = (
    "could not be fetched as an image (unreachable, an error status, a timeout, or not an "
    "image; the worker's log has the details)"
)


@dataclass(frozen=True)
class Subject:
    """What is fetched, as errors name it: ``image 'cat'``, its details, its limit's setting."""

    label: str
    limit_setting: str
    details: dict[str, Any] = field(default_factory=dict)


class URLRefused(Exception):
    """The URL may not be fetched (before any connection): the message says why."""


class URLFailed(Exception):
    """The fetch failed after the address check; details go to the log only."""


class _Interrupted(Exception):
    """The worker is shutting down: the fetch was abandoned (not the URL's fault)."""


class _TooLarge(Exception):
    """The body is over the size limit."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass(frozen=True)
class AllowList:
    """``COMFYUI_INPUT_URL_ALLOW``: host names and address ranges trusted despite the rules."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> AllowList:
        """Split entries into networks (``10.0.0.0/8``, ``::1``) and host names."""
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, address: Address) -> bool:
        """Whether the address is in a listed range."""
        return any(address in network for network in self.networks)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (as the OS parses numbers)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise URLFailed(f"cannot resolve {host}: {exc}") from None
    return [str(info[4][0]) for info in infos]


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are IPv4
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use, never public
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address; the server's is public by design
    if address in IPV4_COMPATIBLE or address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden(address: Address) -> str | None:
    """Why an address may not be fetched from, or None if it is a public unicast one.

    An IPv6 address that carries an IPv4 one (``::ffff:127.0.0.1``, ``::127.0.0.1``,
    ``64:ff9b::7f00:1``, ``2002:7f00:1::``) is judged by that IPv4 address: NAT64 and
    6to4 gateways would deliver to it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and int(inner) > 1:  # :: and ::1 are themselves below
            return forbidden(inner)
        if address.is_site_local or address in LOCAL_NAT64:
            return "a private or reserved address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if not address.is_global:
        return "a private or reserved address"
    return None


class Fetcher:
    """One settings-bound fetcher; ``fetch`` is blocking and interruptible by ``interrupt``."""

    def __init__(
        self,
        settings: ComfySettings,
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.allow = AllowList.parse(settings.input_url_allow)
        self.resolver = resolver
        self.transport = transport
        self._clients: set[httpx.Client] = set()
        self._waiters: set[threading.Event] = set()
        self._lock = threading.Lock()
        self._interrupted = threading.Event()

    def interrupt(self) -> None:
        """Abandon every fetch in flight now (the worker is draining); later ones fail fast."""
        self._interrupted.set()
        with self._lock:
            clients, waiters = list(self._clients), list(self._waiters)
        for waiter in waiters:
            waiter.set()
        for client in clients:
            client.close()

    def fetch(self, url: str, *, limit: int, subject: Subject) -> tuple[bytes, str]:
        """GET ``url`` following safe redirects; return the body and the final URL."""
        shown = describe_url(url)
        try:
            return self._fetch_threaded(url, limit)
        except URLRefused as exc:
            raise _invalid(subject, f"url '{shown}' {exc}", url=shown) from None
        except _TooLarge as exc:
            raise _invalid(
                subject,
                f"is {exc.size} bytes, over the limit of {limit} bytes ({subject.limit_setting})",
                size=exc.size,
                limit=limit,
            ) from None
        except _Interrupted:
            raise WorkerShuttingDownError(
                f"{subject.label}: fetching it was interrupted by the worker's shutdown"
            ) from None
        except URLFailed as exc:
            log.warning(
                "images.url_fetch_failed", subject=subject.label, url=shown, reason=str(exc)
            )
            raise _invalid(subject, f"url '{shown}' {FETCH_FAILED}", url=shown) from None

    def _fetch_threaded(self, url: str, limit: int) -> tuple[bytes, str]:
        """The fetch, on a thread of its own.

        The fetch runs on a thread of its own so ``interrupt`` returns control at once,
        even while a socket read is blocked; the abandoned thread ends at its deadline.
        """
        outcome: list[tuple[bytes, str] | BaseException] = []
        wake = threading.Event()

        def work() -> None:
            try:
                outcome.append(self._fetch_mapped(url, limit))
            except BaseException as exc:  # handed to the waiting caller below
                outcome.append(exc)
            finally:
                wake.set()

        with self._lock:
            self._waiters.add(wake)
        try:
            if self._interrupted.is_set():
                raise _Interrupted("the worker is shutting down")
            threading.Thread(target=work, name="url-fetch", daemon=True).start()
            wake.wait()
        finally:
            with self._lock:
                self._waiters.discard(wake)
        if not outcome or self._interrupted.is_set():
            raise _Interrupted("the worker is shutting down")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _fetch_mapped(self, url: str, limit: int) -> tuple[bytes, str]:
        try:
            return self._fetch(url, limit)
        except UnreachableError as exc:
            raise URLFailed(exc.message) from None

    def _fetch(self, url: str, limit: int) -> tuple[bytes, str]:
        ends = time.monotonic() + self.settings.input_url_timeout_s
        with self._client() as client:
            for _ in range(MAX_REDIRECTS + 1):
                target, host_header, sni = self._checked_target(url)
                remaining = ends - time.monotonic()
                if remaining <= 0:
                    raise URLFailed(f"deadline of {self.settings.input_url_timeout_s:g}s passed")
                location = self._get(client, target, host_header, sni, limit, ends)
                if isinstance(location, bytes):
                    return location, url
                url = str(httpx.URL(url).join(location))
        raise URLFailed(f"more than {MAX_REDIRECTS} redirects")

    def _client(self) -> _Tracked:
        client = httpx.Client(
            trust_env=self.settings.input_url_trust_env,
            follow_redirects=False,
            transport=self.transport,
        )
        return _Tracked(client, self)

    def _checked_target(self, url: str) -> tuple[httpx.URL, str, str]:
        """The URL to connect to (the checked address), its Host header and TLS name."""
        pinned = pin(url, self.allow, self.resolver, "COMFYUI_INPUT_URL_ALLOW")
        return pinned.target, pinned.host_header, pinned.sni

    def _get(
        self,
        client: httpx.Client,
        target: httpx.URL,
        host_header: str,
        sni: str,
        limit: int,
        ends: float,
    ) -> bytes | str:
        """One hop: the body, or the next location for a redirect."""
        timeout = max(min(self.settings.http_timeout_s, ends - time.monotonic()), 0.001)
        request = client.build_request(
            "GET",
            target,
            headers={"Host": host_header},
            timeout=httpx.Timeout(timeout),
            extensions={"sni_hostname": sni},
        )
        with mapped(service="image host", url=sni, kind=UnreachableError):
            response = client.send(request, stream=True)
            try:
                return self._body_or_location(response, limit, ends)
            finally:
                response.close()

    def _body_or_location(self, response: httpx.Response, limit: int, ends: float) -> bytes | str:
        if response.status_code in REDIRECTS and "location" in response.headers:
            return str(response.headers["location"])
        if not 200 <= response.status_code < 300:
            raise URLFailed(f"answered HTTP {response.status_code}")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _TooLarge(int(length))
        return _read(response, limit, ends, self._interrupted)


def _read(response: httpx.Response, limit: int, ends: float, interrupted: threading.Event) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise _TooLarge(len(data))
        if interrupted.is_set():
            raise _Interrupted("the worker is shutting down")
        if time.monotonic() > ends:
            raise URLFailed("the fetch deadline passed")
    return bytes(data)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise URLRefused(f"is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise URLRefused("must start with http:// or https://")
    if parsed.userinfo:
        raise URLRefused("must not carry credentials (user:password@)")
    if not parsed.host:
        raise URLRefused("has no host")
    return parsed


@dataclass(frozen=True)
class Pinned:
    """Where a checked URL connects: the address itself, the Host header and TLS name."""

    target: httpx.URL
    host_header: str
    sni: str


def pin(url: str, allow: AllowList, resolver: Resolver, allow_setting: str) -> Pinned:
    """Check every address ``url``'s host resolves to; the URL to connect to instead.

    Raises ``URLRefused`` (the message names ``allow_setting``) or ``URLFailed``.
    """
    parsed = _parse(url)
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, port)]
    if not addresses:
        raise URLFailed(f"{host} has no address")
    if host not in allow.hosts:
        for address in addresses:
            reason = None if allow.allows(address) else forbidden(address)
            if reason is not None:
                raise URLRefused(
                    f"{host} resolves to {address}, {reason}; add it to "
                    f"{allow_setting} if the worker may fetch from it"
                )
    host_header = parsed.netloc.decode("ascii")
    return Pinned(parsed.copy_with(host=str(addresses[0])), host_header, host)


class _Tracked:
    """A client the fetcher can close from another thread while it is in use."""

    def __init__(self, client: httpx.Client, owner: Fetcher) -> None:
        self.client = client
        self.owner = owner

    def __enter__(self) -> httpx.Client:
        with self.owner._lock:
            self.owner._clients.add(self.client)
        return self.client

    def __exit__(self, *exc_info: object) -> None:
        with self.owner._lock:
            self.owner._clients.discard(self.client)
        self.client.close()


def describe_url(url: str) -> str:
    """A URL as messages may show it: no credentials, no query (tokens live there)."""
    return redact_url(url).split("?")[0][:300]


def _invalid(subject: Subject, message: str, **details: Any) -> InvalidWorkflowError:
    return InvalidWorkflowError(f"{subject.label}: {message}", **subject.details, **details)
