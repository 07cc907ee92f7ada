"""README stays true to the code: settings, error names, schema, quick start."""

from __future__ import annotations

import json
import re
from pathlib import Path

from comfyui_worker import errors
from comfyui_worker.settings import ComfySettings, WorkerSettings
from comfyui_worker.task_input import task_input_json_schema

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented():
    """Each environment variable the settings read appears in the configuration table."""
    aliases = [
        f.alias for cls in (ComfySettings, WorkerSettings) for f in cls.model_fields.values()
    ]
    missing = [a for a in aliases if f"| `{a}` |" not in README]
    assert missing == []


def test_every_error_name_is_in_the_error_table():
    """Each error class's name has a row in the error table, plus internal-error."""
    names = {
        cls.name
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ComfyWorkerError)
        and cls.name not in ("comfyui-worker-error", "comfyui-transient")
    } | {"internal-error"}
    missing = [n for n in sorted(names) if f"| `{n}` |" not in README]
    assert missing == []


def test_schema_block_matches_the_model():
    """The JSON Schema in README is exactly what the pydantic model generates."""
    block = re.search(
        r"<!-- schema:start -->\n```json\n(.*?)\n```\n<!-- schema:end -->", README, re.S
    )
    assert block is not None
    assert json.loads(block.group(1)) == task_input_json_schema()


def test_quick_start_commands_match_ci():
    """The README's test command is the one .ci/run runs, and the demo module exists."""
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "uv run pytest                 # runs the test suite" in README
    assert "\nuv run pytest\n" in ci
    assert "uv run python -m tests.demo" in README and (Path(__file__).parent / "demo.py").is_file()
