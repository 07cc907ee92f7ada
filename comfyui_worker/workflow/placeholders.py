"""The one ``{{placeholder}}`` grammar, and the one walk over a graph's input values.

Templates fill parameters and bind input images (``ImageBinder``) through the same
grammar in the same walk, so a name means the same thing everywhere. A link
(``["node_id", output_index]``) is never walked into: it is structure, not a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeGuard

from comfyui_worker.bounds import capped
from comfyui_worker.errors import InvalidWorkflowError
from comfyui_worker.workflow.suggest import quote_list

NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
NAME_RE = re.compile(NAME)
PLACEHOLDER = re.compile(r"\{\{\s*(" + NAME + r")\s*\}\}")
PROMPT_MARKER = "PROMPT_PLACEHOLDER"  # legacy: stands for {{prompt}}, exact or in text
SEED_MARKER = "SEED_PLACEHOLDER"  # legacy: stands for {{seed}}, exact only
TEXT_SLOT = re.compile(PLACEHOLDER.pattern + "|" + PROMPT_MARKER)


def is_link(value: object) -> TypeGuard[list[Any]]:
    """Whether an input value is a link ``[node_id, output_index]`` (ComfyUI's own test)."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def exact_name(text: str) -> str | None:
    """The parameter a whole string stands for (``"{{seed}}"``, ``SEED_PLACEHOLDER``)."""
    match = PLACEHOLDER.fullmatch(text)
    if match:
        return match[1]
    if text == SEED_MARKER:
        return "seed"
    if text == PROMPT_MARKER:
        return "prompt"
    return None


def references(text: str) -> Iterator[tuple[str, str | None]]:
    """Every parameter a string refers to, with the legacy marker naming it (None: ``{{}}``).

    The same reading as ``fill_text``: what is found here is exactly what gets filled.
    """
    match = PLACEHOLDER.fullmatch(text)
    if match:
        yield match[1], None
    elif text == SEED_MARKER:
        yield "seed", SEED_MARKER
    else:
        for slot in TEXT_SLOT.finditer(text):
            yield (slot[1], None) if slot[1] else ("prompt", PROMPT_MARKER)


def fill_text(text: str, values: dict[str, Any]) -> Any:
    """Substitute one string: an exact placeholder takes the value with its type.

    Inside a longer string, a placeholder becomes text (non-strings as JSON). Names
    without a value stay as written.
    """
    exact = exact_name(text)
    if exact is not None:
        return values.get(exact, text)

    def replace(match: re.Match[str]) -> str:
        name = match[1] or "prompt"
        if name not in values:
            return match[0]
        value = values[name]
        return value if isinstance(value, str) else json.dumps(value)

    return TEXT_SLOT.sub(replace, text)


def map_strings(value: Any, change: Callable[[str], Any]) -> Any:
    """A new value with ``change`` applied to every string inside (links untouched).

    Containers are rebuilt, so the result never shares structure with ``value``.
    """
    if isinstance(value, str):
        return change(value)
    if is_link(value):
        return list(value)
    if isinstance(value, list):
        return [map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {key: map_strings(item, change) for key, item in value.items()}
    return value


def strings(value: Any) -> Iterator[str]:
    """Every string inside an input value, links excluded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list) and not is_link(value):
        for item in value:
            yield from strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)


class ImageBinder:
    """Points values at uploaded images: ``"name"`` or ``"{{name}}"`` -> the upload name.

    An image the graph never mentions is an error (``check_all_used``): it would be
    uploaded for nothing, and most likely its name is misspelt on one side.
    """

    def __init__(self, upload_names: Mapping[str, str]) -> None:
        self.upload_names = dict(upload_names)
        self.used: set[str] = set()

    def __call__(self, value: Any) -> Any:
        """The value with every image reference bound (strings inside containers too)."""
        if not self.upload_names or not isinstance(value, str | list | dict):
            return value
        return map_strings(value, self._bind) if not isinstance(value, str) else self._bind(value)

    def _bind(self, text: str) -> str:
        key = exact_name(text) or text
        if key not in self.upload_names:
            return text
        self.used.add(key)
        return self.upload_names[key]

    def check_all_used(self) -> None:
        """Refuse images no value referred to."""
        unused = sorted(set(self.upload_names) - self.used)
        if unused:
            raise InvalidWorkflowError(
                f"input image(s) {quote_list(unused)} are not used by the workflow: reference "
                'each as an input value "{{name}}" (e.g. LoadImage\'s image)',
                unused=capped(unused),
            )
