"""The jobs page in a real browser (Playwright + Debian's Chromium), over the whole stack.

``main.py ui`` and ``main.py worker`` run as subprocesses against the fake LittleHorse
and a fake ComfyUI. Each view is saved as a screenshot under ``$TEST_ARTIFACTS_DIR``
(default ``test-artifacts/``) and checked not to be blank.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fakes import provision
from fakes.comfyui import FakeComfyUI
from fakes.littlehorses import LittleHorseUnderTest
from tests.conftest import wait_until
from tests.graphs import PNG_1PX_BASE64
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token-0123456789"
TASK = "execute-comfyui-workflow"
WAIT_MS = 60_000


@pytest.fixture
def artifacts(littlehorse: LittleHorseUnderTest) -> Path:
    """Where screenshots go: $TEST_ARTIFACTS_DIR (or test-artifacts/)/webui/<fake|real>."""
    root = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "test-artifacts")
    directory = root / "webui" / littlehorse.kind
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed on first use (Playwright cannot download its own here)."""
    return provision.chromium()


@contextlib.contextmanager
def serving(stack: Stack, comfy: FakeComfyUI, **env: str) -> Iterator[str]:
    """A worker, and ``main.py ui`` (token-protected) serving the page: its URL."""
    stack.worker(comfy, **env)
    ui = subprocess.Popen(
        [sys.executable, "main.py", "ui"],
        cwd=ROOT,
        env={**stack.env, "WORKER_UI_PORT": "0", "WORKER_UI_TOKEN": TOKEN, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert ui.stdout is not None
        line = ui.stdout.readline()
        assert line.startswith("jobs page at http://127.0.0.1:"), line
        stack.wait_polling(TASK)
        yield line.split(" at ", 1)[1].strip()
    finally:
        ui.terminate()
        assert ui.wait(timeout=30) == 0


@pytest.fixture
def page_url(stack: Stack, comfy: FakeComfyUI, chromium: str) -> Iterator[tuple[Stack, str]]:
    """The stack with a worker and the page."""
    with serving(stack, comfy) as url:
        yield stack, url


def signed_in(playwright, chromium: str, url: str):
    """A browser page on ``url``, signed in with the token."""
    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(url)
    page.get_by_label("Access token (WORKER_UI_TOKEN)").fill(TOKEN)
    page.keyboard.press("Enter")
    page.locator("#app").wait_for(state="visible")
    return browser, page


def screenshot(page, artifacts: Path, name: str) -> None:
    """Save the whole page and check the picture has real content (many colours)."""
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 16, f"{path} looks blank ({len(colours)} colours)"


def submitted_id(page, pattern: str, known: list[str]) -> str:
    """The id of a job the page newly announced in its live region (not one in ``known``)."""
    handle = page.wait_for_function(
        """([pattern, known]) => {
            const match = document.getElementById("announce").textContent.match(new RegExp(pattern));
            return match && !known.includes(match[1]) ? match[1] : null;
        }""",
        arg=[pattern, known],
        timeout=WAIT_MS,
    )
    job_id = str(handle.json_value())
    known.append(job_id)
    return job_id


def card(page, job_id: str):
    return page.locator(f'li[data-job="{job_id}"]')


def test_submit_fail_retry_and_cancel_from_the_page(
    page_url, comfy: FakeComfyUI, artifacts, tmp_path, chromium
):
    """Sign in, submit with an image (done, thumbnail), see a node error, retry it, cancel a running job."""
    from playwright.sync_api import expect, sync_playwright

    stack, url = page_url
    image = tmp_path / "input.png"
    image.write_bytes(base64.b64decode(PNG_1PX_BASE64))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        seen: list[str] = []
        page.on(
            "console", lambda message: errors.extend([message.text] * (message.type == "error"))
        )
        page.goto(url)

        # Sign in: the token sets the session cookie the thumbnails need too.
        expect(page.get_by_label("Access token (WORKER_UI_TOKEN)")).to_be_focused()
        screenshot(page, artifacts, "0-sign-in")
        page.get_by_label("Access token (WORKER_UI_TOKEN)").fill(TOKEN)
        page.keyboard.press("Enter")
        expect(page.locator("#app")).to_be_visible()
        unlabelled = page.evaluate(
            "() => [...document.querySelectorAll('input, select')]"
            ".filter(e => !e.labels || !e.labels.length).map(e => e.id)"
        )
        assert unlabelled == []

        # The jobs come first; the form is one click away.
        jobs_top = page.locator("#jobs").bounding_box()
        form_top = page.locator("#new-job").bounding_box()
        assert jobs_top and form_top and jobs_top["y"] < form_top["y"]
        expect(page.get_by_label("Template")).to_be_hidden()
        page.get_by_text("New job", exact=True).click()

        # A template with an uploaded image runs to Done, with its thumbnail.
        page.get_by_label("Template").select_option("image_resize")
        page.get_by_label("width").fill("32")
        page.get_by_label("height").fill("32")
        page.get_by_label("image").set_input_files(str(image))
        page.get_by_role("button", name="Submit job").click()
        done_id = submitted_id(page, r"Job (\S+) submitted", seen)
        expect(page.locator("#announce")).to_be_visible()  # said where the user looks
        expect(page.locator("#announce").get_by_role("link", name="show it")).to_be_visible()
        page.get_by_role("tab", name="Done").click()
        expect(card(page, done_id).locator(".status")).to_have_text("completed", timeout=WAIT_MS)
        thumbnail = card(page, done_id).locator("img")
        expect(thumbnail).to_be_visible()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
        )
        assert len(comfy.uploads) == 1
        screenshot(page, artifacts, "1-done")

        # A node raising in ComfyUI: the Failed tab names the node.
        comfy.fail_node("ImageBlur", message="boom")
        page.get_by_label("Template").select_option("smoke")
        page.get_by_label("color").fill("4242")
        page.get_by_role("button", name="Submit job").click()
        failed_id = submitted_id(page, r"Job (\S+) submitted", seen)
        page.get_by_role("tab", name="Failed").click()
        failed = card(page, failed_id)
        expect(failed.locator(".error")).to_contain_text("execution-failed", timeout=WAIT_MS)
        expect(failed).to_contain_text("2 (ImageBlur)")
        expect(failed).to_contain_text("boom")
        failed.get_by_text("Attempts, trail and input").click()  # the error trace, per attempt
        expect(failed.locator("pre").first).to_contain_text(
            "failed: execution-failed", timeout=WAIT_MS
        )
        screenshot(page, artifacts, "2-failed")

        # Retry it: a new job, recorded as its retry, reaches Done.
        comfy.clear_failures()
        failed.get_by_role("button", name="Retry").click()
        retry_id = submitted_id(page, rf"Retry of {failed_id} submitted as (\S+)", seen)
        page.get_by_role("tab", name="Done").click()
        retried = card(page, retry_id)
        expect(retried.locator(".status")).to_have_text("completed", timeout=WAIT_MS)
        expect(retried).to_contain_text(f"Retry of{failed_id}")
        screenshot(page, artifacts, "3-retried")

        # Cancel a running job: the worker interrupts its prompt; it shows as cancelled.
        comfy.execution_time_s = 9  # 3 s per node: long enough to be caught running
        page.get_by_label("color").fill("777")
        before = len(comfy.submitted)
        page.get_by_role("button", name="Submit job").click()
        long_id = submitted_id(page, r"Job (\S+) submitted", seen)
        page.get_by_role("tab", name="Queued/Running").click()
        running = card(page, long_id)
        expect(running.locator(".status")).to_have_text("running", timeout=WAIT_MS)
        wait_until(lambda: len(comfy.submitted) > before, timeout_s=30)
        prompt_id = comfy.submitted[-1]
        screenshot(page, artifacts, "4-running")
        running.get_by_role("button", name="Cancel").click()
        page.get_by_role("tab", name="Cancelled").click()
        expect(card(page, long_id).locator(".status")).to_have_text("cancelled", timeout=WAIT_MS)
        wait_until(lambda: prompt_id in comfy.interrupted, timeout_s=30)
        screenshot(page, artifacts, "5-cancelled")

        # The tabs follow the keyboard (arrow keys, Home, End).
        page.get_by_role("tab", name="Failed").focus()
        page.keyboard.press("ArrowLeft")
        expect(page.get_by_role("tab", name="Done")).to_have_attribute("aria-selected", "true")
        expect(page.get_by_role("tab", name="Done")).to_be_focused()
        page.keyboard.press("Home")
        expect(page.get_by_role("tab", name="Queued/Running")).to_have_attribute(
            "aria-selected", "true"
        )
        browser.close()
    assert errors == []
    assert stack.lh.wf_run(retry_id) is not None


def test_the_form_marks_bad_fields_takes_a_phone_photo_and_keeps_a_stale_list(
    stack: Stack, comfy: FakeComfyUI, artifacts, tmp_path, chromium
):
    """width=-5 is marked beside its field; a 3 MB photo runs; LittleHorse away keeps the list."""
    from playwright.sync_api import expect, sync_playwright

    inputs = tmp_path / "shared-inputs"
    inputs.mkdir()
    photo = tmp_path / "photo.png"
    Image.frombytes("RGB", (1000, 1000), os.urandom(3_000_000)).save(photo)
    huge = tmp_path / "huge.png"
    Image.frombytes("RGB", (1300, 1300), os.urandom(1300 * 1300 * 3)).save(huge)  # > 5 MB
    with (
        serving(
            stack, comfy, COMFYUI_INPUT_DIR=str(inputs), WORKER_UI_UPLOAD_MAX_BYTES="5000000"
        ) as url,
        sync_playwright() as playwright,
    ):
        browser, page = signed_in(playwright, chromium, url)
        page.get_by_text("New job", exact=True).click()
        page.get_by_label("Template").select_option("image_resize")
        expect(page.locator("#param-image-hint")).to_contain_text("up to 5.0 MB")
        expect(page.get_by_label("upscale_method")).to_have_js_property("tagName", "SELECT")

        # Out of range: the message stands beside the field, which is marked; no job.
        page.get_by_label("width").fill("-5")
        page.get_by_label("image").set_input_files(str(photo))
        page.get_by_role("button", name="Submit job").click()
        expect(page.locator("#param-width-error")).to_have_text(
            "width: must be at least 0, got -5", timeout=WAIT_MS
        )
        expect(page.get_by_label("width")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("width")).to_be_focused()
        screenshot(page, artifacts, "6-field-error")
        assert stack.lh.wf_runs_started() == 0

        # Too large for the setting: refused in the browser, beside the image field.
        page.get_by_label("width").fill("64")
        page.get_by_label("image").set_input_files(str(huge))
        page.get_by_role("button", name="Submit job").click()
        expect(page.locator("#param-image-error")).to_contain_text("images may be up to 5.0 MB")
        expect(page.locator("#param-width-error")).to_be_empty()

        # A 3 MB photo: staged in the shared input dir, run by the worker on its pixels.
        page.get_by_label("image").set_input_files(str(photo))
        page.get_by_role("button", name="Submit job").click()
        expect(page.locator("#param-image-error")).to_be_empty(timeout=WAIT_MS)
        page.get_by_role("tab", name="Done").click()
        done = page.locator("li[data-job]").first
        expect(done.locator(".status")).to_have_text("completed", timeout=WAIT_MS)
        [upload] = comfy.uploads
        uploaded = Path(comfy.files.folders["input"], upload["subfolder"], upload["name"])
        assert uploaded.read_bytes() == photo.read_bytes()
        screenshot(page, artifacts, "7-photo-done")

        # LittleHorse goes away: the last list stays, marked stale; it comes back fresh.
        with stack.lh.away():
            expect(page.locator("#stale")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#stale")).to_contain_text("Showing the last list")
            expect(done).to_be_visible()
            expect(page.locator("#job-list")).to_have_class("jobs stale-list")
            screenshot(page, artifacts, "8-stale")
        expect(page.locator("#stale")).to_be_hidden(timeout=WAIT_MS)
        expect(done.locator(".status")).to_have_text("completed")
        browser.close()
