"""The one place where httpx's transport errors become ours, for every outbound call.

Whether a failed request may still have been acted on is decided here, once, from
the failure's type (as httpx's own transport maps socket errors): a connection that
was never made delivered nothing, while a timeout or a cut after the request was
written may hide a request the peer did act on (a prompt ComfyUI queued). Callers
read ``UnreachableError.maybe_delivered`` and never look at httpx classes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import stamina

from comfyui_worker.errors import UnreachableError

MIN_TRY_S = 0.05  # a try with less time left than this cannot succeed; don't start it

# Failures after the request may have left this process whole.
_MAYBE_DELIVERED: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.CloseError,
)


def unreachable(
    exc: httpx.TransportError, *, service: str, url: str, kind: type[UnreachableError]
) -> UnreachableError:
    """Map one transport failure to ``kind``, naming the service and its (redacted) URL."""
    cause = type(exc).__name__
    return kind(
        f"{service} at {url} is unreachable ({cause}: {exc or 'no detail'})",
        maybe_delivered=isinstance(exc, _MAYBE_DELIVERED),
        url=url,
        cause=cause,
    )


@contextmanager
def mapped(*, service: str, url: str, kind: type[UnreachableError]) -> Iterator[None]:
    """Turn any httpx transport error raised inside the block into ``kind``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise unreachable(exc, service=service, url=url, kind=kind) from exc


def mapped_chunks(
    chunks: Iterator[bytes], *, service: str, url: str, kind: type[UnreachableError]
) -> Iterator[bytes]:
    """Re-raise mid-stream transport errors as ``kind`` (the body of a download)."""
    with mapped(service=service, url=url, kind=kind):
        yield from chunks


class Deadline:
    """An overall time budget for one logical call, across all its tries.

    ``COMFYUI_HTTP_TIMEOUT_SEC`` bounds each try; the deadline bounds the call, so a
    hung server fails a call after the deadline, not after (retries + 1) x timeout.
    """

    def __init__(self, budget_s: float) -> None:
        self._ends = time.monotonic() + budget_s

    def remaining_s(self) -> float:
        """Seconds left, never negative."""
        return max(self._ends - time.monotonic(), 0.0)

    def try_timeout(self, per_try_s: float) -> float:
        """The timeout for the next try: the per-try timeout, cut to what is left."""
        return max(min(per_try_s, self.remaining_s()), 0.001)

    def expired(self) -> bool:
        """Whether too little is left for another try to be worth starting."""
        return self.remaining_s() < MIN_TRY_S

    def retrying(self, on: tuple[type[Exception], ...], attempts: int) -> Any:
        """Stamina's retry loop, stopped by this deadline as well as by ``attempts``."""

        def retry(exc: Exception) -> bool:
            return isinstance(exc, on) and not self.expired()

        return stamina.retry_context(
            on=retry,
            attempts=attempts,
            timeout=max(self.remaining_s(), 0.001),
            wait_initial=0.2,
            wait_max=5.0,
            wait_jitter=0.5,
        )
