"""Static checks of the deployment files: docker-compose.yml, Dockerfile, .dockerignore.

There is no Docker engine where the tests run, so these parse the files and check the
wiring that would otherwise only break at ``docker compose up``: pinned images,
service names and ports that the environment variables point at, real setting names,
health checks, start-up order, the drain grace period and what the image copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from comfyui_worker.settings import ComfySettings, WorkerSettings, load_comfy, load_worker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The LittleHorse SDK reads these itself; they are not this project's settings.
SDK_VARS = {
    "LHC_API_HOST",
    "LHC_API_PORT",
    "LHC_API_PROTOCOL",
    "LHC_TENANT_ID",
    "LHC_CA_CERT",
    "LHC_CLIENT_CERT",
    "LHC_CLIENT_KEY",
    "LHC_OAUTH_CLIENT_ID",
    "LHC_OAUTH_CLIENT_SECRET",
    "LHC_OAUTH_ACCESS_TOKEN_URL",
    "LHC_GRPC_KEEPALIVE_TIME_MS",
    "LHW_TASK_WORKER_ID",
    "LHW_TASK_WORKER_VERSION",
}
WORKER_SERVICES = ("worker", "register")


# --------------------------------------------------------------------------- helpers


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found = load_compose()["services"]
    assert isinstance(found, dict)
    return found


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def as_argv(value: Any) -> list[str]:
    """A compose ``command``/``test`` (string or list) as an argument list."""
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list)
    return [str(item) for item in value]


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports of a service's ``ports`` (short or long syntax)."""
    found = set()
    for entry in service.get("ports", []):
        target = entry["target"] if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        found.add(int(str(target).split("/")[0]))
    return found


def healthcheck_url(service: dict[str, Any]) -> str:
    """The http:// URL a service's health check probes."""
    check = service.get("healthcheck")
    assert check and not check.get("disable"), "no health check"
    text = " ".join(as_argv(check["test"]))
    match = re.search(r"https?://[^\s'\"]+", text)
    assert match, f"health check probes no URL: {text}"
    return match.group(0)


def parse_duration(value: str | int) -> float:
    """Seconds in a compose duration such as ``330s``, ``5m30s`` or ``1h``."""
    if isinstance(value, int):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * scale[u] for n, u in parts)


def pinned(image: str) -> bool:
    """True for ``name@sha256:...`` or ``name:TAG`` with a versioned tag (not latest)."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag, only a registry port
        return False
    return tag != "latest" and bool(re.search(r"\d", tag))


@dataclass
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends with a continuation line"
    return instructions


def of(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.keyword == keyword]


def build_args() -> dict[str, str]:
    """ARG defaults, for expanding ``${NAME}`` in FROM lines."""
    found = {}
    for instruction in of("ARG"):
        name, _, default = instruction.args.partition("=")
        found[name] = default
    return found


def dockerfile_env() -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in of("ENV"):
        for token in shlex.split(instruction.args):
            name, _, value = token.partition("=")
            found[name] = value
    return found


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
    """A COPY's ``--flag=value`` options and its sources (destination dropped)."""
    tokens = shlex.split(instruction.args)
    flags = dict(t[2:].partition("=")[::2] for t in tokens if t.startswith("--"))
    rest = [t for t in tokens if not t.startswith("--")]
    if rest and rest[0].startswith("["):
        rest = json.loads(" ".join(rest))
    return flags, rest[:-1]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (or a parent folder) out of the context."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(candidate, pattern[3:])
            ):
                result = not negate
    return result


def dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def stage_names() -> set[str]:
    names = set()
    for instruction in of("FROM"):
        match = re.search(r"\bAS\s+(\S+)$", instruction.args, re.IGNORECASE)
        if match:
            names.add(match.group(1))
    return names


# --------------------------------------------------------------------------- compose


def test_compose_has_the_services():
    """littlehorse, comfyui, the S3 store, the one-shot register and the worker are defined."""
    assert {"littlehorse", "comfyui", "seaweedfs", "register", "worker"} <= set(services())


def test_every_image_is_pinned():
    """Every pulled image has a versioned tag or digest; built ones are tagged, not latest."""
    for name, service in services().items():
        image = service.get("image")
        assert image or "build" in service, f"{name}: neither image nor build"
        if image is None:
            continue
        if "build" in service:
            assert not image.endswith(":latest"), f"{name}: {image}"
        else:
            assert pinned(image), f"{name}: image {image!r} is not pinned"


def test_gpu_variant_is_shown_and_pinned():
    """The commented GPU block reserves an NVIDIA device and names a pinned image."""
    text = COMPOSE_FILE.read_text()
    assert re.search(r"#\s*- driver: nvidia", text)
    assert re.search(r"#\s*capabilities: \[gpu\]", text)
    images = re.findall(r"#\s*image:\s*(\S+)", text)
    assert images, "no GPU image in the commented block"
    assert all(pinned(image) for image in images), images


def test_littlehorse_advertises_its_service_name():
    """Workers are told to reach LittleHorse at the service name, on the gRPC port."""
    littlehorse = services()["littlehorse"]
    listeners = env_of(littlehorse)["LHS_ADVERTISED_LISTENERS"]
    advertised = {urlsplit(item).hostname: urlsplit(item).port for item in listeners.split(",")}
    assert advertised == {"littlehorse": 2023}, listeners
    assert 2023 in container_ports(littlehorse)
    assert 8080 in container_ports(littlehorse), "dashboard not published"


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_env_points_at_the_services(name: str):
    """LHC_API_HOST/PORT and COMFYUI_BASE_URL name the littlehorse and comfyui services."""
    all_services = services()
    env = env_of(all_services[name])
    assert env["LHC_API_HOST"] in all_services
    assert env["LHC_API_HOST"] == "littlehorse"
    listeners = env_of(all_services["littlehorse"])["LHS_ADVERTISED_LISTENERS"]
    assert int(env["LHC_API_PORT"]) == urlsplit(listeners.split(",")[0]).port
    assert env.get("LHC_API_PROTOCOL", "PLAINTEXT") == "PLAINTEXT"
    url = urlsplit(env["COMFYUI_BASE_URL"])
    assert url.hostname == "comfyui"
    comfy_port = urlsplit(healthcheck_url(all_services["comfyui"])).port
    assert url.port == comfy_port == 8188
    assert url.port in container_ports(all_services["comfyui"])


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_env_names_real_settings(name: str):
    """Each COMFYUI_*/WORKER_*/LHW_* variable is a settings alias; the rest are SDK vars."""
    aliases = {
        field.alias
        for model in (ComfySettings, WorkerSettings)
        for field in model.model_fields.values()
        if field.alias
    }
    for var in env_of(services()[name]):
        if var in SDK_VARS:
            continue
        assert var.startswith(("COMFYUI_", "WORKER_", "LHW_", "AWS_")), f"{name}: unexpected {var}"
        assert var in aliases, f"{name}: {var} is not a setting (typo?)"


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_env_passes_validation(name: str):
    """The compose environment loads with the same validation the worker runs at start."""
    env = env_of(services()[name])
    load_comfy(env)
    load_worker(env)


def test_register_and_worker_agree_on_the_task():
    """Register builds the WfSpec from the same task name and timeout the worker uses."""
    worker, register = (env_of(services()[name]) for name in WORKER_SERVICES)
    for var in ("LHW_TASK_NAME", "COMFYUI_HISTORY_TIMEOUT_SEC", "LHC_API_HOST", "LHC_API_PORT"):
        assert worker.get(var) == register.get(var), var
    assert services()["worker"].get("image") == services()["register"].get("image")


def test_outputs_go_to_the_compose_object_store():
    """The worker writes to the seaweedfs service's bucket, with its admin credentials."""
    all_services = services()
    env = env_of(all_services["worker"])
    store = env_of(all_services["seaweedfs"])
    assert env["WORKER_OUTPUT_URL"].startswith("s3://comfy-outputs/")
    assert "-bucket=comfy-outputs" in as_argv(all_services["seaweedfs"]["command"])
    assert urlsplit(env["AWS_ENDPOINT_URL"]).hostname == "seaweedfs"
    assert urlsplit(env["AWS_ENDPOINT_URL"]).port in container_ports(all_services["seaweedfs"])
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[var] == store[var], var


def test_comfyui_volumes_are_declared():
    """Every named volume a service mounts is declared at the top level."""
    declared = set(load_compose().get("volumes") or {})
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source} not declared"


@pytest.mark.parametrize(
    ("name", "port", "path"),
    [
        ("littlehorse", 1822, "/readiness"),
        ("comfyui", 8188, "/system_stats"),
        ("seaweedfs", 9333, "/cluster/status"),
        ("worker", 0, ""),
    ],
)
def test_healthchecks(name: str, port: int, path: str):
    """littlehorse, comfyui and worker have health checks on the right endpoints."""
    service = services()[name]
    url = urlsplit(healthcheck_url(service))
    if name == "worker":
        port = int(env_of(service).get("WORKER_HTTP_PORT", "8089"))
        path = "/healthz"
    assert (url.port, url.path) == (port, path)


def test_start_up_order():
    """The worker waits for healthy services and a successful register; register for LH."""
    all_services = services()
    assert all_services["worker"]["depends_on"] == {
        "littlehorse": {"condition": "service_healthy"},
        "comfyui": {"condition": "service_healthy"},
        "seaweedfs": {"condition": "service_healthy"},
        "register": {"condition": "service_completed_successfully"},
    }
    register_deps = all_services["register"]["depends_on"]
    assert register_deps["littlehorse"] == {"condition": "service_healthy"}


def test_commands():
    """The worker runs ``worker``; register runs ``register`` once and is not restarted."""
    all_services = services()
    assert as_argv(all_services["worker"]["command"]) == ["worker"]
    assert as_argv(all_services["register"]["command"]) == ["register"]
    # Unquoted `no` is YAML for false: compose needs the string.
    assert all_services["register"]["restart"] == "no"


def test_stop_grace_period_exceeds_drain():
    """Docker waits longer than the drain, so a running generation is never SIGKILLed."""
    worker = services()["worker"]
    drain = float(env_of(worker).get("WORKER_DRAIN_TIMEOUT_SEC", "300"))
    assert parse_duration(worker["stop_grace_period"]) > drain


def test_worker_runs_one_thread():
    """One worker drives one ComfyUI: the compose file must not raise the thread count."""
    assert env_of(services()["worker"]).get("LHW_NUM_WORKER_THREADS", "1") == "1"


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_images_are_pinned():
    """FROM and COPY --from images carry a versioned tag or digest."""
    args, stages = build_args(), stage_names()
    for instruction in of("FROM"):
        image = instruction.args.split()[0]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
        assert image in stages or pinned(image), f"FROM {image}"
    assert any(
        "python:3.11" in instruction.args or "3.11" in args.get("PYTHON_IMAGE", "")
        for instruction in of("FROM")
    )
    for instruction in of("COPY"):
        source = copy_parts(instruction)[0].get("from")
        if source is not None and source not in stages:
            assert pinned(source), f"COPY --from={source}"


def test_dockerfile_copies_uv_from_the_official_image():
    """uv comes from ghcr.io/astral-sh/uv at a pinned version."""
    sources = [copy_parts(i)[0].get("from", "") for i in of("COPY")]
    assert any(
        re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", s)
        for s in sources
    ), sources


def test_dockerfile_installs_from_the_lock_before_the_source():
    """uv.lock is copied and synced (frozen, no dev, cached) before any source is copied."""
    instructions = dockerfile()
    lock = next(
        n for n, i in enumerate(instructions) if i.keyword == "COPY" and "uv.lock" in i.args
    )
    sync = next(n for n, i in enumerate(instructions) if i.keyword == "RUN" and "uv sync" in i.args)
    source = next(
        n
        for n, i in enumerate(instructions)
        if i.keyword == "COPY" and ("comfyui_worker" in i.args or "main.py" in i.args)
    )
    assert lock < sync < source
    run = instructions[sync].args
    for flag in ("--frozen", "--no-dev", "--no-install-project"):
        assert flag in run, flag
    assert "--mount=type=cache" in run
    assert copy_parts(instructions[lock])[1] == ["pyproject.toml", "uv.lock"]


def test_dockerfile_copies_the_source():
    """The image gets main.py, the package and the workflow templates."""
    copied = {
        src.rstrip("/")
        for i in of("COPY")
        if "from" not in copy_parts(i)[0]
        for src in copy_parts(i)[1]
    }
    assert {"main.py", "comfyui_worker", "workflows"} <= copied


def test_every_copied_file_exists_and_is_in_the_context():
    """Each COPY source (not from another stage/image) exists and is not .dockerignored."""
    patterns = dockerignore()
    for instruction in of("COPY"):
        flags, sources = copy_parts(instruction)
        if "from" in flags:
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_runs_as_non_root():
    """The final stage switches to a non-root user before ENTRYPOINT."""
    users = of("USER")
    assert users, "no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    instructions = dockerfile()
    last_from = max(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    assert any(i.keyword == "USER" for i in instructions[last_from:])


def test_dockerfile_healthcheck_uses_the_http_port():
    """HEALTHCHECK probes /healthz with python on the port WORKER_HTTP_PORT configures."""
    (healthcheck,) = of("HEALTHCHECK")
    match = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", healthcheck.args)
    assert match, healthcheck.args
    port = int(match.group(1))
    assert port == int(dockerfile_env().get("WORKER_HTTP_PORT", "8089"))
    assert port == WorkerSettings.model_fields["http_port"].default
    assert port == int(env_of(services()["worker"]).get("WORKER_HTTP_PORT", str(port)))
    assert '"python"' in healthcheck.args and "curl" not in healthcheck.args


def test_dockerfile_entrypoint_and_env():
    """ENTRYPOINT runs main.py, CMD defaults to worker, the venv is on PATH, unbuffered."""
    (entrypoint,) = of("ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["python", "main.py"]
    (cmd,) = of("CMD")
    assert json.loads(cmd.args) == ["worker"]
    env = dockerfile_env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/app/.venv/bin:")


def test_dockerfile_lint_basics():
    """hadolint-style basics: no ADD of URLs, apt installs without recommends, cleaned."""
    for instruction in of("ADD"):
        assert not re.search(r"https?://", instruction.args), f"ADD {instruction.args}"
    for instruction in of("RUN"):
        if re.search(r"apt(-get)? install", instruction.args):
            assert "--no-install-recommends" in instruction.args, instruction.args
            assert "rm -rf /var/lib/apt/lists" in instruction.args, instruction.args
        assert "curl " not in instruction.args or "| sh" not in instruction.args
    assert not any(i.args.startswith("latest") for i in of("FROM"))


def test_dockerignore_excludes_the_noise():
    """The build context leaves out the venv, tests, git, caches and benchmark results."""
    patterns = dockerignore()
    for path in (
        ".venv",
        "tests",
        ".git",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "comfyui_worker/__pycache__",
        "benchmarks/results",
    ):
        assert ignored(path, patterns), f"{path} is sent to the Docker daemon"
    for path in ("pyproject.toml", "uv.lock", "main.py", "comfyui_worker/cli.py", "workflows"):
        assert not ignored(path, patterns), f"{path} is excluded but the build needs it"
