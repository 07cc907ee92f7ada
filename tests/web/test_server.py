"""The jobs page's server (web/server.py, web/api.py, web/guard.py) over real HTTP, jobs on the fake LittleHorse."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from comfyui_worker.errors import ConfigError
from comfyui_worker.jobs.settings import JobsSettings, UiSettings
from comfyui_worker.jobs.staging import INLINE_MAX_BYTES
from comfyui_worker.settings import load
from comfyui_worker.web.api import UiApi
from comfyui_worker.web.server import UiServer
from tests import ROOT
from tests.conftest import wait_until
from tests.graphs import PNG_1PX_BASE64
from tests.jobstub import PNG, STUB_TEMPLATES, StubLittleHorse

TOKEN = "t0ken-for-the-jobs-page"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubLittleHorse]:
    root = tmp_path_factory.mktemp("webui")
    with StubLittleHorse(root / "out", root / "elsewhere") as running:
        yield running


def start(stub: StubLittleHorse, **env: str) -> UiServer:
    workflows = stub.output_dir.parent / "workflows"
    if not workflows.is_dir():
        shutil.copytree(ROOT / "workflows", workflows)
        for name, graph in STUB_TEMPLATES.items():
            (workflows / f"{name}.json").write_text(json.dumps(graph))
    settings = load(
        JobsSettings,
        {
            "COMFYUI_OUTPUT_DIR": str(stub.output_dir),
            "COMFYUI_WORKFLOWS_DIR": str(workflows),
            **{k: v for k, v in env.items() if k.startswith("COMFYUI_")},
        },
    )
    ui = load(
        UiSettings,
        {"WORKER_UI_PORT": "0", **{k: v for k, v in env.items() if k.startswith("WORKER_")}},
    )
    return UiServer(ui, UiApi(stub.jobs, settings, ui)).start()


@pytest.fixture(scope="module")
def page(stub: StubLittleHorse) -> Iterator[httpx.Client]:
    server = start(stub)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()


@pytest.fixture(scope="module")
def locked(stub: StubLittleHorse) -> Iterator[httpx.Client]:
    server = start(stub, WORKER_UI_TOKEN=TOKEN)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()


def submit(page: httpx.Client, **form: Any) -> str:
    answer = page.post("/api/jobs", json={"template": "stub", **form})
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def test_the_page_and_its_assets_come_with_a_strict_policy(page):
    """/, app.js and app.css are served with a CSP that allows only the page's own script."""
    home = page.get("/")
    assert home.status_code == 200 and 'role="tablist"' in home.text
    assert "script-src 'self'" in home.headers["content-security-policy"]
    assert home.headers["x-frame-options"] == "DENY"
    assert home.headers["x-content-type-options"] == "nosniff"
    assert page.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert page.get("/static/../jobsettings.py").status_code == 404


def test_a_job_submitted_from_the_form_lists_as_done_with_its_image(stub, page):
    """POST /api/jobs starts a WfRun; it lists under 'done' and its output streams as a PNG."""
    job_id = submit(
        page,
        template="stub_image",
        params={"mode": "ok"},
        images=[{"name": "image", "base64": PNG_1PX_BASE64}],
    )
    stub.wait_done(job_id)
    done = {job["id"]: job for job in page.get("/api/jobs", params={"tab": "done"}).json()}
    assert done[job_id]["status"] == "completed" and done[job_id]["template"] == "stub_image"
    assert "input" not in done[job_id]  # lists carry no inputs
    image = page.get(f"/api/jobs/{job_id}/outputs/0")
    assert image.content == PNG and image.headers["content-type"] == "image/png"
    assert "sandbox" in image.headers["content-security-policy"]
    detail = page.get(f"/api/jobs/{job_id}").json()
    assert detail["input"]["images"][0]["base64"].endswith("base64 characters>")
    assert page.get(f"/api/jobs/{job_id}/outputs/1").status_code == 404


def test_failed_jobs_show_their_node_and_can_be_retried(stub, page):
    """The failed tab has the node error; POST retry starts a job recorded as its retry."""
    job_id = submit(page, params={"mode": "fail"})
    stub.wait_done(job_id)
    failed = {job["id"]: job for job in page.get("/api/jobs", params={"tab": "failed"}).json()}
    assert failed[job_id]["error"]["node_id"] == "2"
    retry = page.post(f"/api/jobs/{job_id}/retry", json={})
    assert retry.status_code == 201
    assert page.get(f"/api/jobs/{retry.json()['id']}").json()["retry_of"] == job_id


def test_a_running_job_is_cancelled(stub, page):
    """POST cancel stops the WfRun; the job moves from the active tab to its own cancelled tab."""
    job_id = submit(page, params={"mode": "hold"})
    stub.wait_running(job_id)
    assert job_id in [job["id"] for job in page.get("/api/jobs", params={"tab": "active"}).json()]
    assert page.post(f"/api/jobs/{job_id}/cancel", json={}).json()["status"] in (
        "cancelling",
        "cancelled",
    )
    stub.wait_done(job_id)
    cancelled = {
        job["id"]: job for job in page.get("/api/jobs", params={"tab": "cancelled"}).json()
    }
    assert cancelled[job_id]["status"] == "cancelled"
    failed = [job["id"] for job in page.get("/api/jobs", params={"tab": "failed"}).json()]
    assert job_id not in failed


def test_an_output_outside_the_output_dir_is_never_served(stub, page):
    """A result naming a file elsewhere (LittleHorse data is not trusted) gets 403 and no bytes."""
    job_id = submit(page, params={"mode": "escape"})
    stub.wait_done(job_id)
    answer = page.get(f"/api/jobs/{job_id}/outputs/0")
    assert answer.status_code == 403 and answer.json()["error"] == "output-not-readable"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"template": "smoek"}, 400, "invalid-workflow"),
        ({"template": "smoke", "lane": "urgent"}, 400, "invalid-workflow"),
        ({"template": "smoke", "surprise": 1}, 400, "invalid-workflow"),
    ],
    ids=["unknown-template", "unknown-lane", "unknown-field"],
)
def test_bad_submissions_are_400_with_our_error(page, body, status, error):
    """A form the worker could not run is refused at once, with our error name."""
    answer = page.post("/api/jobs", json=body)
    assert (answer.status_code, answer.json()["error"]) == (status, error)


def test_unknown_jobs_and_tabs_are_404(page):
    """An id LittleHorse does not know, or a tab that does not exist, is 404."""
    assert page.get("/api/jobs/no-such-job").json()["error"] == "not-found"
    assert page.get("/api/jobs", params={"tab": "later"}).status_code == 404


def test_requests_for_another_host_name_are_refused(page):
    """Without a token, a Host that is not loopback (a rebound DNS name) gets 421."""
    assert page.get("/api/jobs", headers={"Host": "evil.example:8090"}).status_code == 421
    assert page.get("/", headers={"Host": "localhost:8090"}).status_code == 200


def test_writes_must_be_json_from_the_page_itself(page):
    """A form post, or JSON from another origin, is refused before it reaches LittleHorse."""
    form = page.post("/api/jobs", data={"template": "smoke"})
    assert form.status_code == 403
    other = page.post(
        "/api/jobs", json={"template": "smoke"}, headers={"Origin": "http://evil.example"}
    )
    assert other.status_code == 403


def test_with_a_token_the_api_needs_the_bearer_or_the_session_cookie(locked):
    """401 without; the bearer token works; /api/login sets an HttpOnly cookie that works too."""
    assert locked.get("/api/jobs").status_code == 401
    assert locked.get("/").status_code == 200  # the page itself shows the sign-in form
    assert locked.get("/api/session").json() == {"login": True, "ok": False}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert locked.get("/api/jobs", headers=bearer).status_code == 200
    assert locked.post("/api/login", json={"token": "wrong-token-wrong-token"}).status_code == 401
    login = locked.post("/api/login", json={"token": TOKEN})
    assert "HttpOnly" in login.headers["set-cookie"] and TOKEN not in login.headers["set-cookie"]
    assert locked.get("/api/jobs").status_code == 200  # the client keeps the cookie
    locked.cookies.clear()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_UI_HOST": "0.0.0.0"}, "set WORKER_UI_TOKEN"),
        ({"WORKER_UI_TOKEN": "short"}, "at least 16"),
        ({"WORKER_UI_LANES": "urgent,Bad Lane"}, "kebab-case"),
        ({"WORKER_UI_LANES": "urgent,default"}, "always listed"),
    ],
    ids=["open-without-token", "short-token", "bad-lane", "default-lane"],
)
def test_unsafe_page_settings_are_refused(env: dict[str, str], message: str):
    """Reachable from the network only with a token; tokens long enough; lanes valid."""
    with pytest.raises(ConfigError, match=message):
        load(UiSettings, env)


def test_the_catalog_lists_templates_with_their_parameters(page):
    """The form is built from each template's parameters, and the lanes."""
    catalog = page.get("/api/templates").json()
    templates = {t["name"]: t for t in catalog["templates"]}
    assert {p["name"] for p in templates["image_resize"]["params"]} >= {"image", "width"}
    assert catalog["lanes"] == ["default"]


def test_bad_parameters_are_refused_per_field_and_start_no_job(stub, page):
    """width=-5 and a mode not offered: 400 naming each field, and no WfRun is created."""
    before = stub.lh.wf_run_ids()
    answer = page.post("/api/jobs", json={"template": "stub", "params": {"width": -5, "mode": "x"}})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid-workflow"
    fields = answer.json()["fields"]
    assert fields["width"] == "must be at least 1, got -5"
    assert fields["mode"].startswith("must be one of 'ok', 'fail'")
    missing = page.post("/api/jobs", json={"template": "stub_image"}).json()
    assert missing["fields"] == {"image": "required"}
    assert "choose a file in the 'image' field" in missing["message"]
    assert stub.lh.wf_run_ids() == before


def test_the_catalog_gives_bounds_and_the_image_limit(page):
    """Number bounds, string choices and the upload limit reach the form."""
    catalog = page.get("/api/templates").json()
    params = {
        p["name"]: p for t in catalog["templates"] if t["name"] == "stub" for p in t["params"]
    }
    assert params["width"]["min"] == 1 and params["width"]["max"] == 64
    assert params["mode"]["choices"][:2] == ["ok", "fail"]
    assert catalog["image_max_bytes"] == INLINE_MAX_BYTES  # no input dir: inside the job
    assert "COMFYUI_INPUT_DIR" in catalog["image_limit"]


def test_a_phone_photo_is_staged_in_the_input_dir_and_an_oversized_one_refused(stub, tmp_path):
    """With COMFYUI_INPUT_DIR a 3 MB image is staged and sent as a path; over the limit, a 400."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    server = start(stub, COMFYUI_INPUT_DIR=str(inputs), WORKER_UI_UPLOAD_MAX_BYTES="4000000")
    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(3_000_000)
    data_url = "data:image/png;base64," + base64.b64encode(photo).decode("ascii")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            catalog = client.get("/api/templates").json()
            assert (
                catalog["image_max_bytes"] == 4_000_000 and catalog["image_limit"] == "up to 4.0 MB"
            )
            job_id = submit(
                client, template="stub_image", images=[{"name": "image", "base64": data_url}]
            )
            [source] = client.get(f"/api/jobs/{job_id}").json()["input"]["images"]
            assert (inputs / source["path"]).read_bytes() == photo
            big = b"\x89PNG\r\n\x1a\n" + os.urandom(4_100_000)
            refused = client.post(
                "/api/jobs",
                json={
                    "template": "stub_image",
                    "images": [{"name": "image", "base64": base64.b64encode(big).decode()}],
                },
            )
        assert refused.status_code == 400, refused.text
        assert (
            "over the limit of 4000000 bytes (WORKER_UI_UPLOAD_MAX_BYTES)"
            in refused.json()["message"]
        )
    finally:
        server.stop()


def test_job_ids_in_paths_are_plain(page: httpx.Client):
    """Ids with anything but LittleHorse's characters never match a route."""
    assert page.get("/api/jobs/..%2Fetc/outputs/0").status_code == 404


def test_a_body_nested_too_deep_is_400_not_a_crash(page):
    """100,000 nested arrays: one invalid-workflow answer, no RecursionError."""
    answer = page.post("/api/jobs", content=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid-workflow"
    assert "the request body" in answer.json()["message"]


def bounded_server(stub: StubLittleHorse, **bounds: Any) -> UiServer:
    ui = load(UiSettings, {"WORKER_UI_PORT": "0"})
    settings = load(JobsSettings, {"COMFYUI_OUTPUT_DIR": str(stub.output_dir)})
    return UiServer(ui, UiApi(stub.jobs, settings, ui), **bounds).start()


def connection_threads() -> int:
    """Threads serving a connection right now (the server names them after their target)."""
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def stalled_request(server: UiServer) -> socket.socket:
    """A connection that sends half a request line and then nothing."""
    host, port = str(server.server_address[0]), int(server.server_address[1])
    conn = socket.create_connection((host, port), timeout=30)
    conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1")
    return conn


def test_past_the_connection_cap_requests_are_refused_without_a_thread(stub):
    """8 stalled connections hold the 8 slots; the other 42 get 503 at once, no thread each."""
    server = bounded_server(stub, request_timeout_s=60, max_connections=8)
    baseline = connection_threads()  # other servers' keep-alive connections, if any
    held = [stalled_request(server) for _ in range(8)]
    refused = [stalled_request(server) for _ in range(42)]
    try:
        assert all(conn.recv(64).startswith(b"HTTP/1.1 503") for conn in refused)
        assert connection_threads() <= baseline + 8
    finally:
        for conn in held + refused:
            conn.close()
    wait_until(lambda: httpx.get(server.url, timeout=10).status_code == 200)
    server.stop()


def test_a_stalled_request_is_closed_at_its_timeout(stub):
    """Headers that never finish: the server hangs up after WORKER's request timeout."""
    server = bounded_server(stub, request_timeout_s=0.2)
    conn = stalled_request(server)
    try:
        assert conn.recv(64) == b""  # closed by the server, no answer
    finally:
        conn.close()
        server.stop()
