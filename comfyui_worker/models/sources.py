"""Where model bytes come from: an https URL behind the SSRF guard, or an S3 object.

``Sources.open(model, offset)`` yields a ``Body`` starting at ``offset`` when the source
can resume there (HTTP ``Range``, S3 ranged GETs), else at 0. HTTP redirects are
followed one by one, each hop's addresses checked by ``workflow/urlfetch.pin`` against
``COMFYUI_MODELS_URL_ALLOW``; the bearer token (``COMFYUI_MODELS_TOKEN``) goes only to
the hosts of ``COMFYUI_MODELS_TOKEN_HOSTS``, so a task naming its own host never
receives it, and a redirect to a CDN drops it. S3 uses the outputs' settings and
client (``outputs/objstore``). Errors: a refused URL and a 4xx are the task's fault
(``InvalidWorkflowError``); a cut, a timeout, a 5xx are ``ModelSourceError`` (retried,
resuming).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import obstore
from obstore.exceptions import BaseError
from obstore.exceptions import NotFoundError as ObjectMissing

from comfyui_worker.errors import (
    ConfigError,
    InvalidWorkflowError,
    ModelSourceError,
    WorkerShuttingDownError,
)
from comfyui_worker.outputs.objstore import ObjectStore
from comfyui_worker.settings import ComfySettings
from comfyui_worker.transport import mapped_chunks, unreachable
from comfyui_worker.workflow.modeldecl import ModelDecl
from comfyui_worker.workflow.urlfetch import (
    AllowList,
    Pinned,
    Resolver,
    URLFailed,
    URLRefused,
    describe_url,
    pin,
    system_resolver,
)

if TYPE_CHECKING:
    from obstore import GetOptions

CHUNK_BYTES = 1024 * 1024
S3_SEGMENT_BYTES = 256 * 1024 * 1024  # one ranged GET each: no request outlives its timeout
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
ALLOW_SETTING = "COMFYUI_MODELS_URL_ALLOW"


@dataclass(frozen=True)
class Body:
    """A model's bytes from ``offset`` on; ``total_bytes`` is the whole file's size if known."""

    offset: int
    total_bytes: int | None
    chunks: Iterator[bytes]


class Sources:
    """Opens model sources; ``interrupt`` cuts every download in flight (the drain)."""

    def __init__(self, settings: ComfySettings, *, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.allow = AllowList.parse(settings.models_url_allow)
        self.resolver = resolver
        self._stores: dict[str, ObjectStore] = {}
        self._clients: set[httpx.Client] = set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.interrupted = threading.Event()

    def interrupt(self) -> None:
        """Close every HTTP connection in flight (their reads fail at once); open no more."""
        self.interrupted.set()
        with self._lock:
            clients, sockets = list(self._clients), list(self._sockets)
        for sock in sockets:  # closing alone would not wake a thread blocked reading it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for client in clients:
            client.close()

    @contextmanager
    def open(self, model: ModelDecl, offset: int) -> Iterator[Body]:
        """The model's bytes, resumed at ``offset`` where the source allows."""
        if self.interrupted.is_set():
            raise WorkerShuttingDownError(
                f"model '{model.name}': not downloaded, the worker is shutting down"
            )
        if model.url.lower().startswith("s3://"):
            yield self._s3(model, offset)
            return
        with self._http(model, offset) as body:
            yield body

    # --- https ----------------------------------------------------------------------

    @contextmanager
    def _http(self, model: ModelDecl, offset: int) -> Iterator[Body]:
        client = httpx.Client(trust_env=False, follow_redirects=False)
        with self._lock:
            self._clients.add(client)
        try:
            url = model.url
            for _ in range(MAX_REDIRECTS + 1):
                response = self._get(client, model, url, offset)
                if response.status_code in REDIRECTS and "location" in response.headers:
                    response.close()
                    url = str(httpx.URL(url).join(response.headers["location"]))
                    continue
                sock = _socket_of(response)
                if sock is not None:
                    with self._lock:
                        self._sockets.add(sock)
                try:
                    yield self._body(model, url, response, offset)
                finally:
                    if sock is not None:
                        with self._lock:
                            self._sockets.discard(sock)
                    response.close()
                return
            raise ModelSourceError(
                f"model '{model.name}': more than {MAX_REDIRECTS} redirects from "
                f"'{describe_url(model.url)}'",
                model=model.key,
            )
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def _get(self, client: httpx.Client, model: ModelDecl, url: str, offset: int) -> httpx.Response:
        shown = describe_url(url)
        try:
            pinned = pin(url, self.allow, self.resolver, ALLOW_SETTING)
        except URLRefused as exc:
            raise InvalidWorkflowError(
                f"model '{model.name}': url '{shown}' {exc}", model=model.key, url=shown
            ) from None
        except URLFailed as exc:
            raise ModelSourceError(
                f"model '{model.name}': url '{shown}': {exc}", model=model.key, url=shown
            ) from None
        if httpx.URL(url).scheme == "http" and not self._allowed(pinned):
            raise InvalidWorkflowError(
                f"model '{model.name}': url '{shown}' must be https:// (plain http only to a "
                f"host in {ALLOW_SETTING})",
                model=model.key,
                url=shown,
            )
        headers = {"Host": pinned.host_header, **self.settings.models_headers(pinned.sni)}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = client.build_request(
            "GET",
            pinned.target,
            headers=headers,
            timeout=httpx.Timeout(self.settings.http_timeout_s),
            extensions={"sni_hostname": pinned.sni},
        )
        try:
            return client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _cut(exc, model, shown) from None

    def _allowed(self, pinned: Pinned) -> bool:
        """Whether the allow-list names this host or its address (a trusted internal store)."""
        if pinned.sni in self.allow.hosts:
            return True
        return self.allow.allows(ipaddress.ip_address(pinned.target.host))

    def _body(self, model: ModelDecl, url: str, response: httpx.Response, offset: int) -> Body:
        shown = describe_url(url)
        status = response.status_code
        if status == 416 and offset:  # the partial file is no prefix of this one: start over
            raise RestartDownload()
        if 400 <= status < 500:
            raise InvalidWorkflowError(
                f"model '{model.name}': url '{shown}' answered HTTP {status}",
                model=model.key,
                url=shown,
                status=status,
            )
        if not 200 <= status < 300:
            raise ModelSourceError(
                f"model '{model.name}': url '{shown}' answered HTTP {status}",
                model=model.key,
                url=shown,
                status=status,
            )
        start, total = 0, _length(response.headers.get("content-length"))
        matched = CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if status == 206 and matched:
            start = int(matched.group(1))
            total = int(matched.group(3)) if matched.group(3) != "*" else None
        chunks = mapped_chunks(
            response.iter_bytes(),  # as received: a cut keeps every byte that arrived
            service="model source",
            url=shown,
            kind=ModelSourceError,
        )
        return Body(offset=start, total_bytes=total, chunks=chunks)

    # --- s3 -------------------------------------------------------------------------

    def _s3(self, model: ModelDecl, offset: int) -> Body:
        parts = urlsplit(model.url)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        store = self._store(model, bucket)
        try:
            size = int(obstore.head(store.client, key)["size"])
        except (ObjectMissing, FileNotFoundError):  # obstore raises the latter for a 404
            raise InvalidWorkflowError(
                f"model '{model.name}': {model.url} does not exist", model=model.key
            ) from None
        except BaseError as exc:
            raise self._s3_failed(model, store, exc) from None
        start = offset if 0 < offset < size else 0
        return Body(
            offset=start, total_bytes=size, chunks=self._segments(model, store, key, start, size)
        )

    def _segments(
        self, model: ModelDecl, store: ObjectStore, key: str, start: int, size: int
    ) -> Iterator[bytes]:
        position = start
        while position < size:
            end = min(position + S3_SEGMENT_BYTES, size)
            options: GetOptions = {"range": (position, end)}
            try:
                result = obstore.get(store.client, key, options=options)
                for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                    data = bytes(chunk)
                    position += len(data)
                    yield data
            except BaseError as exc:
                raise self._s3_failed(model, store, exc) from None
            if position < end:
                raise ModelSourceError(
                    f"model '{model.name}': {model.url} ended early", model=model.key
                )

    def _store(self, model: ModelDecl, bucket: str) -> ObjectStore:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                try:
                    store = ObjectStore(f"s3://{bucket}", self.settings.store_config())
                except ConfigError as exc:
                    raise ModelSourceError(
                        f"model '{model.name}': {model.url} cannot be read: {exc.message}",
                        model=model.key,
                    ) from None
                self._stores[bucket] = store
            return store

    def _s3_failed(self, model: ModelDecl, store: ObjectStore, exc: Exception) -> ModelSourceError:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ModelSourceError(
            f"model '{model.name}': reading {model.url} failed: {store._scrub(first)[:300]}",
            model=model.key,
        )


class RestartDownload(Exception):
    """The source cannot resume at the offset asked: the download starts over."""


def _socket_of(response: httpx.Response) -> socket.socket | None:
    """The response's socket (httpcore's network stream), for the drain to shut down."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _length(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _cut(exc: httpx.TransportError, model: ModelDecl, shown: str) -> ModelSourceError:
    mapped = unreachable(exc, service="model source", url=shown, kind=ModelSourceError)
    mapped.details["model"] = model.key
    return mapped  # type: ignore[return-value]
