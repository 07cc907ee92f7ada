"""Waiter and Watch: which wake-ups cost a GET /history (ComfyClient over MockTransport)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui_worker.comfy import waiting
from comfyui_worker.comfy.client import ComfyClient
from comfyui_worker.comfy.events import Watch
from comfyui_worker.comfy.waiting import Finished, Waiter, WaitPolicy
from tests.conftest import make_settings

PROMPT = "5f0d8a52-7d0e-4b8e-9b55-2f1c7f3c1a10"
ENTRY = {"outputs": {}, "status": {"status_str": "success", "completed": True, "messages": []}}


class History:
    """GET /history/{id}: empty until ``done``, then the entry; records each request."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        assert request.url.path == f"/history/{PROMPT}", request.url.path
        return httpx.Response(200, json={PROMPT: ENTRY} if self.done.is_set() else {})


class SeenWatch(Watch):
    """A Watch that says when the waiter first sleeps in it."""

    def __init__(self, *, own: bool) -> None:
        super().__init__(PROMPT, None, lambda: True, own=own)
        self.sleeping = threading.Event()

    def wait(self, timeout_s: float) -> bool:
        self.sleeping.set()
        return super().wait(timeout_s)


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def client(tmp_path: Path, history: History) -> ComfyClient:
    settings = make_settings("http://comfy.test:8188", tmp_path)
    return ComfyClient(settings, transport=httpx.MockTransport(history))


def wait_in_thread(client: ComfyClient, watch: Watch) -> tuple[threading.Thread, list[Any]]:
    """Run a Waiter whose poll tick never comes, so only wake-ups can make it look."""
    policy = WaitPolicy(timeout_s=3600, poll_interval_s=3600, abort=threading.Event())
    results: list[Any] = []

    def run() -> None:
        results.append(Waiter(client, watch, policy).run())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def test_a_prompt_we_just_submitted_is_not_looked_up_before_its_end(
    client: ComfyClient, history: History
):
    """With the socket up, our own prompt costs one GET /history: after its terminal event."""
    watch = SeenWatch(own=True)
    thread, results = wait_in_thread(client, watch)
    assert watch.sleeping.wait(10)
    assert history.paths == []
    history.done.set()
    watch.deliver("execution_success", {"prompt_id": PROMPT})
    thread.join(10)
    assert isinstance(results[0], Finished) and len(history.paths) == 1


class FilingWatch(SeenWatch):
    """An own prompt's watch on a server that says when /history has it; notes the wait."""

    def __init__(self) -> None:
        super().__init__(own=True)
        self.announces_filing = lambda: True
        self.waiting_filed = threading.Event()

    def wait_filed(self, timeout_s: float) -> bool:
        self.waiting_filed.set()
        return super().wait_filed(timeout_s)


def test_history_is_asked_once_comfyui_says_it_filed_the_prompt(
    client: ComfyClient, history: History, monkeypatch: pytest.MonkeyPatch
):
    """The terminal event comes before /history has the entry: wait for ``executing`` None."""
    monkeypatch.setattr(waiting, "FILED_GRACE_S", 3600.0)  # only the signal ends the wait
    watch = FilingWatch()
    thread, results = wait_in_thread(client, watch)
    assert watch.sleeping.wait(10)
    watch.deliver("execution_success", {"prompt_id": PROMPT})  # not in /history yet
    assert watch.waiting_filed.wait(10)
    assert history.paths == []
    history.done.set()
    watch.deliver("executing", {"node": None, "prompt_id": PROMPT})
    thread.join(10)
    assert isinstance(results[0], Finished) and len(history.paths) == 1


def test_an_adopted_prompt_is_looked_up_at_once(client: ComfyClient, history: History):
    """A prompt we did not submit may have finished already: the first step is a look."""
    history.done.set()
    thread, results = wait_in_thread(client, SeenWatch(own=False))
    thread.join(10)
    assert isinstance(results[0], Finished) and len(history.paths) == 1


def test_queue_changes_wake_only_watches_of_others_prompts():
    """Our own prompt's end comes as its own event; an adopted one's only as a queue change."""
    own, adopted = Watch(PROMPT, None, own=True), Watch(PROMPT, None, own=False)
    own.queue_changed()
    adopted.queue_changed()
    assert not own.wait(0) and adopted.wait(0)
    own.wake()  # a socket drop or reconnect still wakes everyone
    assert own.wait(0)
