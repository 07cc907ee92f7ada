"""The test suite: ``tests/<folder>/test_<module>.py`` mirrors ``comfyui_worker/``.

Scenario tests across modules (the fleet, isolation, the two LittleHorse servers,
the README) sit at the top; helpers (``conftest``, ``stack``, ``servers``) too.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
