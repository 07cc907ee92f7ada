"""Write a stream to a file descriptor while hashing it, overlapping network and disk.

For a large file the sha256 and the writes run on a writer thread (both release the
GIL), fed through a small bounded queue, so receiving the next chunk overlaps with
hashing and writing the last one while memory stays flat (at most ``QUEUE_CHUNKS``
chunks in flight). Written data is flushed every ``SYNC_EVERY_BYTES`` and dropped
from the page cache: the final fsync (when configured) stays short, the kernel keeps
reusing the same pages instead of faulting in fresh ones, and a multi-GiB video does
not push the models out of a GPU host's page cache. Small files are written
inline, where a thread would only add latency.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import Any

QUEUE_CHUNKS = 8
SYNC_EVERY_BYTES = 64 * 1024 * 1024
THREADED_FROM_BYTES = 8 * 1024 * 1024


class FileSink:
    """Hash-and-write for one file; call ``write`` per chunk, then ``finish``."""

    def __init__(
        self,
        fd: int,
        *,
        fsync: bool,
        expected_bytes: int | None,
        resumed: tuple[int, Any] | None = None,
    ) -> None:
        """``resumed``: (bytes already in the file, their sha256 object), to append to them."""
        self._fd = fd
        self._fsync = fsync
        self._digest = resumed[1] if resumed else hashlib.sha256()
        self._written = resumed[0] if resumed else 0
        self._synced = self._written
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if expected_bytes is None or expected_bytes >= THREADED_FROM_BYTES:
            self._queue = queue.Queue(maxsize=QUEUE_CHUNKS)
            self._thread = threading.Thread(target=self._drain, name="file-sink", daemon=True)
            self._thread.start()

    def write(self, chunk: bytes) -> None:
        """Hand over one chunk (blocks while the queue is full)."""
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._consume(chunk)
        else:
            self._queue.put(chunk)

    def finish(self) -> str:
        """Wait for every chunk to be on disk (fsynced if configured); return the sha256."""
        self._stop()
        if self._error is not None:
            raise self._error
        if self._fsync:
            os.fsync(self._fd)
        return self._digest.hexdigest()

    def abandon(self) -> None:
        """Stop the writer after a failure elsewhere; the caller deletes the file."""
        self._stop()

    def _stop(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)  # the writer keeps draining even after an error
            self._thread.join()
            self._queue = None

    def _drain(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep emptying so the producer never blocks forever
            try:
                self._consume(chunk)
            except BaseException as exc:
                self._error = exc

    def _consume(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written += len(chunk)
        if self._written - self._synced >= SYNC_EVERY_BYTES:
            os.fdatasync(self._fd)
            os.posix_fadvise(
                self._fd, self._synced, self._written - self._synced, os.POSIX_FADV_DONTNEED
            )
            self._synced = self._written
