"""Moved to :mod:`fakes.littlehorse`; this module re-exports it for existing imports.

``python -m tests.fakes.littlehorse`` still runs the standalone fake.
"""

import sys

from fakes.littlehorse import FakeLittleHorse, WorkerThread, close_sync_channels
from fakes.littlehorse.__main__ import main

__all__ = ["FakeLittleHorse", "WorkerThread", "close_sync_channels", "main"]

if __name__ == "__main__":
    sys.exit(main())
