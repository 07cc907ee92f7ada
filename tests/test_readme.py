"""README and docs stay true to the code: settings, errors, schema, trail, quick start, links."""

from __future__ import annotations

import json
import re
from pathlib import Path

from comfyui_worker import errors
from comfyui_worker.jobs.settings import JobsSettings, UiSettings
from comfyui_worker.settings import ComfySettings, WorkerSettings
from comfyui_worker.workflow.taskinput import task_input_json_schema

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TASK_INPUT = (ROOT / "docs" / "task-input.md").read_text()


def test_every_setting_is_documented():
    """Each environment variable the settings read appears in the configuration table."""
    aliases = [
        f.alias
        for cls in (ComfySettings, WorkerSettings, JobsSettings, UiSettings)
        for f in cls.model_fields.values()
    ]
    missing = [a for a in aliases if f"| `{a}` |" not in README]
    assert missing == []


def error_rows() -> dict[str, list[str]]:
    block = README.split("<!-- errors:start -->")[1].split("<!-- errors:end -->")[0]
    rows = [line.split("|")[1:-1] for line in block.strip().splitlines()[2:]]
    return {cells[0].strip().strip("`"): [c.strip() for c in cells[1:4]] for cells in rows}


# Raised only by the commands and at start-up, never by a task: "retried" does not apply.
COMMAND_ONLY = {errors.ConfigError, errors.NotFoundError, errors.OutputNotReadableError}


def test_the_error_table_matches_each_class():
    """Every error has a row whose kind, retry and exit code are the class's own attributes."""
    expected = {
        cls.name: [
            "business" if cls.business else "technical",
            "n/a" if cls in COMMAND_ONLY else "no" if cls.business else "yes",
            str(int(cls.exit_code)),
        ]
        for cls in errors.all_errors()
    }
    assert error_rows() == expected


def test_the_schema_block_matches_the_model():
    """The JSON Schema in docs/task-input.md is exactly what the pydantic model generates."""
    block = re.search(
        r"<!-- schema:start -->\n```json\n(.*?)\n```\n<!-- schema:end -->", TASK_INPUT, re.S
    )
    assert block is not None
    assert json.loads(block.group(1)) == task_input_json_schema()


def test_the_trail_is_documented_as_written():
    """Each trail line the worker writes is spelt the same way in README."""
    lines = [
        "model <name>: present",
        "model <name>: downloaded <size> in <T> s",
        "submitted prompt <id>",
        "adopted prompt <id> from an earlier attempt",
        "ComfyUI started executing",
        "downloaded N files (B bytes) in T ms",
        "finished: comfyui executed in X ms, queued Q ms, total Y ms",
        "failed: <name>: <message>",
        "failed (will be retried): <name>: <message>",
    ]
    assert [line for line in lines if f"`{line}`" not in README] == []


def test_quick_start_commands_match_ci():
    """The README's test command is the one .ci/run runs, and the demo module exists."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv run pytest                 # sets up what the tests need, then runs" in README
    assert "\nuv run pytest\n" in ci
    assert "uv run python -m tests.demo" in README and (ROOT / "tests" / "demo.py").is_file()


def test_every_linked_doc_exists():
    """Every relative link in README and docs/ points at a file that exists."""
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert broken == []


def test_the_contents_list_points_at_sections():
    """Each README contents entry names a heading that exists."""
    anchors = re.findall(r"- \[[^\]]+\]\(#([a-z0-9-]+)\)", README)
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^## (.+)$", README, re.M)
    }
    assert anchors and set(anchors) <= headings
