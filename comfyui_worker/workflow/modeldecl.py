"""Model files a template (``_models``) or a task (``models``) declares it needs.

A declaration names a ComfyUI model folder, a file name inside it, where to get the
file (``https://`` or ``s3://``) and its sha256. It is checked here, once, so the
models folder (``models/``) only ever sees names that stay inside their folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.suggest import did_you_mean, quote_list

MODELS_KEY = "_models"
MODEL_KEYS = ("folder", "name", "url", "sha256", "size_bytes")
# ComfyUI's model folders (its folder_paths names), as its /models route lists them.
MODEL_FOLDERS = (
    "audio_encoders",
    "checkpoints",
    "clip",
    "clip_vision",
    "configs",
    "controlnet",
    "diffusers",
    "diffusion_models",
    "embeddings",
    "gligen",
    "hypernetworks",
    "latent_upscale_models",
    "loras",
    "model_patches",
    "photomaker",
    "style_models",
    "text_encoders",
    "unet",
    "upscale_models",
    "vae",
    "vae_approx",
)
URL_SCHEMES = ("https", "http", "s3")
SHA256 = re.compile(r"[0-9a-f]{64}")
NAME_PART = re.compile(r"[^\x00-\x1f/\\:*?\"<>|]{1,200}")


class ModelDecl(BaseModel):
    """A model file a workflow needs: ComfyUI's ``models/<folder>/<name>``, its source, its hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str = Field(
        description="ComfyUI's model folder: checkpoints, loras, vae, upscale_models, "
        "controlnet, clip, unet, diffusion_models, embeddings, ..."
    )
    name: str = Field(
        description="The file name as the graph names it, relative to the folder; may hold "
        "a subfolder ('sdxl/base.safetensors'), never an absolute path or '..'."
    )
    url: str = Field(description="Where to get it: https://... or s3://bucket/key.")
    sha256: str = Field(description="The file's sha256 (64 hex digits), checked after download.")
    size_bytes: int | None = Field(
        default=None, ge=0, description="The file's size, if known: free space is checked first."
    )

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        """Every problem names the model and the field, so a template author finds it."""
        if not isinstance(data, dict):
            raise ValueError("a model must be an object with folder, name, url and sha256")
        unknown = [key for key in data if key not in MODEL_KEYS]
        name = data.get("name")
        label = f"model {name!r}" if isinstance(name, str) and name else "model"
        if unknown:
            key = str(unknown[0])
            raise ValueError(
                f"{label}: unknown key {key!r}{did_you_mean(key, MODEL_KEYS)}; "
                f"allowed keys: {quote_list(MODEL_KEYS)}"
            )
        missing = [key for key in MODEL_KEYS[:4] if not isinstance(data.get(key), str)]
        if missing:
            raise ValueError(f"{label}: {quote_list(missing)} must be given as strings")
        problem = _folder_problem(data["folder"]) or _name_problem(data["name"])
        problem = problem or _url_problem(data["url"]) or _sha_problem(data["sha256"])
        if problem:
            raise ValueError(f"{label}: {problem}")
        return {**data, "sha256": data["sha256"].lower()}

    @property
    def key(self) -> str:
        """``folder/name``: the file's path under the models directory."""
        return f"{self.folder}/{self.name}"


def _folder_problem(folder: str) -> str | None:
    if folder in MODEL_FOLDERS:
        return None
    return f"folder {folder!r} is not a ComfyUI model folder{did_you_mean(folder, MODEL_FOLDERS)}"


def _name_problem(name: str) -> str | None:
    parts = name.split("/")
    if name.startswith("/") or any(
        not NAME_PART.fullmatch(part) or part in (".", "..") for part in parts
    ):
        return (
            f"name {name[:100]!r} must be a relative file name (a subfolder allowed), "
            "without '..', a leading '/', backslashes or control characters"
        )
    if parts[-1].startswith("."):
        return f"name {name[:100]!r} must not be a hidden file"
    return None


def _url_problem(url: str) -> str | None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in URL_SCHEMES:
        return f"url must start with https:// or s3://, got {url.split('?')[0][:100]!r}"
    return None


def _sha_problem(sha256: str) -> str | None:
    if SHA256.fullmatch(sha256.lower()):
        return None
    return "sha256 must be 64 hexadecimal digits"


def parse_models(raw: object, *, where: str) -> tuple[ModelDecl, ...]:
    """A template's ``_models`` list as declarations; a mistake names the model and field."""
    if not isinstance(raw, list):
        raise InvalidWorkflowError(f"{where}: '{MODELS_KEY}' must be a list of models")
    found: list[ModelDecl] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        try:
            found.append(ModelDecl.model_validate(item))
        except ValidationError as exc:
            problems += [
                f"{MODELS_KEY}[{index}]: " + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors()
            ]
    if problems:
        raise InvalidWorkflowError(f"{where}: " + "; ".join(capped(problems)), source=where)
    return merge_models(found)


def merge_models(*groups: Iterable[ModelDecl]) -> tuple[ModelDecl, ...]:
    """One declaration per file; the same file declared twice must agree on its sha256."""
    merged: dict[str, ModelDecl] = {}
    for model in (m for group in groups for m in group):
        earlier = merged.get(model.key)
        if earlier is not None and earlier.sha256 != model.sha256:
            raise InvalidWorkflowError(
                f"model '{model.name}' in {model.folder} is declared twice with different "
                "sha256 values",
                model=model.key,
            )
        merged.setdefault(model.key, model)
    return tuple(merged.values())
