"""Either LittleHorse, the fake or the real server, behind one face (tests, benchmarks).

Everything read goes through the public gRPC API, which both serve, so a scenario or
a benchmark written against ``LittleHorseUnderTest`` runs unchanged on both. On a
shared real server each user takes a tenant of its own (``new_tenant``): TaskDefs,
WfSpecs, WfRuns and queued tasks of one tenant are invisible to the others.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    CheckpointId,
    GetLatestWfSpecRequest,
    LHStatus,
    PutTenantRequest,
    SearchWfRunRequest,
    TaskDefId,
    TaskRun,
    TaskRunId,
    WfRun,
    WfRunId,
)

from fakes.lhserver import RealLittleHorse
from fakes.littlehorse import FakeLittleHorse, close_sync_channels

TERMINATED = (LHStatus.COMPLETED, LHStatus.EXCEPTION, LHStatus.ERROR)
POLL_S = 0.05
_T = TypeVar("_T")


class LittleHorseUnderTest:
    """One server (fake or real) and the tenant a test uses on it."""

    def __init__(
        self, kind: str, server: FakeLittleHorse | RealLittleHorse, tenant: str | None = None
    ) -> None:
        self.kind = kind
        self.server = server
        self.tenant = tenant
        self._config = self.config()
        self.stub = self._config.stub()

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC API."""
        return self.server.address

    @property
    def fake(self) -> FakeLittleHorse | None:
        """The fake, when this is the fake (for controls only it has)."""
        return self.server if isinstance(self.server, FakeLittleHorse) else None

    def env(self) -> dict[str, str]:
        """``LHC_*`` for a worker or a command: the server, and the test's tenant."""
        tenant = {"LHC_TENANT_ID": self.tenant} if self.tenant else {}
        return {**self.server.env(), **tenant}

    def config(self, **extra: str) -> LHConfig:
        """An ``LHConfig`` for this server and tenant."""
        tenant = {"LHC_TENANT_ID": self.tenant} if self.tenant else {}
        return self.server.config(**tenant, **extra)

    def close(self) -> None:
        """Close the gRPC channels this object opened."""
        close_sync_channels(self._config)

    # ------------------------------------------------------------------ time

    def real_time(self) -> None:
        """Task timeouts and backoff as registered (the fake's stack scales them down)."""
        if self.fake is not None:
            self.fake.time_scale = 1.0

    # ------------------------------------------------------------------ reads

    def wf_run(self, wf_run_id: str) -> WfRun | None:
        """The WfRun, or None if there is none (yet)."""
        return _or_none(lambda: self.stub.GetWfRun(WfRunId(id=wf_run_id)))

    def wf_runs_started(self, wf_spec: str = "comfyui-generate") -> int:
        """How many WfRuns of ``wf_spec`` exist (SearchWfRun, in this tenant)."""
        request = SearchWfRunRequest(wf_spec_name=wf_spec, limit=1000)
        return len(self.stub.SearchWfRun(request, timeout=10).results)

    def wait_wf_run(
        self,
        wf_run_id: str,
        statuses: Iterable[int] = TERMINATED,
        timeout_s: float = 60,
    ) -> WfRun:
        """Poll until the WfRun has one of ``statuses`` (the real server's reads lag)."""
        wanted = set(statuses)
        return wait_for(
            lambda: _having(self.wf_run(wf_run_id), wanted), timeout_s, f"WfRun {wf_run_id}"
        )

    def task_run(self, wf_run_id: str, guid: str = "0-1") -> TaskRun | None:
        """The WfRun's TaskRun (``0-1``: the entrypoint's task), or None if not yet made."""
        run_id = TaskRunId(wf_run_id=WfRunId(id=wf_run_id), task_guid=guid)
        return _or_none(lambda: self.stub.GetTaskRun(run_id))

    def wait_attempts(self, wf_run_id: str, check: Callable[[list[Any]], bool]) -> TaskRun:
        """Poll until the TaskRun's attempts satisfy ``check``."""

        def probe() -> TaskRun | None:
            run = self.task_run(wf_run_id)
            return run if run is not None and check(list(run.attempts)) else None

        return wait_for(probe, 90, f"attempts of {wf_run_id}")

    def checkpoints(self, wf_run_id: str, guid: str = "0-1") -> list[dict[str, Any]]:
        """Every checkpoint of the TaskRun, oldest first, as the JSON values they hold."""
        run = self.task_run(wf_run_id, guid)
        if run is None:
            return []
        found = []
        for number in range(run.total_checkpoints):
            checkpoint_id = CheckpointId(task_run=run.id, checkpoint_number=number)
            checkpoint = self.stub.GetCheckpoint(checkpoint_id)
            found.append(json.loads(checkpoint.value.json_obj))
        return found

    def has_task_def(self, name: str) -> bool:
        """Whether the TaskDef exists."""
        return _or_none(lambda: self.stub.GetTaskDef(TaskDefId(name=name))) is not None

    def has_wf_spec(self, name: str) -> bool:
        """Whether a WfSpec of that name exists."""
        request = GetLatestWfSpecRequest(name=name)
        return _or_none(lambda: self.stub.GetLatestWfSpec(request)) is not None

    # ------------------------------------------------------------------ faults

    @contextlib.contextmanager
    def away(self) -> Iterator[None]:
        """LittleHorse stopped (gracefully) inside the block, serving again with its state after."""
        if isinstance(self.server, FakeLittleHorse):
            self.server.stop()
            try:
                yield
            finally:
                self.server.start()
            return
        self.server.stop_server()
        try:
            yield
        finally:
            self.server.start_server()

    def restart(self, *, kill: bool) -> None:
        """Stop the server (SIGKILL with ``kill``) and start it again with all its state."""
        if isinstance(self.server, FakeLittleHorse):
            self.server.restart()
        else:
            self.server.restart_server(kill=kill)


def wait_for(probe: Callable[[], _T | None], timeout_s: float, what: str) -> _T:
    """``probe()`` until it returns something, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not as expected within {timeout_s}s")
        time.sleep(POLL_S)
    return found


def _or_none(call: Callable[[], _T]) -> _T | None:
    try:
        return call()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            return None
        raise


def _having(run: WfRun | None, statuses: set[int]) -> WfRun | None:
    return run if run is not None and run.status in statuses else None


def new_tenant(server: RealLittleHorse) -> str:
    """A tenant of the test's own on the shared real server, usable when this returns."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    admin, scoped = server.config(), server.config(LHC_TENANT_ID=tenant)
    try:
        admin.stub().PutTenant(PutTenantRequest(id=tenant))
        probe = scoped.stub()
        wait_for(lambda: _tenant_ready(probe), 30, f"tenant {tenant}")
    finally:
        close_sync_channels(admin)
        close_sync_channels(scoped)
    return tenant


def _tenant_ready(stub: Any) -> bool | None:
    """True once the tenant's reads answer (NOT_FOUND for a TaskDef nobody made)."""
    try:
        stub.GetTaskDef(TaskDefId(name="no-such-task-def"))
    except grpc.RpcError as exc:
        return True if exc.code() == grpc.StatusCode.NOT_FOUND else None  # type: ignore[attr-defined]
    return True
