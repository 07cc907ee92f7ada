"""The one "did you mean" helper, and capped lists for messages.

Every error that names a wrong value (a node id, an input, a template, a parameter,
a model) suggests close spellings the same way and lists at most ``LIST_LIMIT``
candidates, so a 1000-node graph cannot make a message huge.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

LIST_LIMIT = 10
MAX_CHOICES_SCANNED = 5_000  # difflib is quadratic per pair; huge candidate sets are cut
# how alike a suggestion must be (difflib's ratio): a typo is (colour/color 0.91, sed/seed
# 0.86), a different word sharing letters is not (NoSuchNode/LossGraphNode 0.61)
SIMILARITY_CUTOFF = 0.75


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Case-insensitive difflib matches, returned in their original spelling."""
    by_lower: dict[str, str] = {}
    for index, choice in enumerate(choices):
        if index >= MAX_CHOICES_SCANNED:
            break
        by_lower.setdefault(choice.lower(), choice)
    found = difflib.get_close_matches(
        word.lower()[:200], list(by_lower), n=n, cutoff=SIMILARITY_CUTOFF
    )
    return [by_lower[match] for match in found]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x' or 'y'?)"``, or an empty string when nothing is close."""
    return ask(close_matches(word, choices))


def ask(suggestions: list[str]) -> str:
    """Phrase ready-made suggestions the same way: ``" (did you mean 'x'?)"``."""
    if not suggestions:
        return ""
    return " (did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?)"


def quote_list(items: Iterable[object], limit: int = LIST_LIMIT) -> str:
    """``'a', 'b', 'c'``, at most ``limit`` of them, then ``... (N more)``."""
    values = list(items)
    shown = values[:limit]
    text = ", ".join(f"'{item}'" for item in shown)
    if len(values) > limit:
        text += f", ... ({len(values) - limit} more)"
    return text or "(none)"
