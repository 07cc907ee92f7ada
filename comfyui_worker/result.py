"""The task result: typed models, the manifest, and the bounded JSON for LittleHorse.

``RunResult`` is what ``Runner.run`` returns and what every other module reads. The
manifest (``manifest.json`` beside the files) holds all of it; ``to_json`` gives
LittleHorse a copy that fits its record limit, however much ComfyUI returned:
text keeps a prefix, huge values and lists are cut, and each cut is flagged.
``ReportedResult`` is that copy read back (by the job side), leniently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    OnErrorOmit,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_serializer,
)

from comfyui_worker.bounds import bound_json, json_safe, json_size

MAX_RESULT_BYTES = 256 * 1024
TEXT_SHARE = 4  # at most 1/4 of the budget for text, 1/8 each for values, params, overrides


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SavedOutput(_Model):
    """One saved file: where ComfyUI had it, where it is now, its size and hash."""

    node_id: str
    key: str
    filename: str
    subfolder: str
    comfy_type: str
    path: str  # a local path, or the object's URL in an object store
    relative_path: str
    size_bytes: int
    sha256: str
    media_type: str
    reused: bool = False
    url: str | None = None  # presigned https URL, when configured


class Timings(_Model):
    """Milliseconds per phase, as the worker saw them, plus ComfyUI's own execution time."""

    queued: int
    executing: int
    downloading: int
    total: int
    comfy_execution: int


class ComfyInfo(_Model):
    """Which ComfyUI ran the prompt (its URL never carries credentials)."""

    base_url: str
    version: str


class RunResult(_Model):
    """Everything one execution produced."""

    prompt_id: str
    status: str = "success"
    run_key: str
    output_dir: str
    outputs: list[SavedOutput]
    text: dict[str, list[str]]
    values: dict[str, dict[str, Any]]
    skipped_temp_outputs: int
    template: str | None
    params: dict[str, Any]
    overrides: dict[str, Any] = {}  # node_id.input -> value, as the task set them
    timings_ms: Timings
    comfyui: ComfyInfo
    worker_version: str
    manifest: str

    def manifest_json(self) -> dict[str, Any]:
        """The full result, as ``manifest.json`` stores it (always strict JSON)."""
        safe: dict[str, Any] = json_safe(self.model_dump())
        return safe

    def to_json(self, limit_bytes: int = MAX_RESULT_BYTES) -> dict[str, Any]:
        """The result for LittleHorse: everything, unless it exceeds ``limit_bytes``.

        Then text keeps a prefix of each item that fits, values and params are cut
        with markers, and outputs keep a prefix (``manifest.json`` lists every file).
        """
        full = {**self.manifest_json(), "text_truncated": False}
        if json_size(full) <= limit_bytes:
            return full
        text, text_cut = _text_prefix(self.text, limit_bytes // TEXT_SHARE)
        values = bound_json(full["values"], limit_bytes // (2 * TEXT_SHARE))
        params = bound_json(full["params"], limit_bytes // (2 * TEXT_SHARE))
        overrides = bound_json(full["overrides"], limit_bytes // (2 * TEXT_SHARE))
        bounded = {
            **full,
            "text": text,
            "values": values,
            "params": params,
            "overrides": overrides,
            "outputs": [],
        }
        bounded["text_truncated"] = text_cut
        bounded["values_truncated"] = values != full["values"]
        bounded["params_truncated"] = params != full["params"]
        bounded["overrides_truncated"] = overrides != full["overrides"]
        outputs = _outputs_prefix(full["outputs"], limit_bytes - json_size(bounded) - 200)
        bounded["outputs"] = outputs
        if len(outputs) < len(full["outputs"]):
            bounded["outputs_total"] = len(full["outputs"])
            bounded["outputs_truncated"] = True
        return bounded if json_size(bounded) <= limit_bytes else bound_json(bounded, limit_bytes)


def _text_prefix(
    text: dict[str, list[str]], budget_bytes: int
) -> tuple[dict[str, list[str]], bool]:
    """Keep text items in order while they fit; the first that does not keeps a prefix."""
    kept: dict[str, list[str]] = {}
    left = budget_bytes
    for node_id, items in text.items():
        for item in items:
            size = json_size(item) + 1
            if size <= left:
                kept.setdefault(node_id, []).append(item)
                left -= size
                continue
            if left > 64:
                kept.setdefault(node_id, []).append(_utf8_prefix(item, left - 32))
            return kept, True
    return kept, False


def _utf8_prefix(text: str, budget_bytes: int) -> str:
    """The longest prefix of ``text`` whose JSON encoding fits ``budget_bytes``."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if json_size(text[:middle]) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _outputs_prefix(outputs: list[dict[str, Any]], budget_bytes: int) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    used = 2  # the brackets
    for output in outputs:
        size = json_size(output) + len(", ")  # json.dumps' default item separator
        if used + size > budget_bytes:
            break
        kept.append(output)
        used += size
    return kept


def _or(default: Callable[[], Any]) -> WrapValidator:
    """A field that reads as ``default()`` when the value does not fit its type."""

    def read(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return default()

    return WrapValidator(read)


class ReportedResult(BaseModel):
    """A result as LittleHorse holds it, read back leniently.

    It is ``RunResult.to_json``, maybe cut to fit, maybe from another version, maybe
    set by hand: what does not fit reads as absent, and it prints (``jobs show``,
    ``submit --wait``, the page) exactly as stored.
    """

    model_config = ConfigDict(frozen=True)

    stored: dict[str, Any]
    run_key: Annotated[str | None, _or(lambda: None)] = None
    template: Annotated[str | None, _or(lambda: None)] = None
    params: Annotated[dict[str, Any] | None, _or(lambda: None)] = None
    overrides: Annotated[dict[str, Any] | None, _or(lambda: None)] = None
    outputs: Annotated[list[OnErrorOmit[SavedOutput]], _or(list)] = []
    outputs_truncated: Annotated[bool, _or(lambda: False)] = False
    manifest: Annotated[str | None, _or(lambda: None)] = None
    timings_ms: Annotated[Timings | None, _or(lambda: None)] = None

    @property
    def ran_s(self) -> float | None:
        """Seconds from ComfyUI starting the prompt to the last output saved, if recorded."""
        if self.timings_ms is None:
            return None
        return (self.timings_ms.executing + self.timings_ms.downloading) / 1000

    @classmethod
    def read(cls, value: object) -> ReportedResult | None:
        """The result, or None if the value is not a JSON object."""
        if not isinstance(value, dict):
            return None
        known = {name: value[name] for name in cls.model_fields if name in value}
        return cls.model_validate({**known, "stored": value})

    @model_serializer
    def _as_stored(self) -> dict[str, Any]:
        return self.stored
