"""Declared models: in a template's _models and a task's models, every mistake named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.modeldecl import ModelDecl, merge_models, parse_models
from comfyui_worker.workflow.request import Identity
from comfyui_worker.workflow.taskinput import parse_task_input
from comfyui_worker.workflow.templates import load_template
from tests.conftest import make_request
from tests.graphs import smoke

SHA = "ab" * 32


def decl(**changes: Any) -> dict[str, Any]:
    base = {
        "folder": "checkpoints",
        "name": "sdxl_base.safetensors",
        "url": "https://huggingface.co/x/resolve/main/sdxl_base.safetensors",
        "sha256": SHA,
    }
    return {**base, **changes}


def test_a_good_declaration_keeps_its_fields() -> None:
    """folder/name become the key; a subfolder is allowed; sha256 is lower-cased."""
    model = ModelDecl.model_validate(decl(name="sdxl/base.safetensors", sha256=SHA.upper()))
    assert model.key == "checkpoints/sdxl/base.safetensors" and model.sha256 == SHA


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"folder": "chekpoints"},
            "folder 'chekpoints' is not a ComfyUI model folder (did you mean 'checkpoints'?)",
        ),
        ({"name": "../escape.safetensors"}, "name '../escape.safetensors' must be a relative"),
        ({"name": "/abs.safetensors"}, "must be a relative file name"),
        ({"name": "a\\b.safetensors"}, "must be a relative file name"),
        ({"name": ".hidden"}, "must not be a hidden file"),
        ({"url": "ftp://host/x"}, "url must start with https:// or s3://"),
        ({"sha256": "xyz"}, "sha256 must be 64 hexadecimal digits"),
        ({"sha": SHA}, "unknown key 'sha'; allowed keys: 'folder', 'name', 'url', 'sha256'"),
    ],
)
def test_bad_declarations_name_the_model_and_field(changes: dict[str, Any], expected: str) -> None:
    """Each mistake is invalid-workflow naming the model and what is wrong."""
    with pytest.raises(InvalidWorkflowError) as caught:
        parse_task_input({"workflow": smoke(), "models": [decl(**changes)]})
    assert "models[0]" in caught.value.message and expected in caught.value.message
    assert "model '" in caught.value.message


def test_missing_fields_are_listed() -> None:
    """A declaration without url and sha256 says both."""
    with pytest.raises(InvalidWorkflowError, match="'url', 'sha256' must be given"):
        parse_models([{"folder": "vae", "name": "v.safetensors"}], where="t.json")


def test_a_template_declares_models_in_models_key(tmp_path: Path) -> None:
    """_models is read from a template file and removed from its graph."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**smoke(), "_models": [decl()]}))
    template = load_template(path)
    assert [m.key for m in template.models] == ["checkpoints/sdxl_base.safetensors"]
    assert "_models" not in template.graph


def test_a_broken_models_list_breaks_the_template(tmp_path: Path) -> None:
    """A template whose _models is wrong fails to load, naming the file and model."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**smoke(), "_models": [decl(folder="nope")]}))
    with pytest.raises(InvalidWorkflowError, match=r"t\.json: _models\[0\]: model 'sdxl_base"):
        load_template(path)


def test_the_request_carries_the_task_and_template_models() -> None:
    """The envelope's models reach the request (a bare graph has none)."""
    request = make_request({"workflow": smoke(), "models": [decl()]})
    assert [m.name for m in request.models] == ["sdxl_base.safetensors"]
    assert make_request(smoke()).models == ()
    assert isinstance(Identity("p", "r"), Identity)


def test_one_file_declared_twice_must_agree() -> None:
    """The same file twice with different sha256 values is refused; the same one is merged."""
    one = ModelDecl.model_validate(decl())
    assert merge_models([one], [one]) == (one,)
    other = ModelDecl.model_validate(decl(sha256="cd" * 32))
    with pytest.raises(InvalidWorkflowError, match="declared twice"):
        merge_models([one], [other])
