"""Input images from URLs, against real local HTTP servers: SSRF rules, deadlines, uniform errors."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from comfyui_worker.errors import InvalidWorkflowError, WorkerShuttingDownError
from comfyui_worker.settings import ComfySettings, load_comfy
from comfyui_worker.workflow.images import resolve_image
from comfyui_worker.workflow.taskinput import ImageInput
from comfyui_worker.workflow.urlfetch import Fetcher, forbidden
from tests.conftest import wait_until
from tests.workflow.test_images import PNG

Route = Callable[[BaseHTTPRequestHandler], None]


class Site:
    """A real HTTP server on a loopback address whose answers a test scripts per path."""

    def __init__(self, host: str) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[str] = []
        self.release = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.seen.append(self.path)
                route = site.routes.get(self.path.split("?")[0], site.routes.get("*"))
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes, **headers: str) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return route


@pytest.fixture
def site() -> Iterator[Site]:
    """The image host the tests allow: 127.0.0.2 (allow-listed below)."""
    server = Site("127.0.0.2")
    yield server
    server.close()


@pytest.fixture
def internal() -> Iterator[Site]:
    """A host on 127.0.0.1 that must never be reached."""
    server = Site("127.0.0.1")
    server.routes["/secret"] = answer(200, PNG)
    yield server
    server.close()


def config(tmp_path: Path, **env: str) -> ComfySettings:
    return load_comfy(
        {
            "COMFYUI_BASE_URL": "http://comfy:8188",
            "COMFYUI_OUTPUT_DIR": str(tmp_path),
            "COMFYUI_ALLOW_INPUT_URLS": "true",
            "COMFYUI_INPUT_URL_ALLOW": "127.0.0.2",
            "COMFYUI_INPUT_URL_TIMEOUT_SEC": "5",
            **env,
        }
    )


def fetch(url: str, settings: ComfySettings, fetcher: Fetcher | None = None) -> bytes:
    image = ImageInput(name="img", url=url)
    return resolve_image(image, settings, unique_prefix="t", fetcher=fetcher).data


def test_an_allowed_host_is_fetched(tmp_path: Path, site: Site):
    """An allow-listed host serves the image."""
    site.routes["/a.png"] = answer(200, PNG, **{"Content-Type": "image/png"})
    assert fetch(site.url("/a.png"), config(tmp_path)) == PNG


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "2130706433",
        "0x7f000001",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
    ],
)
def test_loopback_in_every_spelling_is_refused(tmp_path: Path, internal: Site, host: str):
    """Every encoding of a loopback address is refused before any connection."""
    url = f"http://{host}:{internal.port}/secret"
    with pytest.raises(InvalidWorkflowError, match="COMFYUI_INPUT_URL_ALLOW"):
        fetch(url, config(tmp_path))
    assert internal.seen == []


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "fe80::1",
        "fc00::1",
        "fec0::1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",
        "2002:a00:1::1",
    ],
)
def test_private_link_local_and_multicast_are_refused(tmp_path: Path, address: str):
    """Private, link-local (cloud metadata) and multicast addresses are refused."""
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(InvalidWorkflowError, match=f"resolves to {re.escape(address)}"):
        fetch(f"http://{host}/a.png", config(tmp_path))


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1"])
def test_public_ipv4_behind_nat64_or_6to4_is_allowed(address: str):
    """The embedded address decides: a public one stays fetchable."""
    assert forbidden(ipaddress.ip_address(address)) is None


def test_a_name_resolving_to_any_private_address_is_refused(tmp_path: Path):
    """One private address among public ones is enough to refuse (no picking and choosing)."""
    settings = config(tmp_path)
    fetcher = Fetcher(settings, resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(InvalidWorkflowError, match=r"resolves to 10\.0\.0\.7"):
        fetch("http://images.example/a.png", settings, fetcher)


def test_credentials_in_the_url_are_refused(tmp_path: Path, site: Site):
    """A URL with user:password@ is refused and never echoed."""
    site.routes["/a.png"] = answer(200, PNG)
    with pytest.raises(InvalidWorkflowError, match="credentials") as info:
        fetch(f"http://user:hunter2@127.0.0.2:{site.port}/a.png", config(tmp_path))
    assert "hunter2" not in str(info.value.content())


def test_a_redirect_to_loopback_is_refused(tmp_path: Path, site: Site, internal: Site):
    """Each redirect hop is checked again: an allowed host cannot bounce the worker inward."""
    site.routes["/a.png"] = answer(302, b"", Location=internal.url("/secret"))
    with pytest.raises(InvalidWorkflowError, match=r"resolves to 127\.0\.0\.1"):
        fetch(site.url("/a.png"), config(tmp_path))
    assert internal.seen == []


def test_a_safe_redirect_is_followed(tmp_path: Path, site: Site):
    """A redirect within allowed hosts is followed."""
    site.routes["/old.png"] = answer(301, b"", Location="/new.png")
    site.routes["/new.png"] = answer(200, PNG)
    assert fetch(site.url("/old.png"), config(tmp_path)) == PNG


def test_environment_proxies_are_ignored_unless_opted_in(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch
):
    """HTTP_PROXY from the environment is not used unless COMFYUI_INPUT_URL_TRUST_ENV=true."""
    proxy = Site("127.0.0.2")
    try:
        proxy.routes["*"] = answer(200, PNG)  # a forward proxy sees absolute URLs
        site.routes["/a.png"] = answer(200, PNG)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.2:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "")
        fetch(site.url("/a.png"), config(tmp_path))
        assert proxy.seen == [] and site.seen == ["/a.png"]
        fetch(site.url("/a.png"), config(tmp_path, COMFYUI_INPUT_URL_TRUST_ENV="true"))
        assert len(proxy.seen) == 1
    finally:
        proxy.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        return int(sock.getsockname()[1])


def test_every_failure_reads_the_same(tmp_path: Path, site: Site):
    """Closed port, open port with a 404, a 500 and a non-image: one kind, one message."""
    site.routes["/404"] = answer(404, b"")
    site.routes["/500"] = answer(500, b"")
    site.routes["/text"] = answer(200, b"SECRET-INTERNAL-TOKEN", **{"Content-Type": "text/plain"})
    urls = [
        f"http://127.0.0.2:{closed_port()}/x",
        *(site.url(p) for p in ("/404", "/500", "/text")),
    ]
    messages = []
    for url in urls:
        with pytest.raises(InvalidWorkflowError) as info:
            fetch(url, config(tmp_path))
        assert "SECRET" not in str(info.value.content())
        messages.append(info.value.message.replace(url, "URL"))
    assert len(set(messages)) == 1, messages


def test_a_body_over_the_limit_is_cut_off_while_streaming(tmp_path: Path, site: Site):
    """A body without Content-Length stops being read once it passes the limit."""

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(PNG[:8] + b"\0" * 5000)

    site.routes["/big"] = endless
    settings = config(tmp_path, COMFYUI_MAX_INPUT_IMAGE_BYTES="1000")
    with pytest.raises(InvalidWorkflowError, match="over the limit of 1000 bytes"):
        fetch(site.url("/big"), settings)


def test_a_declared_length_over_the_limit_is_refused(tmp_path: Path, site: Site):
    """A Content-Length over the limit is refused before the body is read."""
    site.routes["/a.png"] = answer(200, PNG)
    settings = config(tmp_path, COMFYUI_MAX_INPUT_IMAGE_BYTES="10")
    with pytest.raises(InvalidWorkflowError, match=f"is {len(PNG)} bytes"):
        fetch(site.url("/a.png"), settings)


def dripping(site: Site) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(PNG[:1])
        handler.wfile.flush()
        site.release.wait(60)  # the next byte would come much later

    return route


def test_a_dripping_server_meets_the_total_deadline(tmp_path: Path, site: Site):
    """A server sending a byte now and then cannot hold the slot past the fetch deadline."""
    site.routes["/drip"] = dripping(site)
    settings = config(tmp_path, COMFYUI_INPUT_URL_TIMEOUT_SEC="0.5", COMFYUI_HTTP_TIMEOUT_SEC="30")
    with pytest.raises(InvalidWorkflowError, match="could not be fetched"):
        fetch(site.url("/drip"), settings)


def test_the_drain_interrupts_a_fetch_in_flight(tmp_path: Path, site: Site):
    """interrupt() (the worker draining) returns at once from a fetch stuck on a slow server."""
    site.routes["/drip"] = dripping(site)
    settings = config(tmp_path, COMFYUI_INPUT_URL_TIMEOUT_SEC="60")
    fetcher = Fetcher(settings)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fetch(site.url("/drip"), settings, fetcher)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: site.seen == ["/drip"])
    fetcher.interrupt()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(errors[0], WorkerShuttingDownError)
