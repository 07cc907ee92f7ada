"""The models directory's ledger: which files this worker downloaded, their size, last use.

A small JSON file (``.comfyui-worker/models.json`` in ``COMFYUI_MODELS_DIR``), read and
rewritten (temp file, rename) under an exclusive ``flock``, so several workers sharing
one directory keep one ledger. Only files listed here are ever evicted: a model someone
copied in by hand is never touched. ``victims`` picks least recently used ones first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from comfyui_worker.errors import ModelStorageError

STATE_DIR = ".comfyui-worker"
LEDGER_FILE = "models.json"


@dataclass(frozen=True)
class Entry:
    """One downloaded model: ``folder/name``, its size and sha256, when it was last used."""

    key: str
    size_bytes: int
    sha256: str
    last_used: float
    downloaded_at: float


class Ledger:
    """The ledger file of one models directory."""

    def __init__(self, models_dir: Path) -> None:
        self.state_dir = models_dir / STATE_DIR
        self.path = self.state_dir / LEDGER_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Entry]]:
        """The entries, locked against other processes; changes are written back on exit."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.state_dir / "ledger.lock", "a+b")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise _storage_error(exc, self.state_dir) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            before = dict(entries)
            yield entries
            if entries != before:
                try:
                    self._write(entries)
                except OSError as exc:
                    raise _storage_error(exc, self.path) from None

    def entries(self) -> dict[str, Entry]:
        """A snapshot of every entry."""
        with self._locked() as entries:
            return dict(entries)

    def record(self, key: str, size_bytes: int, sha256: str) -> None:
        """A model was just downloaded."""
        now = time.time()
        with self._locked() as entries:
            entries[key] = Entry(key, size_bytes, sha256, now, now)

    def touch(self, key: str) -> bool:
        """Mark a model used now; whether it is one of ours."""
        with self._locked() as entries:
            entry = entries.get(key)
            if entry is None:
                return False
            entries[key] = Entry(
                key, entry.size_bytes, entry.sha256, time.time(), entry.downloaded_at
            )
            return True

    def forget(self, key: str) -> None:
        """A model was evicted (or vanished)."""
        with self._locked() as entries:
            entries.pop(key, None)

    def _read(self) -> dict[str, Entry]:
        try:
            raw = json.loads(self.path.read_bytes())
            files = raw.get("files", {}) if isinstance(raw, dict) else {}
            return {key: Entry(key=key, **value) for key, value in files.items()}
        except (OSError, ValueError, TypeError):
            return {}  # no ledger yet (or a damaged one): nothing counts as ours

    def _write(self, entries: dict[str, Entry]) -> None:
        files = {
            key: {k: v for k, v in asdict(e).items() if k != "key"} for key, e in entries.items()
        }
        temp = self.path.with_name(f".{LEDGER_FILE}.tmp")
        temp.write_text(json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True))
        os.replace(temp, self.path)


def _storage_error(exc: OSError, path: Path) -> ModelStorageError:
    code = errno.errorcode.get(exc.errno or 0, "unknown")
    return ModelStorageError(
        f"cannot keep the models ledger {path}: {exc.strerror or exc} ({code})",
        path=str(path),
        errno=code,
    )


def victims(
    entries: dict[str, Entry], need_bytes: int, budget_bytes: int, keep: str
) -> list[Entry]:
    """Least recently used entries to evict so ``need_bytes`` more fit in the budget."""
    others = sorted((e for e in entries.values() if e.key != keep), key=lambda e: e.last_used)
    used = sum(e.size_bytes for e in others)
    chosen: list[Entry] = []
    for entry in others:
        if used + need_bytes <= budget_bytes:
            break
        chosen.append(entry)
        used -= entry.size_bytes
    return chosen
