"""ComfyClient through its transport seam (httpx.MockTransport): retries, 4xx vs 5xx, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.errors import (
    ComfyRequestError,
    ComfyServerError,
    ComfyUnavailableError,
    InvalidWorkflowError,
)
from tests import FIXTURES
from tests.conftest import make_settings

BASE = "http://comfy.test:8188"
FIXTURES = FIXTURES / "comfyui"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


class Script:
    """A MockTransport handler answering each path from a list, recording every request."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, httpx.Response | Exception]] = []
        self.requests: list[httpx.Request] = []

    def add_response(self, url: str, status_code: int = 200, **kwargs: Any) -> None:
        self.answers.append((url, httpx.Response(status_code, **kwargs)))

    def add_exception(self, exc: Exception, url: str) -> None:
        self.answers.append((url, exc))

    def get_requests(self) -> list[httpx.Request]:
        return self.requests

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url.copy_with(query=None))
        for index, (wanted, answer) in enumerate(self.answers):
            if wanted == url:
                del self.answers[index]
                if isinstance(answer, Exception):
                    raise answer
                return answer
        raise AssertionError(f"no answer scripted for {url}")


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def client(tmp_path: Path, script: Script) -> ComfyClient:
    settings = make_settings(BASE, tmp_path, COMFYUI_HTTP_RETRIES="2")
    return ComfyClient(settings, transport=httpx.MockTransport(script))


def test_connection_errors_are_retried_then_reported(client: ComfyClient, script: Script):
    """Three connection failures with two retries give ComfyUnavailableError naming the URL."""
    for _ in range(3):
        script.add_exception(httpx.ConnectError("refused"), url=f"{BASE}/queue")
    with pytest.raises(ComfyUnavailableError, match=r"comfy\.test:8188 is unreachable"):
        client.queue()
    assert len(script.get_requests()) == 3


def test_5xx_burst_is_retried_until_success(client: ComfyClient, script: Script):
    """Two 503s followed by a 200 succeed on the third try."""
    script.add_response(url=f"{BASE}/queue", status_code=503)
    script.add_response(url=f"{BASE}/queue", status_code=502)
    script.add_response(url=f"{BASE}/queue", json=sample("get_queue_running_pending.json"))
    queue = client.queue()
    assert queue.running == ["8c7445da-3b94-44b2-8731-2b64966c57f2"]
    assert queue.pending == ["c8d9d210-fca7-4d97-b86b-b00f862fe0ec"]


def test_persistent_5xx_becomes_server_error(client: ComfyClient, script: Script):
    """A 500 on every try ends as ComfyServerError with the status."""
    for _ in range(3):
        script.add_response(url=f"{BASE}/system_stats", status_code=500, text="boom")
    with pytest.raises(ComfyServerError) as info:
        client.system_stats()
    assert info.value.details["status"] == 500
    assert "boom" in info.value.message


def test_4xx_is_not_retried(client: ComfyClient, script: Script):
    """A 404 is reported at once, after exactly one request."""
    script.add_response(url=f"{BASE}/history/x", status_code=404)
    with pytest.raises(ComfyRequestError, match="404"):
        client.history("x")
    assert len(script.get_requests()) == 1


def test_prompt_400_lists_each_failing_node(client: ComfyClient, script: Script):
    """The type-mismatch 400 names node 2, its class and the details."""
    body = sample("post_prompt_400_type_mismatch.json")["body"]
    script.add_response(url=f"{BASE}/prompt", status_code=400, json=body)
    with pytest.raises(InvalidWorkflowError) as info:
        client.submit_once({"1": {}}, prompt_id="p", client_id="c")
    message = info.value.message
    assert "node 2 (SaveImage): Return type mismatch between linked nodes" in message
    assert "received_type(MODEL) mismatch input_type(IMAGE)" in message
    assert info.value.details["node_errors"][0]["input_name"] == "images"
    assert len(script.get_requests()) == 1


def test_prompt_400_value_not_in_list_is_readable(client: ComfyClient, script: Script):
    """A missing checkpoint reads as `ckpt_name 'x' not in [...]` for its node."""
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "4": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'x.safetensors' not in ['a.safetensors']",
                        "extra_info": {"input_name": "ckpt_name"},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }
    script.add_response(url=f"{BASE}/prompt", status_code=400, json=body)
    with pytest.raises(
        InvalidWorkflowError,
        match=r"node 4 \(CheckpointLoaderSimple\): Value not in list: ckpt_name: 'x.safetensors' not in \['a.safetensors'\]",
    ):
        client.submit_once({"1": {}}, prompt_id="p", client_id="c")


def test_prompt_400_unknown_node_keeps_details(client: ComfyClient, script: Script):
    """An invalid_prompt 400 without node errors keeps ComfyUI's message and details."""
    body = sample("post_prompt_400_unknown_node.json")["body"]
    script.add_response(url=f"{BASE}/prompt", status_code=400, json=body)
    with pytest.raises(
        InvalidWorkflowError, match=r"node NoSuchNode does not exist\. \(Node ID '#2'\)"
    ):
        client.submit_once({"1": {}}, prompt_id="p", client_id="c")


def test_submit_is_never_retried_by_the_client(client: ComfyClient, script: Script):
    """POST /prompt fails after one request: a blind retry could queue the prompt twice."""
    script.add_exception(httpx.ReadTimeout("slow"), url=f"{BASE}/prompt")
    with pytest.raises(ComfyUnavailableError):
        client.submit_once({"1": {}}, prompt_id="p", client_id="c")
    assert len(script.get_requests()) == 1


@pytest.mark.parametrize(
    ("failure", "maybe_delivered"),
    [
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectError("refused"), False),
        (httpx.Response(504, text="gateway timeout"), True),
        (httpx.Response(500, text="ComfyUI raised"), False),
    ],
    ids=["read-timeout", "refused", "proxy-504", "comfyui-500"],
)
def test_each_failed_submit_says_whether_comfyui_may_have_queued_it(
    client: ComfyClient,
    script: Script,
    failure: Exception | httpx.Response,
    maybe_delivered: bool,
):
    """Whether to look before resubmitting is decided where the error is made, once."""
    script.answers.append((f"{BASE}/prompt", failure))
    with pytest.raises((ComfyUnavailableError, ComfyServerError)) as caught:
        client.submit_once({"1": {}}, prompt_id="p", client_id="c")
    assert caught.value.maybe_delivered is maybe_delivered


def test_submit_sends_prompt_id_and_client_id(client: ComfyClient, script: Script):
    """The client-chosen prompt_id and client_id are in the body; the number comes back."""
    script.add_response(
        url=f"{BASE}/prompt", json=sample("post_prompt_200_client_prompt_id.json")["body"]
    )
    number = client.submit_once(
        {"1": {"class_type": "X", "inputs": {}}}, prompt_id="pid", client_id="cid"
    )
    sent = json.loads(script.get_requests()[0].content)
    assert (sent["prompt_id"], sent["client_id"], number) == ("pid", "cid", 19)


def test_non_json_answer_is_a_server_error(client: ComfyClient, script: Script):
    """An HTML page instead of JSON (wrong URL) is reported as not ComfyUI."""
    script.add_response(url=f"{BASE}/system_stats", text="<html>login</html>")
    with pytest.raises(ComfyServerError, match="is COMFYUI_BASE_URL really ComfyUI"):
        client.system_stats()


def test_auth_token_and_headers_are_sent(tmp_path: Path, script: Script):
    """COMFYUI_AUTH_TOKEN and COMFYUI_HTTP_HEADERS go on every request."""
    settings = make_settings(
        BASE, tmp_path, COMFYUI_AUTH_TOKEN="s3cret", COMFYUI_HTTP_HEADERS='{"X-Tenant": "a"}'
    )
    script.add_response(url=f"{BASE}/system_stats", json=sample("get_system_stats.json"))
    script.add_response(
        url=f"{BASE}/api/jobs/00000000-0000-4000-8000-000000000000",
        status_code=404,
        text="404: Not Found",
    )
    info = ComfyClient(settings, transport=httpx.MockTransport(script)).server_info()
    assert (info.version, info.jobs_api) == ("0.3.64", False)
    request = script.get_requests()[0]
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["x-tenant"] == "a"


def test_history_unknown_prompt_is_none(client: ComfyClient, script: Script):
    """`{}` from /history/{id} means not finished (or unknown)."""
    script.add_response(url=f"{BASE}/history/abc", json={})
    assert client.history("abc") is None


def test_interrupt_and_delete_send_targeted_bodies(client: ComfyClient, script: Script):
    """Interrupt names the prompt; delete lists the pending ids."""
    script.add_response(url=f"{BASE}/interrupt")
    script.add_response(url=f"{BASE}/queue")
    client.interrupt("p1")
    client.delete_pending(["p2"])
    bodies = [json.loads(r.content) for r in script.get_requests()]
    assert bodies == [{"prompt_id": "p1"}, {"delete": ["p2"]}]
