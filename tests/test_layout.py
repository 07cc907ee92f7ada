"""The package's shape: folders by concern, imports one way, the job side light."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = {"cli", "errors", "settings", "logs", "result", "bounds", "transport", "httpserve"}
FOLDERS = ("workflow", "comfy", "lh", "outputs", "models", "run", "worker", "jobs", "web")
ALLOWED = {  # folder -> the folders it may import (besides the top-level modules)
    "workflow": set(),
    "comfy": {"workflow"},
    "lh": set(),
    "outputs": {"comfy"},
    "models": {"workflow", "comfy", "outputs"},
    "run": {"workflow", "comfy", "outputs", "models"},
    "worker": {"workflow", "comfy", "lh", "outputs", "models", "run"},
    "jobs": {"workflow", "lh", "outputs"},
    "web": {"workflow", "lh", "jobs"},
}
# The SDK's own package __init__ imports littlehorse.worker, so any LittleHorse client
# loads that module; the engine is ours: the worker, the prompt runner, ComfyUI's client.
ENGINE = ("websockets", "comfyui_worker.run", "comfyui_worker.worker", "comfyui_worker.comfy")


def module_name(path: Path) -> str:
    """``comfyui_worker/jobs/model.py`` -> ``comfyui_worker.jobs.model``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str) -> Iterator[str]:
    """Every module of ``package`` that ``path`` imports, inside functions and TYPE_CHECKING too."""
    name = module_name(path)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] != package:
                continue
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (package ``__init__`` excluded)."""
    files = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return {
        name: {m for m in imports_of(path, package) if m in files and m != name and m != package}
        for name, path in files.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", ["comfyui_worker", "fakes"])
def test_no_module_imports_itself_round_a_cycle(package: str):
    """No import cycle between modules, even one only type checking needs."""
    assert cycles(graph(package)) == []


def test_every_module_sits_in_a_folder_that_names_its_concern():
    """Only the shared basics live at the top; everything else is in one of the folders."""
    top = {p.stem for p in (ROOT / "comfyui_worker").glob("*.py")} - {"__init__"}
    assert top == TOP_LEVEL
    folders = {p.parent.name for p in (ROOT / "comfyui_worker").glob("*/__init__.py")}
    assert folders == set(FOLDERS)
    for folder in FOLDERS:
        doc = ast.get_docstring(
            ast.parse((ROOT / "comfyui_worker" / folder / "__init__.py").read_text())
        )
        assert doc and "May import:" in doc, folder


def test_folders_import_one_way():
    """A folder imports only the folders below it; the basics at the top import no folder."""
    wrong = []
    for module, deps in graph("comfyui_worker").items():
        parts = module.split(".")
        if len(parts) == 2 and parts[1] != "cli":
            wrong += [f"{module} -> {dep}" for dep in deps if len(dep.split(".")) >= 3]
        if len(parts) < 3:
            continue
        for dep in deps:
            other = dep.split(".")
            if len(other) >= 3 and other[1] != parts[1] and other[1] not in ALLOWED[parts[1]]:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def loaded_by(*code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (``-X importtime``)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "\n".join(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    lines = [line.rpartition("|")[2].strip() for line in run.stderr.splitlines() if "|" in line]
    return {line for line in lines if line and not line.startswith("imported package")}


def test_jobs_help_loads_none_of_the_worker_engine():
    """``main.py jobs --help`` needs argparse and settings, not websockets or the SDK worker."""
    loaded = loaded_by(
        "import sys; sys.argv = ['main.py', 'jobs', '--help']",
        "from comfyui_worker.cli import main",
        "try:\n    main()\nexcept SystemExit:\n    pass",
    )
    assert "comfyui_worker.cli" in loaded
    assert sorted(m for m in loaded if m.startswith((*ENGINE, "obstore"))) == []


def test_the_job_commands_load_none_of_the_worker_engine():
    """The job commands and the page need the LittleHorse client, not the worker engine."""
    loaded = loaded_by("import comfyui_worker.jobs.commands, comfyui_worker.web.server")
    assert "comfyui_worker.jobs.commands" in loaded
    assert sorted(m for m in loaded if m.startswith(ENGINE)) == []


def covered_elsewhere() -> dict[str, str]:
    """docs/development.md's table: module -> the test file that covers it."""
    doc = (ROOT / "docs" / "development.md").read_text()
    block = doc.split("<!-- tested-through:start -->")[1].split("<!-- tested-through:end -->")[0]
    rows = [line.split("|")[1:3] for line in block.strip().splitlines()[2:]]
    return {module.strip().strip("`"): where.strip().strip("`") for module, where in rows}


def test_every_module_has_tests_of_its_own_or_names_where_it_is_tested():
    """``tests/<folder>/test_<module>*.py``, or a row of the tested-through table."""
    table = covered_elsewhere()
    untested = []
    for path in sorted((ROOT / "comfyui_worker").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(ROOT / "comfyui_worker").with_suffix("")
        folder = ROOT / "tests" / relative.parent
        own = list(folder.glob(f"test_{relative.name}.py")) + list(
            folder.glob(f"test_{relative.name}_*.py")
        )
        if own:
            assert relative.as_posix() not in table, f"{relative} has tests of its own"
        elif not (ROOT / table.get(relative.as_posix(), "-")).is_file():
            untested.append(relative.as_posix())
    assert untested == []
