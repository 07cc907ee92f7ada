"""Size bounds for everything the worker reports: messages, error contents, results.

LittleHorse rejects a TaskRun record over about 1 MB and then never records the
report at all, so an input that provokes a huge error (300 bad overrides on a
1000-node graph) would lose the task. Every text and JSON value that leaves the
worker passes through here first and is cut to a fixed budget, saying what was cut.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

MAX_LIST_ITEMS = 20  # list entries kept in an error content before "... and N more"
MAX_STRING_CHARS = 2_000  # characters kept of any one string in an error content
MAX_DEPTH = 8  # nesting kept in an error content


def bound_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def capped(items: Iterable[Any], limit: int = MAX_LIST_ITEMS) -> list[Any]:
    """The first ``limit`` items, then one ``"... and N more"`` entry if any were left out."""
    values = list(items)
    if len(values) <= limit:
        return values
    return [*values[:limit], f"... and {len(values) - limit} more"]


def json_size(value: Any) -> int:
    """Bytes of ``value`` encoded as the LittleHorse SDK encodes it (``json.dumps`` defaults)."""
    return len(json.dumps(value, default=str))


def dumps(value: Any) -> str:
    """Compact JSON that never fails: unknown types become strings."""
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


def bound_json(value: Any, max_bytes: int) -> Any:
    """A JSON-able copy of ``value`` no larger than ``max_bytes`` when encoded.

    Strings, lists and dicts are cut ever shorter until the whole fits; what is cut
    says so. Non-finite floats and lone surrogates become strings, so the result
    always encodes as strict JSON.
    """
    strings, items = MAX_STRING_CHARS, MAX_LIST_ITEMS
    while True:
        bounded = _bound(value, strings, items, MAX_DEPTH)
        fits = json_size(bounded) <= max_bytes
        if fits or (strings <= 16 and items <= 1):
            return bounded if fits else bound_text(dumps(bounded), 64)
        strings, items = max(strings // 4, 16), max(items // 2, 1)


def json_safe(value: Any, max_depth: int = 64) -> Any:
    """``value`` unchanged in size, but always strict JSON: no NaN, no lone surrogates."""
    unlimited = 1 << 62
    return _bound(value, unlimited, unlimited, max_depth)


def _bound(value: Any, strings: int, items: int, depth: int) -> Any:
    if isinstance(value, str):
        return bound_text(safe_string(value), strings)
    if isinstance(value, bool | int) or value is None:
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth <= 0:
        return "..."
    if isinstance(value, dict):
        keys = list(value)
        kept = {
            bound_text(safe_string(str(k)), strings): _bound(value[k], strings, items, depth - 1)
            for k in keys[:items]
        }
        if len(keys) > items:
            kept["..."] = f"and {len(keys) - items} more keys"
        return kept
    if isinstance(value, list | tuple | set | frozenset):
        return [_bound(v, strings, items, depth - 1) for v in capped(value, items)]
    return bound_text(safe_string(str(value)), strings)


def safe_string(text: str) -> str:
    """``text`` with lone surrogates replaced, so it always encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
