r"""Task input as strict JSON: what Python's json accepts but nothing downstream can use.

Python reads ``NaN``, ``1e400`` (as infinity), lone surrogates (``"\ud800"``),
integers of thousands of digits and structures nested thousands deep, and each of
them later breaks something far from the input (a report LittleHorse rejects, a
file name that cannot be encoded, a recursion limit). Every task input is checked
here once, at the boundary, and refused with the path of the offending value.
"""

from __future__ import annotations

import json
import math
from typing import Any

from comfyui_worker.bounds import safe_string
from comfyui_worker.errors import InvalidWorkflowError

MAX_DEPTH = 64
MAX_INT = 2**63  # LittleHorse and ComfyUI both hold integers in 64 bits


def loads(text: str | bytes, *, source: str) -> Any:
    """Parse strict JSON (no NaN/Infinity) and check the value; errors name ``source``."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidWorkflowError(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            source=source,
        ) from None
    except (RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidWorkflowError(
            f"{source}: not usable JSON: {type(exc).__name__}: {exc}", source=source
        ) from None
    check(value, source=source)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def check(value: Any, *, source: str) -> None:
    """Refuse non-finite numbers, huge integers, lone surrogates and deep nesting.

    Walks iteratively, so a hostile depth cannot exhaust the stack here.
    """
    stack: list[tuple[Any, str, int]] = [(value, source, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            _fail(path, f"is nested more than {MAX_DEPTH} levels deep", source)
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or safe_string(key) != key:
                    _fail(path, f"has a key that is not valid Unicode text: {key!r:.40}", source)
                stack.append((child, f"{path}[{json.dumps(key)[:60]}]", depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            _check_scalar(item, path, source)


def _check_scalar(item: Any, path: str, source: str) -> None:
    if isinstance(item, float) and not math.isfinite(item):
        _fail(path, f"is {item}, which JSON cannot carry (a number too large, or NaN)", source)
    elif isinstance(item, int) and not isinstance(item, bool) and not -MAX_INT <= item < MAX_INT:
        _fail(path, "is an integer outside the 64-bit range", source)
    elif isinstance(item, str) and safe_string(item) != item:
        _fail(path, "holds a lone surrogate (\\ud800-\\udfff), which is not valid text", source)


def _fail(path: str, problem: str, source: str) -> None:
    raise InvalidWorkflowError(f"{path} {problem}", source=source, path=path[:300])
