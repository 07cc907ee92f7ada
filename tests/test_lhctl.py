"""The ``lhctl`` lines the docs give, checked against lhctl 1.2.1's usage and the real server.

``lhctl`` cannot be installed here: the Go module proxy refuses every
``github.com/littlehorse-enterprises`` module (403), and no registry this project uses
publishes a binary. So each documented line is parsed against lhctl's own usage (its
cobra ``Use:`` strings at v1.2.1), and the call it makes is made through the API, as
lhctl would, against the real server: the line runs a job and reads back what the
docs say it shows.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from littlehorse import to_variable_value
from littlehorse.model import (
    GetLatestWfSpecRequest,
    RunWfRequest,
    TaskRunId,
    VariableId,
    WfRunId,
)

from fakes.comfyui import FakeComfyUI
from tests.stack import ROOT, Stack

DOCS = ("README.md", "docs/deploy.md", "docs/troubleshooting.md")
# lhctl v1.2.1 (lhctl/internal/*.go): the commands the docs use, as their usage reads.
USAGE = {
    ("run",): "run <wfSpecName> [(<var1 name> <var1 val>)]...",
    ("get", "wfRun"): "wfRun <id>",
    ("get", "variable"): "variable <wfRunId> <threadRunNumber> <varName>",
    ("get", "taskRun"): "taskRun <wfRunId> <taskRunGuid>",
}
ARGS = {("get", "wfRun"): 1, ("get", "variable"): 3, ("get", "taskRun"): 2}


def documented() -> list[tuple[str, list[str]]]:
    """Every ``lhctl`` command line in the docs: (where, its words), comments stripped.

    Lines of code blocks that start with ``lhctl``, and inline code that is a whole
    command (prose naming a command, like ``lhctl run``, has no arguments).
    """
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        block = re.finditer(r"^(lhctl [^\n]*?)(?:\s+#.*)?$", text, re.MULTILINE)
        inline = re.finditer(r"`(lhctl [^`\n]+)`", text)
        for match in [*block, *inline]:
            words = _words(match[1])
            if len(words) >= 3:
                found.append((doc, words))
    return found


def _words(line: str) -> list[str]:
    """The command's words, with ``"$(cat FILE)"`` read as the file's text (as a shell would)."""
    line = re.sub(r'"\$\(cat ([^)]+)\)"', lambda m: shlex.quote((ROOT / m[1]).read_text()), line)
    return shlex.split(line)[1:]


def usage_of(words: list[str]) -> tuple[str, ...]:
    """Which documented command the words are, checking their number of arguments."""
    if words[0] == "run":
        pairs = [w for w in words[2:] if not w.startswith("--")]
        assert len(words) >= 2 and len(pairs) % 2 == 0, f"lhctl {USAGE[('run',)]}: {words}"
        return ("run",)
    key = (words[0], words[1])
    assert key in USAGE, f"no lhctl command {' '.join(key)} in the documented set"
    assert len(words) - 2 == ARGS[key], f"lhctl {words[0]} {USAGE[key]}: {words}"
    return key


def test_every_documented_lhctl_line_matches_lhctls_usage():
    """Each docs line names an lhctl 1.2.1 command with the arguments it takes."""
    lines = documented()
    assert {usage_of(words) for _, words in lines} == set(USAGE)
    assert len(lines) >= 8


@pytest.fixture
def real_stack(real_lh: Any, comfy: FakeComfyUI, tmp_path: Path) -> Iterator[Stack]:
    """The real server in a tenant of its own, registered, with a worker."""
    from fakes.littlehorses import LittleHorseUnderTest, new_tenant

    lh = LittleHorseUnderTest("real", real_lh, new_tenant(real_lh))
    with Stack(tmp_path, lh) as stack:
        stack.register()
        stack.worker(comfy)
        stack.wait_polling()
        yield stack
    lh.close()


@pytest.mark.slow
def test_the_documented_lines_do_what_the_docs_say_on_the_real_server(real_stack: Stack):
    """run starts a job; get wfRun shows COMPLETED; get variable the result; get taskRun the trail."""
    stub = real_stack.lh.stub
    lines = documented()
    runs = [(doc, words) for doc, words in lines if words[0] == "run"]
    for index, (doc, words) in enumerate(runs):
        wf_run_id = f"lhctl-{index}"
        stub.RunWf(run_request(stub, words, wf_run_id))
        real_stack.lh.wait_wf_run(wf_run_id)
        reads = [w for d, w in lines if d == doc and w[0] == "get"]
        assert reads, f"{doc}: an lhctl run without a line to read its job"
        for read in reads:
            what, args = read[1], substitute(read[2:], wf_run_id)
            check(what, MessageToDict(get(stub, what, args)), doc)


def run_request(stub: Any, words: list[str], wf_run_id: str) -> RunWfRequest:
    """What ``lhctl run`` sends: each value typed by the WfSpec's variable (JSON for JSON_OBJ)."""
    spec = stub.GetLatestWfSpec(GetLatestWfSpecRequest(name=words[1]))
    thread = spec.thread_specs[spec.entrypoint_thread_name]
    kinds = {v.var_def.name: v.var_def.type_def.primitive_type for v in thread.variable_defs}
    variables = {}
    for name, value in zip(words[2::2], words[3::2], strict=True):
        assert name in kinds, f"lhctl run: variable {name!r} is not in WfSpec {words[1]}"
        variables[name] = to_variable_value(json.loads(value))
    return RunWfRequest(wf_spec_name=words[1], id=wf_run_id, variables=variables)


def substitute(args: list[str], wf_run_id: str) -> list[str]:
    """The docs' placeholders: <wfRunId>/<wf-run-id> is the run, <taskGuid>/<guid> is 0-1."""
    names = {"<wfRunId>": wf_run_id, "<wf-run-id>": wf_run_id, "<taskGuid>": "0-1", "<guid>": "0-1"}
    return [names.get(arg, arg) for arg in args]


def get(stub: Any, what: str, args: list[str]) -> Any:
    """The RPC ``lhctl get WHAT ARGS`` makes."""
    if what == "wfRun":
        return stub.GetWfRun(WfRunId(id=args[0]))
    if what == "variable":
        variable_id = VariableId(
            wf_run_id=WfRunId(id=args[0]), thread_run_number=int(args[1]), name=args[2]
        )
        return stub.GetVariable(variable_id)
    run_id = TaskRunId(wf_run_id=WfRunId(id=args[0]), task_guid=args[1])
    return stub.GetTaskRun(run_id)


def check(what: str, answer: dict[str, Any], doc: str) -> None:
    """What the docs promise each read shows."""
    if what == "wfRun":
        assert answer["status"] == "COMPLETED", (doc, answer)
    elif what == "variable":
        result = json.loads(answer["value"]["jsonObj"])
        assert result["status"] == "success" and result["outputs"][0]["sha256"], (doc, result)
    else:
        log = answer["attempts"][0]["logOutput"]["str"]
        assert "submitted prompt" in log and "finished: comfyui executed" in log, (doc, log)
