"""The one ``{{placeholder}}`` grammar, and the one walk over a graph's input values.

Templates fill parameters and ``images.py`` binds input images through the same
grammar and the same walker, so a name means the same thing everywhere. A link
(``["node_id", output_index]``) is never walked into: it is structure, not a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

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
