"""A faithful fake ComfyUI 0.3.64 server for the test suite.

Real HTTP and WebSocket on 127.0.0.1 (aiohttp in a daemon thread with its own event loop).
Shapes, message order, validation errors, caching and file naming follow the real server
(``server.py``, ``execution.py``, ``main.py`` of ComfyUI 0.3.64) and the captures in
``tests/fixtures/comfyui/``. Nodes do no real work: images are tiny PNGs, time is simulated.

Usage::

    with FakeComfyUI(tmp_path) as comfy:
        httpx.post(f"{comfy.base_url}/prompt", json={"prompt": graph, "client_id": "c1"})

Test controls (all callable from the test thread): ``execution_time_s``, ``history_delay_s``,
``websocket_enabled``, ``checkpoints``, ``upscale_models``, ``fail_node``, ``clear_failures``,
``fail_requests``, ``delay_requests``, ``clear_request_faults``, ``drop_websockets``,
``restart``, ``stop_http``/``start_http``, ``pause``/``resume``, ``wait_idle``.
Introspection: ``submitted``, ``executed``, ``cached_runs``, ``interrupted``, ``deleted``,
``requests``, ``uploads``, ``finish_times``, ``node_times``, ``received_times``,
``started_times`` (all times are ``time.monotonic()``).

Standalone (serves until Ctrl-C or SIGTERM)::

    python -m tests.fakes.comfyui --port 8188 --root /tmp/fake-comfy
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import hashlib
import heapq
import itertools
import json
import math
import mimetypes
import os
import random
import shutil
import socket
import struct
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"

DEFAULT_CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "flux1-schnell-fp8.safetensors"]
DEFAULT_UPSCALE_MODELS = ["RealESRGAN_x4plus.pth"]
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000
MAX_RESOLUTION = 16384
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked "
    "before you might have accidentally set the batch_size to a large number."
)
SERVER_FEATURE_FLAGS = {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"

_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_fixture(name: str) -> Any:
    """Parse a capture from tests/fixtures/comfyui (``.jsonl`` gives a list of messages)."""
    text = (FIXTURES_DIR / name).read_text()
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


# --- deterministic content of FakeBigOutput files -------------------------------------

_BLOCK = 1 << 20


@lru_cache(maxsize=8)
def _big_block(filename: str) -> bytes:
    seed = filename.encode()
    return b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(_BLOCK // 32)
    )


def big_output_chunks(filename: str, size: int, chunk_size: int = _BLOCK) -> Iterator[bytes]:
    """The bytes /view serves for a FakeBigOutput file named ``filename`` of ``size`` bytes."""
    block = _big_block(filename)
    if chunk_size != _BLOCK:
        raise ValueError("chunk_size must be 1 MiB")
    remaining = size
    while remaining > 0:
        n = min(remaining, len(block))
        yield block if n == len(block) else block[:n]
        remaining -= n


def big_output_sha256(filename: str, size: int) -> str:
    """SHA-256 hex digest of the FakeBigOutput file ``filename`` of ``size`` bytes."""
    digest = hashlib.sha256()
    for chunk in big_output_chunks(filename, size):
        digest.update(chunk)
    return digest.hexdigest()


# --- node definitions (the /object_info the fake serves) ------------------------------


def _v1(
    name: str,
    category: str,
    required: dict[str, Any],
    *,
    optional: dict[str, Any] | None = None,
    hidden: bool = False,
    output: list[Any] | None = None,
    output_name: list[str] | None = None,
    output_tooltips: list[str] | None = None,
    display_name: str | None = None,
    description: str = "",
    python_module: str = "nodes",
    output_node: bool = False,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {"required": required}
    if optional:
        inputs["optional"] = optional
    if hidden:
        inputs["hidden"] = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    outs = output or []
    info: dict[str, Any] = {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": outs,
        "output_is_list": [False] * len(outs),
        "output_name": output_name or list(outs),
        "name": name,
        "display_name": display_name or name,
        "description": description,
        "python_module": python_module,
        "category": category,
        "output_node": output_node,
    }
    if output_tooltips is not None:
        info["output_tooltips"] = output_tooltips
    return info


def _v3(
    name: str,
    category: str,
    required: dict[str, Any],
    output: list[str],
    *,
    display_name: str | None,
    python_module: str,
) -> dict[str, Any]:
    inputs = {"required": required}
    return {
        "input": inputs,
        "input_order": {"required": list(required)},
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": list(output),
        "output_tooltips": [None] * len(output),
        "name": name,
        "display_name": display_name,
        "description": "",
        "python_module": python_module,
        "category": category,
        "output_node": False,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }


def _extra_object_info() -> dict[str, dict[str, Any]]:
    res = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}
    scale = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
    fake = "custom_nodes.comfyui_fake_nodes"
    return {
        "ImageBlur": _v3(
            "ImageBlur",
            "image/postprocessing",
            {
                "image": ["IMAGE", {}],
                "blur_radius": ["INT", {"default": 1, "min": 1, "max": 31, "step": 1}],
                "sigma": ["FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}],
            },
            ["IMAGE"],
            display_name=None,
            python_module="comfy_extras.nodes_post_processing",
        ),
        "ImageScale": _v1(
            "ImageScale",
            "image/upscaling",
            {
                "image": ["IMAGE"],
                "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
                "width": ["INT", scale],
                "height": ["INT", dict(scale)],
                "crop": [["disabled", "center"]],
            },
            output=["IMAGE"],
            display_name="Upscale Image",
        ),
        "ImageInvert": _v1(
            "ImageInvert",
            "image",
            {"image": ["IMAGE"]},
            output=["IMAGE"],
            display_name="Invert Image",
        ),
        "SaveAnimatedWEBP": _v1(
            "SaveAnimatedWEBP",
            "image/animation",
            {
                "images": ["IMAGE"],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
                "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
                "lossless": ["BOOLEAN", {"default": True}],
                "quality": ["INT", {"default": 80, "min": 0, "max": 100}],
                "method": [["default", "fastest", "slowest"]],
            },
            hidden=True,
            python_module="comfy_extras.nodes_images",
            output_node=True,
        ),
        "SaveLatent": _v1(
            "SaveLatent",
            "_for_testing",
            {
                "samples": ["LATENT"],
                "filename_prefix": ["STRING", {"default": "latents/ComfyUI"}],
            },
            hidden=True,
            output_node=True,
        ),
        "EmptyLatentImage": _v1(
            "EmptyLatentImage",
            "latent",
            {
                "width": ["INT", {**res, "tooltip": "The width of the latent images in pixels."}],
                "height": ["INT", {**res, "tooltip": "The height of the latent images in pixels."}],
                "batch_size": [
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 4096,
                        "tooltip": "The number of latent images in the batch.",
                    },
                ],
            },
            output=["LATENT"],
            output_tooltips=["The empty latent image batch."],
            display_name="Empty Latent Image",
            description="Create a new batch of empty latent images to be denoised via sampling.",
        ),
        "VAEDecode": _v1(
            "VAEDecode",
            "latent",
            {
                "samples": ["LATENT", {"tooltip": "The latent to be decoded."}],
                "vae": ["VAE", {"tooltip": "The VAE model used for decoding the latent."}],
            },
            output=["IMAGE"],
            output_tooltips=["The decoded image."],
            display_name="VAE Decode",
            description="Decodes latent images back into pixel space images.",
        ),
        "UpscaleModelLoader": _v3(
            "UpscaleModelLoader",
            "loaders",
            {"model_name": ["COMBO", {"multiselect": False, "options": []}]},
            ["UPSCALE_MODEL"],
            display_name="Load Upscale Model",
            python_module="comfy_extras.nodes_upscale_model",
        ),
        "ImageUpscaleWithModel": _v3(
            "ImageUpscaleWithModel",
            "image/upscaling",
            {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]},
            ["IMAGE"],
            display_name="Upscale Image (using Model)",
            python_module="comfy_extras.nodes_upscale_model",
        ),
        "FakeBigOutput": _v1(
            "FakeBigOutput",
            "_fake_testing",
            {
                "size_bytes": ["INT", {"default": 1 << 20, "min": 0, "max": 1 << 42}],
                "filename_prefix": ["STRING", {"default": "ComfyUI_big"}],
            },
            optional={"after": ["*", {}]},
            hidden=True,
            description="Fake: one output file of size_bytes deterministic bytes (.bin).",
            python_module=fake,
            output_node=True,
        ),
        "FakeText": _v1(
            "FakeText",
            "_fake_testing",
            {"value": ["STRING", {"default": "", "multiline": True}]},
            optional={"after": ["*", {}]},
            description='Fake: ui output {"text": [value]}, no file.',
            python_module=fake,
            output_node=True,
        ),
        "FakeSleep": _v1(
            "FakeSleep",
            "_fake_testing",
            {"seconds": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 86400.0, "step": 0.01}]},
            optional={"value": ["*", {}]},
            output=["*"],
            output_name=["value"],
            description="Fake: passes value through after sleeping (interruptible).",
            python_module=fake,
        ),
    }


@lru_cache(maxsize=1)
def _static_object_info() -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = load_fixture("get_object_info_subset.json")
    info.update(_extra_object_info())
    return info


# Nodes whose work an interrupt cuts short (others finish the node first, like real nodes).
_INTERRUPTIBLE = ("FakeSleep", "FakeBigOutput")

# Inputs a node's VALIDATE_INPUTS takes (those skip the min/max/list checks).
_VALIDATE_FUNCTION_INPUTS = {"LoadImage": ["image"]}


# --- fake values flowing between nodes --------------------------------------------------


@dataclass
class _Image:
    batch: int
    width: int
    height: int
    color: int = 0

    def __str__(self) -> str:
        return f"tensor(<fake IMAGE batch={self.batch} {self.width}x{self.height}>)"


@dataclass
class _Latent:
    batch: int
    width: int
    height: int

    def __str__(self) -> str:
        return f"{{'samples': tensor(<fake LATENT batch={self.batch}>)}}"


@dataclass
class _Opaque:
    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"<fake {self.kind} {self.name}>"


# --- small file writers -----------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@lru_cache(maxsize=32)
def _png_idat(width: int, height: int, color: int) -> bytes:
    rgb = bytes(((color >> 16) & 255, (color >> 8) & 255, color & 255))
    row = b"\x00" + rgb * width
    return zlib.compress(row * height, 1)


def _png(width: int, height: int, color: int, text: dict[str, str]) -> bytes:
    # Real dimensions up to 512 per side; bigger images are written smaller (a fake).
    w, h = max(1, min(width, 512)), max(1, min(height, 512))
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    for key, value in text.items():
        out += _png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode())
    return out + _png_chunk(b"IDAT", _png_idat(w, h, color)) + _png_chunk(b"IEND", b"")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


# A valid 1x1 lossless WEBP.
_WEBP = bytes.fromhex("524946461a000000574542505650384c0d0000002f0000001007101111888888fe0700")


def _safetensors(metadata: dict[str, str], shape: list[int]) -> bytes:
    n = 4 * math.prod(shape)
    header = {
        "__metadata__": metadata,
        "latent_format_version_0": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
        "latent_tensor": {"dtype": "F32", "shape": shape, "data_offsets": [0, n]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(n)


# --- helpers ported from ComfyUI's semantics ---------------------------------------------


def _is_link(obj: Any) -> bool:
    return (
        isinstance(obj, list)
        and len(obj) == 2
        and isinstance(obj[0], str)
        and isinstance(obj[1], int | float)
    )


def _full_type_name(klass: type) -> str:
    if klass.__module__ == "builtins":
        return klass.__qualname__
    return f"{klass.__module__}.{klass.__qualname__}"


def _format_value(x: Any) -> Any:
    if x is None or isinstance(x, int | float | bool | str):
        return x
    return str(x)


def _validate_node_input(received_type: Any, input_type: Any) -> bool:
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    if "*" in (received_type, input_type):
        return True
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    return len(received & wanted) > 0


def _get_input_info(
    class_inputs: dict[str, Any], name: str
) -> tuple[Any, str | None, dict[str, Any]]:
    for category in ("required", "optional", "hidden"):
        section = class_inputs.get(category, {})
        if name in section:
            info = section[name]
            if isinstance(info, str):  # hidden inputs are plain names
                return info, category, {}
            extra = info[1] if len(info) > 1 else {}
            return info[0], category, extra
    return None, None, {}


def _compute_vars(text: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", str(now.tm_mon).zfill(2)),
        ("%day%", str(now.tm_mday).zfill(2)),
        ("%hour%", str(now.tm_hour).zfill(2)),
        ("%minute%", str(now.tm_min).zfill(2)),
        ("%second%", str(now.tm_sec).zfill(2)),
    ):
        text = text.replace(key, value)
    return text


class _Interrupted(Exception):
    """InterruptProcessingException."""


class _InjectedFailure(Exception):
    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


@dataclass(order=True)
class _QueueEntry:
    number: float
    prompt_id: str
    seq: int
    item: list[Any] = field(compare=False)


@dataclass
class _FailRule:
    method: str
    path: str
    count: int
    status: int


@dataclass
class _Run:
    """State of the prompt being executed (PromptExecutor + progress registry)."""

    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    client_id: str | None
    sigs: dict[str, str]
    per_node_s: float
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    ui_order: list[str] = field(default_factory=list)


class _ExecutionList:
    """ComfyUI's ExecutionList: topological dissolve, output nodes first."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_output: Callable[[str], bool],
        is_cached: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[Any, bool]]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, Any, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if _is_link(value) and not self.is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], value[1], unique_id))
        for from_id, socket_index, to_id in links:
            if not self.is_cached(from_id):
                self.add_node(from_id)
                if to_id not in self.blocking[from_id]:
                    self.blocking[from_id][to_id] = {}
                    self.block_count[to_id] += 1
                self.blocking[from_id][to_id][socket_index] = True

    def pick(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self.blocking[node_id]:
                if any(self.is_output(b) for b in self.blocking.get(blocked, {})):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]


# --- the server ------------------------------------------------------------------------


class FakeComfyUI:
    """A fake ComfyUI server: real HTTP/WebSocket, simulated execution."""

    def __init__(
        self,
        root: Path | str,
        *,
        checkpoints: list[str] | None = None,
        upscale_models: list[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.root = Path(root)
        self.output_dir = os.path.abspath(self.root / "output")
        self.temp_dir = os.path.abspath(self.root / "temp")
        self.input_dir = os.path.abspath(self.root / "input")
        for directory in (self.output_dir, self.temp_dir, self.input_dir):
            os.makedirs(directory, exist_ok=True)
        self.host = host
        self.port = port
        # --- controls ---
        self.checkpoints: list[str] = list(
            DEFAULT_CHECKPOINTS if checkpoints is None else checkpoints
        )
        self.upscale_models: list[str] = list(
            DEFAULT_UPSCALE_MODELS if upscale_models is None else upscale_models
        )
        self.execution_time_s = 0.0
        self.history_delay_s = 0.0
        self.websocket_enabled = True
        # --- introspection ---
        self.submitted: list[str] = []
        self.executed: list[str] = []
        self.cached_runs: list[str] = []
        self.interrupted: list[str] = []
        self.deleted: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.uploads: list[dict[str, str]] = []
        self.finish_times: dict[str, float] = {}
        self.received_times: dict[str, float] = {}  # POST /prompt accepted
        self.started_times: dict[str, float] = {}  # taken off the queue to execute
        self.node_times: dict[str, dict[str, tuple[float, float]]] = {}
        # --- faults ---
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[str, str]] = {}
        self._fail_rules: list[_FailRule] = []
        self._delays: list[tuple[str, str, float]] = []
        self._late_answers: list[tuple[str, str, float]] = []
        self._paused = False
        # --- runtime (owned by the loop thread) ---
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._virtual_files: dict[str, int] = {}
        self._reset_state()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (valid once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:PORT/ws."""
        return f"ws://{self.host}:{self.port}/ws"

    def start(self) -> FakeComfyUI:
        """Start the server thread; return once it is listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-comfyui", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._astop(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def restart(self) -> None:
        """Simulate a ComfyUI restart: forget queue, running prompt, history, cache, sockets."""
        self._call(self._arestart())

    def stop_http(self, *, forget: bool = True) -> None:
        """Stop listening (connections refused). forget=True also loses all state (a crash)."""
        self._call(self._astop_http(forget))

    def start_http(self) -> None:
        """Listen again on the same port after stop_http()."""
        self._call(self._astart_http())

    # ------------------------------------------------------------------ controls

    def fail_node(
        self,
        class_type: str,
        exception_type: str = "Exception",
        message: str = "Fake failure injected by the test",
    ) -> None:
        """Make every node of ``class_type`` raise at run time (execution_error)."""
        with self._lock:
            self._failures[class_type] = (exception_type, message)

    def clear_failures(self) -> None:
        """Undo fail_node()."""
        with self._lock:
            self._failures.clear()

    def fail_requests(self, method: str, path: str, count: int, status: int = 500) -> None:
        """Answer the next ``count`` requests matching method and path (fnmatch) with ``status``."""
        with self._lock:
            self._fail_rules.append(_FailRule(method.upper(), path, count, status))

    def delay_requests(
        self, method: str, path: str, seconds: float, *, after: bool = False
    ) -> None:
        """Delay every request matching method and path (fnmatch); seconds=0 removes the delay.

        With ``after=True`` the request is handled first (a prompt is queued) and only the
        answer is late: a client that times out has "lost the answer" to a done request.
        """
        with self._lock:
            if after:
                self._late_answers = [
                    d for d in self._late_answers if (d[0], d[1]) != (method.upper(), path)
                ]
                if seconds > 0:
                    self._late_answers.append((method.upper(), path, seconds))
                return
            self._delays = [d for d in self._delays if (d[0], d[1]) != (method.upper(), path)]
            if seconds > 0:
                self._delays.append((method.upper(), path, seconds))

    def clear_request_faults(self) -> None:
        """Undo fail_requests() and delay_requests()."""
        with self._lock:
            self._fail_rules.clear()
            self._delays.clear()
            self._late_answers.clear()

    def pause(self) -> None:
        """Hold the queue: prompts not yet started stay pending (the running one continues).

        A prompt whose POST just returned may not have started yet, so it is held too.
        """
        self._paused = True

    def resume(self) -> None:
        """Let the queue run again."""
        self._paused = False
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def drop_websockets(self, *, abrupt: bool = False) -> None:
        """Close every open WebSocket now (abrupt: drop TCP without a close frame)."""
        self._call(self._aclose_websockets(abrupt=abrupt))

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until nothing is running or pending (pending prompts of a paused queue count)."""
        deadline = time.monotonic() + timeout
        while self._queue or self._running:
            if time.monotonic() > deadline:
                raise TimeoutError("fake ComfyUI still busy")
            time.sleep(0.002)

    @property
    def queue_remaining(self) -> int:
        """Pending plus running prompts, as in status messages."""
        return len(self._queue) + len(self._running)

    @property
    def websocket_count(self) -> int:
        """Open WebSockets."""
        return len(self._all_ws)

    # ------------------------------------------------------------------ loop plumbing

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeComfyUI is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _reset_state(self) -> None:
        self._number = 0
        self._seq = itertools.count()
        self._task_counter = itertools.count()
        self._queue: list[_QueueEntry] = []
        self._running: dict[int, list[Any]] = {}
        self._history: dict[str, dict[str, Any]] = {}
        self._out_cache: dict[str, tuple[Any, ...]] = {}
        self._ui_cache: dict[str, dict[str, Any]] = {}
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._client_id: str | None = None
        self._last_node_id: str | None = None
        self._last_prompt_id: str | None = None
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._all_ws: dict[web.WebSocketResponse, web.Request] = {}

    async def _astart(self) -> None:
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._messages: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self._worker_task = asyncio.create_task(self._worker())
        self._publisher_task = asyncio.create_task(self._publisher())
        await self._astart_http()

    async def _astop(self) -> None:
        await self._astop_http(forget=False)
        for task in (self._worker_task, self._publisher_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=1 << 30)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self._ws_handler),
            ("GET", "/prompt", self._get_prompt),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("GET", "/history", self._get_history),
            ("POST", "/history", self._post_history),
            ("GET", "/history/{prompt_id}", self._get_history_prompt_id),
            ("GET", "/view", self._view),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/system_stats", self._system_stats),
            ("GET", "/features", self._features),
            ("GET", "/object_info", self._get_object_info),
            ("GET", "/object_info/{node_class}", self._get_object_info_node),
        ]
        for method, path, handler in routes:
            for prefix in ("/api", ""):  # ComfyUI serves every route with and without /api
                if method == "GET":  # routes.get also answers HEAD
                    app.router.add_get(prefix + path, handler)
                else:
                    app.router.add_route(method, prefix + path, handler)
        return app

    async def _astart_http(self) -> None:
        if self._runner is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def _astop_http(self, forget: bool) -> None:
        await self._aclose_websockets(abrupt=False)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if forget:
            await self._aforget()

    async def _arestart(self) -> None:
        await self._aclose_websockets(abrupt=False)
        await self._aforget()

    async def _aforget(self) -> None:
        self._worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker_task
        while not self._messages.empty():
            self._messages.get_nowait()
        sockets, all_ws = self._sockets, self._all_ws
        self._reset_state()
        self._sockets, self._all_ws = sockets, all_ws
        self._interrupt.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # main.py cleanup_temp()
        os.makedirs(self.temp_dir, exist_ok=True)
        self._worker_task = asyncio.create_task(self._worker())

    async def _aclose_websockets(self, *, abrupt: bool) -> None:
        for ws, request in list(self._all_ws.items()):
            if abrupt and request.transport is not None:
                request.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server restart")

    # ------------------------------------------------------------------ messaging

    def _send(self, event: str, data: Any, sid: str | None) -> None:
        """PromptServer.send_sync: ordered through one queue; sid None broadcasts."""
        self._messages.put_nowait((json.dumps({"type": event, "data": data}), sid))

    async def _publisher(self) -> None:
        while True:
            text, sid = await self._messages.get()
            if sid is None:
                targets = list(self._sockets.values())
            else:
                target = self._sockets.get(sid)
                targets = [target] if target is not None else []
            for ws in targets:
                with contextlib.suppress(Exception):
                    await ws.send_str(text)

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self._queue) + len(self._running)}}

    def _queue_updated(self) -> None:
        self._send("status", {"status": self._queue_info()}, None)

    # ------------------------------------------------------------------ middleware

    def _take_fault(self, method: str, path: str) -> tuple[float, _FailRule | None]:
        paths = {path, path[4:]} if path.startswith("/api/") else {path}

        def matches(rule_method: str, pattern: str) -> bool:
            return rule_method in ("*", method) and any(
                fnmatch.fnmatchcase(p, pattern) for p in paths
            )

        with self._lock:
            delay = max((s for m, p, s in self._delays if matches(m, p)), default=0.0)
            for rule in self._fail_rules:
                if rule.count > 0 and matches(rule.method, rule.path):
                    rule.count -= 1
                    return delay, _FailRule(rule.method, rule.path, 1, rule.status)
            self._fail_rules = [r for r in self._fail_rules if r.count > 0]
        return delay, None

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        delay, rule = self._take_fault(request.method, request.path)
        if delay > 0:
            await asyncio.sleep(delay)
        if rule is not None:
            status = HTTPStatus(rule.status)
            text = INTERNAL_ERROR_TEXT if rule.status == 500 else f"{status.value}: {status.phrase}"
            return web.Response(status=rule.status, text=text)
        response = await handler(request)
        with self._lock:
            late = max(
                (s for m, p, s in self._late_answers if (m, p) == (request.method, request.path)),
                default=0.0,
            )
        if late > 0:
            await asyncio.sleep(late)
        return response

    # ------------------------------------------------------------------ websocket

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if not self.websocket_enabled:
            return web.Response(status=403, text="403: Forbidden")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self._sockets.pop(sid, None)  # reusing a session: the old socket stops receiving
        else:
            sid = uuid.uuid4().hex
        self._sockets[sid] = ws
        self._all_ws[ws] = request
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self._queue_info(), "sid": sid}}
            )
            if self._client_id == sid and self._last_node_id is not None:
                await ws.send_json({"type": "executing", "data": {"node": self._last_node_id}})
            first_message = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError, AttributeError):
                    data = json.loads(msg.data)
                    if first_message and data.get("type") == "feature_flags":
                        await ws.send_json({"type": "feature_flags", "data": SERVER_FEATURE_FLAGS})
                first_message = False
        finally:
            # Like ComfyUI: pops by sid even if a newer socket reused it.
            self._sockets.pop(sid, None)
            self._all_ws.pop(ws, None)
        return ws

    # ------------------------------------------------------------------ simple routes

    async def _system_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(load_fixture("get_system_stats.json"))

    async def _features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(SERVER_FEATURE_FLAGS)

    def object_info(self) -> dict[str, dict[str, Any]]:
        """The /object_info this server currently answers (lists reflect checkpoints, input/)."""
        info = copy.deepcopy(_static_object_info())
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(self.checkpoints)
        info["LoadImage"]["input"]["required"]["image"][0] = self._input_images()
        info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = list(
            self.upscale_models
        )
        return info

    def _input_images(self) -> list[str]:
        files = [
            f for f in os.listdir(self.input_dir) if os.path.isfile(os.path.join(self.input_dir, f))
        ]
        images = []
        for name in files:
            mime, _ = mimetypes.guess_type(name, strict=False)
            if mime and mime.split("/")[0] == "image":
                images.append(name)
        return sorted(images)

    async def _get_object_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.object_info())

    async def _get_object_info_node(self, request: web.Request) -> web.StreamResponse:
        node_class = request.match_info["node_class"]
        info = self.object_info()
        return web.json_response({node_class: info[node_class]} if node_class in info else {})

    async def _get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._queue_info())

    async def _get_queue(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "queue_running": list(self._running.values()),
                "queue_pending": [entry.item for entry in self._queue],
            }
        )

    def _wipe_queue(self) -> None:
        self.deleted.extend(entry.prompt_id for entry in self._queue)
        self._queue = []
        self._queue_updated()

    async def _post_queue(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self._wipe_queue()
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                for index, entry in enumerate(self._queue):
                    if entry.item[1] == id_to_delete:
                        if len(self._queue) == 1:
                            self._wipe_queue()
                        else:
                            self.deleted.append(entry.prompt_id)
                            self._queue.pop(index)
                            heapq.heapify(self._queue)
                        self._queue_updated()
                        break
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.StreamResponse:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            if any(item[1] == prompt_id for item in self._running.values()):
                self._interrupt.set()
        else:
            self._interrupt.set()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.StreamResponse:
        raw_max = request.rel_url.query.get("max_items")
        max_items = int(raw_max) if raw_max is not None else None
        raw_offset = request.rel_url.query.get("offset")
        offset = int(raw_offset) if raw_offset is not None else -1
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        out: dict[str, Any] = {}
        for i, (key, entry) in enumerate(self._history.items()):
            if i >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return web.json_response(out)

    async def _post_history(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self._history = {}
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                self._history.pop(id_to_delete, None)
        return web.Response(status=200)

    async def _get_history_prompt_id(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        if prompt_id in self._history:
            return web.json_response({prompt_id: copy.deepcopy(self._history[prompt_id])})
        return web.json_response({})

    # ------------------------------------------------------------------ files

    def _dir_by_type(self, type_name: str) -> str | None:
        return {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}.get(
            type_name
        )

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        output_dir: str | None = None
        for annotation, directory in (
            ("[output]", self.output_dir),
            ("[input]", self.input_dir),
            ("[temp]", self.temp_dir),
        ):
            if filename.endswith(annotation):  # "name.png [output]"
                filename, output_dir = filename[: -len(annotation) - 1], directory
                break
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = self._dir_by_type(query.get("type", "output"))
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full_output_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_output_dir
        filename = os.path.basename(filename)
        file = os.path.join(output_dir, filename)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {
            "text/html",
            "text/html-sandboxed",
            "application/xhtml+xml",
            "text/javascript",
            "text/css",
        }:
            content_type = "application/octet-stream"
        headers = {"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
        if os.path.isfile(file):
            return web.FileResponse(file, headers=headers)
        size = self._virtual_files.get(os.path.abspath(file))
        if size is None:
            return web.Response(status=404)
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await response.prepare(request)
        if request.method != "HEAD":
            for chunk in big_output_chunks(filename, size):
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _upload_image(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type")
        upload_type = "input" if upload_type is None else str(upload_type)
        upload_dir = self._dir_by_type(upload_type)
        if upload_dir is None:  # ComfyUI fails with UnboundLocalError -> 500
            raise RuntimeError(f"cannot access local variable 'type_dir' ({upload_type!r})")
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        full_output_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(full_output_folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(full_output_folder, exist_ok=True)
        data = image.file.read()
        stem, ext = os.path.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as existing:
                    if hashlib.sha256(existing.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(full_output_folder, filename)
                i += 1
        if not duplicate:
            with open(filepath, "wb") as out:
                out.write(data)
        result = {"name": filename, "subfolder": subfolder, "type": upload_type}
        self.uploads.append(result)
        return web.json_response(result)

    def _save_path(
        self, filename_prefix: str, output_dir: str, width: int = 0, height: int = 0
    ) -> tuple[str, str, int, str]:
        """folder_paths.get_save_image_path -> (full_output_folder, filename, counter, subfolder)."""
        if "%" in filename_prefix:
            filename_prefix = _compute_vars(filename_prefix, width, height)
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        common = os.path.commonpath((output_dir, os.path.abspath(full_output_folder)))
        if common != output_dir:
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                + "\n full_output_folder: "
                + os.path.abspath(full_output_folder)
                + "\n         output_dir: "
                + output_dir
                + "\n         commonpath: "
                + common
            )
        prefix_len = len(os.path.basename(filename_prefix))

        def map_filename(name: str) -> tuple[int, str]:
            prefix = name[: prefix_len + 1]
            try:
                digits = int(name[prefix_len + 1 :].split("_")[0])
            except ValueError:
                digits = 0
            return digits, prefix

        try:
            names = set(os.listdir(full_output_folder))
        except FileNotFoundError:
            os.makedirs(full_output_folder, exist_ok=True)
            names = set()
        folder_abs = os.path.abspath(full_output_folder)
        names |= {
            os.path.basename(p) for p in self._virtual_files if os.path.dirname(p) == folder_abs
        }
        matching = [
            m
            for m in map(map_filename, names)
            if os.path.normcase(m[1][:-1]) == os.path.normcase(filename) and m[1][-1:] == "_"
        ]
        counter = max(matching)[0] + 1 if matching else 1
        return full_output_folder, filename, counter, subfolder

    # ------------------------------------------------------------------ /prompt + validation

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()  # empty or invalid body -> 500, like ComfyUI
        if "number" in json_data:
            number: float = float(json_data["number"])
        else:
            number = self._number
            if json_data.get("front"):
                number = -number
            self._number += 1
        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = json_data.get("partial_execution_targets")
        valid, error_info, outputs, node_errors = self._validate_prompt(prompt, partial)
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            return web.json_response({"error": error_info, "node_errors": node_errors}, status=400)
        self.submitted.append(prompt_id)
        self.received_times[prompt_id] = time.monotonic()
        entry = _QueueEntry(
            number, prompt_id, next(self._seq), [number, prompt_id, prompt, extra_data, outputs]
        )
        heapq.heappush(self._queue, entry)
        self._queue_updated()
        self._wake.set()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    def _validate_prompt(
        self, prompt: Any, partial: list[str] | None
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        info = self.object_info()
        outputs: list[str] = []
        for x in prompt:  # a non-dict prompt raises here or below -> 500, like ComfyUI
            if "class_type" not in prompt[x]:
                return (
                    False,
                    {
                        "type": "invalid_prompt",
                        "message": "Cannot execute because a node is missing the class_type property.",
                        "details": f"Node ID '#{x}'",
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            class_type = prompt[x]["class_type"]
            node_def = info.get(class_type)
            if node_def is None:
                return (
                    False,
                    {
                        "type": "invalid_prompt",
                        "message": f"Cannot execute because node {class_type} does not exist.",
                        "details": f"Node ID '#{x}'",
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            if node_def["output_node"] and (partial is None or x in partial):
                outputs.append(x)
        if not outputs:
            error = {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            }
            return False, error, [], {}

        good_outputs: list[str] = []
        failed: list[tuple[str, list[dict[str, Any]]]] = []
        node_errors: dict[str, Any] = {}
        validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self._validate_inputs(prompt, o, validated, info)
            except Exception as ex:
                valid = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {
                            "exception_type": _full_type_name(type(ex)),
                            "traceback": traceback.format_tb(ex.__traceback__),
                        },
                    }
                ]
                validated[o] = (False, reasons, o)
            if valid:
                good_outputs.append(o)
                continue
            failed.append((o, reasons))
            for node_id, (node_valid, node_reasons, _) in validated.items():
                if not node_valid and node_reasons:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": node_reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(o)
        if not good_outputs:
            details = "\n".join(
                f"{error['message']}: {error['details']}"
                for _, errors in failed
                for error in errors
            )
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            }
            return False, error, [], node_errors
        return True, None, good_outputs, node_errors

    def _validate_inputs(
        self,
        prompt: dict[str, Any],
        unique_id: str,
        validated: dict[str, tuple[bool, list[dict[str, Any]], str]],
        info: dict[str, dict[str, Any]],
    ) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in validated:
            return validated[unique_id]
        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        class_inputs = info[class_type]["input"]
        valid_inputs = list(class_inputs.get("required", {})) + list(
            class_inputs.get("optional", {})
        )
        validate_function_inputs = _VALIDATE_FUNCTION_INPUTS.get(class_type, [])
        errors: list[dict[str, Any]] = []
        valid = True

        for x in valid_inputs:
            input_type, input_category, extra_info = _get_input_info(class_inputs, x)
            input_config = [input_type, extra_info]
            if x not in inputs:
                if input_category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{x}",
                            "extra_info": {"input_name": x},
                        }
                    )
                continue
            val = inputs[x]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{x}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": input_config,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]  # KeyError for a missing node
                received_type = info[o_class_type]["output"][val[1]]
                if not _validate_node_input(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                            "extra_info": {
                                "input_name": x,
                                "input_config": input_config,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    inner = self._validate_inputs(prompt, o_id, validated, info)
                    if inner[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": x,
                                    "input_config": input_config,
                                    "exception_message": str(ex),
                                    "exception_type": _full_type_name(type(ex)),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    converter: Callable[[Any], Any] | None = (
                        {
                            "INT": int,
                            "FLOAT": float,
                            "STRING": str,
                            "BOOLEAN": bool,
                        }.get(input_type)
                        if isinstance(input_type, str)
                        else None
                    )
                    if converter is not None:
                        val = converter(val)
                        inputs[x] = val
                except Exception as ex:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{x}, {val}, {ex}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": input_config,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue
                if x in validate_function_inputs:
                    continue
                if "min" in extra_info and val < extra_info["min"]:
                    errors.append(
                        {
                            "type": "value_smaller_than_min",
                            "message": "Value {} smaller than min of {}".format(
                                val, extra_info["min"]
                            ),
                            "details": f"{x}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": input_config,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                if "max" in extra_info and val > extra_info["max"]:
                    errors.append(
                        {
                            "type": "value_bigger_than_max",
                            "message": "Value {} bigger than max of {}".format(
                                val, extra_info["max"]
                            ),
                            "details": f"{x}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": input_config,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                if isinstance(input_type, list) and val not in input_type:
                    if len(input_type) > 20:
                        list_info = f"(list of length {len(input_type)})"
                        config: Any = None
                    else:
                        list_info = str(input_type)
                        config = input_config
                    errors.append(
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": config,
                                "received_value": val,
                            },
                        }
                    )
                    continue

        if class_type == "LoadImage" and isinstance(inputs.get("image"), str):
            image = inputs["image"]
            if not os.path.exists(self._annotated_path(image)):
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"image - Invalid image file: {image}",
                        "extra_info": {"input_name": "image"},
                    }
                )

        result = (not errors and valid, errors, unique_id)
        validated[unique_id] = result
        return result

    def _annotated_path(self, name: str) -> str:
        for suffix, directory in (
            ("[output]", self.output_dir),
            ("[input]", self.input_dir),
            ("[temp]", self.temp_dir),
        ):
            if name.endswith(suffix):
                return os.path.join(directory, name[: -len(suffix) - 1])
        return os.path.join(self.input_dir, name)

    # ------------------------------------------------------------------ execution

    async def _worker(self) -> None:
        """main.prompt_worker: one prompt at a time, in queue order."""
        while True:
            while self._paused or not self._queue:
                self._wake.clear()
                await self._wake.wait()
            entry = heapq.heappop(self._queue)
            self.started_times[entry.prompt_id] = time.monotonic()
            task_id = next(self._task_counter)
            self._running[task_id] = copy.deepcopy(entry.item)
            self._queue_updated()
            self._last_prompt_id = entry.prompt_id
            try:
                history_result, status = await self._execute(entry.item)
            except Exception:  # a bug in the fake: record it rather than kill the worker
                traceback.print_exc()
                history_result = {"outputs": {}, "meta": {}}
                status = {"status_str": "error", "completed": False, "messages": []}
            if self.history_delay_s > 0:
                await asyncio.sleep(self.history_delay_s)
            self._task_done(task_id, history_result, status)
            if self._client_id is not None:
                self._send(
                    "executing", {"node": None, "prompt_id": entry.prompt_id}, self._client_id
                )

    def _task_done(
        self, task_id: int, history_result: dict[str, Any], status: dict[str, Any]
    ) -> None:
        item = self._running.pop(task_id)
        if len(self._history) > MAXIMUM_HISTORY_SIZE:
            self._history.pop(next(iter(self._history)))
        if isinstance(item[3], dict):
            for key in SENSITIVE_EXTRA_DATA_KEYS:
                item[3].pop(key, None)
        self._history[item[1]] = {"prompt": item, "outputs": {}, "status": status, **history_result}
        self._queue_updated()

    def _add_message(self, run: _Run, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self._send(event, data, run.client_id)

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        """CacheKeySetInputSignature: content of the node and its ancestry, ids excluded."""

        def ancestry(node_id: str, ancestors: list[str], order: dict[str, int]) -> None:
            if node_id not in prompt:
                return
            inputs = prompt[node_id].get("inputs", {})
            for key in sorted(inputs):
                if _is_link(inputs[key]) and inputs[key][0] not in order:
                    ancestor = inputs[key][0]
                    ancestors.append(ancestor)
                    order[ancestor] = len(ancestors) - 1
                    ancestry(ancestor, ancestors, order)

        def immediate(node_id: str, order: dict[str, int]) -> list[Any]:
            if node_id not in prompt:
                return [uuid.uuid4().hex]  # never cached
            node = prompt[node_id]
            signature: list[Any] = [node["class_type"], self._is_changed(node)]
            inputs = node.get("inputs", {})
            for key in sorted(inputs):
                value = inputs[key]
                if _is_link(value):
                    signature.append([key, ["ANCESTOR", order[value[0]], value[1]]])
                else:
                    signature.append([key, value])
            return signature

        sigs = {}
        for node_id in prompt:
            ancestors: list[str] = []
            order: dict[str, int] = {}
            ancestry(node_id, ancestors, order)
            parts = [immediate(node_id, order)] + [immediate(a, order) for a in ancestors]
            sigs[node_id] = json.dumps(parts, sort_keys=True, default=repr)
        return sigs

    def _is_changed(self, node: dict[str, Any]) -> Any:
        if node["class_type"] == "LoadImage" and isinstance(
            node.get("inputs", {}).get("image"), str
        ):
            path = self._annotated_path(node["inputs"]["image"])
            with contextlib.suppress(OSError), open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        return None

    def _send_progress_state(self, run: _Run) -> None:
        nodes = {
            node_id: {
                "value": state["value"],
                "max": state["max"],
                "state": state["state"],
                "node_id": node_id,
                "prompt_id": run.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, state in run.progress.items()
            if state["state"] != "pending"
        }
        self._send("progress_state", {"prompt_id": run.prompt_id, "nodes": nodes}, run.client_id)

    def _progress(self, run: _Run, node_id: str, state: str, value: float, maximum: float) -> None:
        run.progress[node_id] = {"state": state, "value": value, "max": maximum}
        self._send_progress_state(run)

    def _finish_progress(self, run: _Run, node_id: str) -> None:
        entry = run.progress.get(node_id, {"max": 1.0})
        self._progress(run, node_id, "finished", entry["max"], entry["max"])

    async def _execute(self, item: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """PromptExecutor.execute_async."""
        _number, prompt_id, prompt, extra_data, execute_outputs = item
        if not isinstance(extra_data, dict):
            extra_data = {}
        self._interrupt.clear()
        client_id = extra_data.get("client_id")
        self._client_id = None if client_id is None else str(client_id)
        sigs = self._signatures(prompt)
        keep = set(sigs.values())
        self._out_cache = {k: v for k, v in self._out_cache.items() if k in keep}
        self._ui_cache = {k: v for k, v in self._ui_cache.items() if k in keep}
        object_keys = {(n, prompt[n]["class_type"]) for n in prompt}
        self._objects = {k: v for k, v in self._objects.items() if k in object_keys}
        info = _static_object_info()

        def is_cached(node_id: str) -> bool:
            return node_id in sigs and sigs[node_id] in self._out_cache

        def is_output(node_id: str) -> bool:
            return bool(info[prompt[node_id]["class_type"]]["output_node"])

        elist = _ExecutionList(prompt, is_output, is_cached)
        for node_id in execute_outputs:
            elist.add_node(node_id)
        to_run = [n for n in elist.pending if not is_cached(n)]
        run = _Run(
            prompt_id=prompt_id,
            prompt=prompt,
            extra_data=extra_data,
            client_id=self._client_id,
            sigs=sigs,
            per_node_s=self.execution_time_s / len(to_run) if to_run else 0.0,
        )
        self._add_message(run, "execution_start", {"prompt_id": prompt_id}, broadcast=False)
        cached_nodes = [n for n in prompt if is_cached(n)]
        self._add_message(
            run,
            "execution_cached",
            {"nodes": cached_nodes, "prompt_id": prompt_id},
            broadcast=False,
        )
        (self.executed if to_run else self.cached_runs).append(prompt_id)
        self.node_times.setdefault(prompt_id, {})

        success = True
        while elist.pending:
            node_id = elist.pick()
            if node_id is None:
                success = False
                self.finish_times[prompt_id] = time.monotonic()
                blamed = next(iter(elist.pending))
                self._add_message(
                    run,
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": blamed,
                        "node_type": prompt[blamed]["class_type"],
                        "executed": list(run.executed),
                        "exception_message": "Dependency cycle detected",
                        "exception_type": "graph.DependencyCycleError",
                        "traceback": [],
                        "current_inputs": [],
                        "current_outputs": list(prompt),
                    },
                    broadcast=False,
                )
                break
            error = await self._execute_node(run, node_id, is_cached(node_id))
            if error is not None:
                success = False
                self.finish_times[prompt_id] = time.monotonic()
                self._handle_execution_error(run, node_id, error)
                break
            elist.complete(node_id)
        else:
            self.finish_times[prompt_id] = time.monotonic()
            self._add_message(run, "execution_success", {"prompt_id": prompt_id}, broadcast=False)

        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in run.ui_order + [n for n in prompt if n not in run.ui_order]:
            ui = self._ui_cache.get(sigs[node_id])
            if ui is not None:
                outputs[node_id] = ui["output"]
                meta[node_id] = ui["meta"]
        self._last_node_id = None
        status = {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": run.messages,
        }
        return {"outputs": outputs, "meta": meta}, status

    def _handle_execution_error(
        self, run: _Run, node_id: str, error: dict[str, Any] | None
    ) -> None:
        class_type = run.prompt[node_id]["class_type"]
        if error is None or error.get("interrupted"):
            self.interrupted.append(run.prompt_id)
            message = {
                "prompt_id": run.prompt_id,
                "node_id": node_id,
                "node_type": class_type,
                "executed": list(run.executed),
            }
            self._add_message(run, "execution_interrupted", message, broadcast=True)
            return
        message = {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": class_type,
            "executed": list(run.executed),
            "exception_message": error["exception_message"],
            "exception_type": error["exception_type"],
            "traceback": error["traceback"],
            "current_inputs": error["current_inputs"],
            "current_outputs": list(run.prompt),
        }
        self._add_message(run, "execution_error", message, broadcast=False)

    async def _execute_node(self, run: _Run, node_id: str, cached: bool) -> dict[str, Any] | None:
        """execution.execute for one node; returns error details, or None on success."""
        node = run.prompt[node_id]
        class_type = node["class_type"]
        sig = run.sigs[node_id]
        if cached:
            if run.client_id is not None:
                cached_ui = self._ui_cache.get(sig) or {}
                self._send(
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": cached_ui.get("output"),
                        "prompt_id": run.prompt_id,
                    },
                    run.client_id,
                )
            if sig in self._ui_cache:
                run.ui_order.append(node_id)
            self._finish_progress(run, node_id)
            return None

        self._progress(run, node_id, "running", 0.0, 1.0)
        class_inputs = _static_object_info()[class_type]["input"]
        values: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            _, category, _ = _get_input_info(class_inputs, name)
            if _is_link(value):
                source = self._out_cache.get(run.sigs.get(value[0], ""))
                index = int(value[1])
                values[name] = source[index] if source is not None and index < len(source) else None
            elif category is not None:
                values[name] = value
        for hidden_name in class_inputs.get("hidden", {}):
            values[hidden_name] = (
                run.prompt if hidden_name == "prompt" else run.extra_data.get("extra_pnginfo")
            )
        if run.client_id is not None:
            self._last_node_id = node_id
            self._send(
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id},
                run.client_id,
            )
        started = time.monotonic()
        try:
            if self._interrupt.is_set():
                raise _Interrupted
            if class_type != "KSampler":  # KSampler spreads its time over its steps
                await self._work(run.per_node_s, interruptible=class_type in _INTERRUPTIBLE)
            with self._lock:
                failure = self._failures.get(class_type)
            if failure is not None:
                raise _InjectedFailure(*failure)
            outputs, ui = await self._run_node(run, node_id, class_type, values)
            if ui:
                self._ui_cache[sig] = {
                    "meta": {
                        "node_id": node_id,
                        "display_node": node_id,
                        "parent_node": None,
                        "real_node_id": node_id,
                    },
                    "output": ui,
                }
                run.ui_order.append(node_id)
                if run.client_id is not None:
                    self._send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": ui,
                            "prompt_id": run.prompt_id,
                        },
                        run.client_id,
                    )
            self._out_cache[sig] = outputs
        except _Interrupted:
            return {"interrupted": True}
        except Exception as ex:
            exception_type = (
                ex.exception_type if isinstance(ex, _InjectedFailure) else _full_type_name(type(ex))
            )
            tips = OOM_TIPS if exception_type == "torch.OutOfMemoryError" else ""
            return {
                "exception_message": f"{ex}\n{tips}",
                "exception_type": exception_type,
                "traceback": traceback.format_tb(ex.__traceback__),
                "current_inputs": {name: [_format_value(v)] for name, v in values.items()},
            }
        finally:
            self.node_times[run.prompt_id][node_id] = (started, time.monotonic())
        self._finish_progress(run, node_id)
        run.executed.append(node_id)
        return None

    async def _work(self, seconds: float, *, interruptible: bool) -> None:
        if not interruptible:
            if seconds > 0:
                await asyncio.sleep(seconds)
            return
        if self._interrupt.is_set():
            raise _Interrupted
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._interrupt.wait(), seconds)
        except TimeoutError:
            return
        raise _Interrupted

    async def _run_node(
        self, run: _Run, node_id: str, class_type: str, v: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        """What each node does, in fake form: (outputs, ui)."""
        if class_type == "KSampler":
            steps = max(1, int(v.get("steps", 1)))
            reported = (
                range(1, steps + 1)
                if steps <= 100
                else sorted({round(k * steps / 100) for k in range(1, 101)})
            )
            for step in reported:
                await self._work(run.per_node_s / len(reported), interruptible=False)
                if self._interrupt.is_set():
                    raise _Interrupted
                self._progress(run, node_id, "running", step, steps)
                self._send(
                    "progress",
                    {"value": step, "max": steps, "prompt_id": run.prompt_id, "node": node_id},
                    run.client_id,
                )
            latent = v.get("latent_image")
            return (latent if latent is not None else _Latent(1, 512, 512),), None
        if class_type == "FakeSleep":
            await self._work(float(v.get("seconds", 0.0)), interruptible=True)
            return (v.get("value"),), None
        if class_type == "EmptyImage":
            return (
                _Image(int(v["batch_size"]), int(v["width"]), int(v["height"]), int(v["color"])),
            ), None
        if class_type == "LoadImage":
            path = self._annotated_path(v["image"])
            with open(path, "rb") as f:
                size = _png_size(f.read(64)) or (512, 512)
            return (_Image(1, size[0], size[1], 0x808080), _Opaque("MASK")), None
        if class_type in ("ImageBlur", "ImageInvert"):
            return (v.get("image"),), None
        if class_type == "ImageScale":
            image = v.get("image")
            if isinstance(image, _Image):
                width, height = int(v["width"]), int(v["height"])
                if width == 0 and height != 0:
                    width = max(1, round(image.width * height / image.height))
                elif height == 0 and width != 0:
                    height = max(1, round(image.height * width / image.width))
                if width and height:
                    image = _Image(image.batch, width, height, image.color)
            return (image,), None
        if class_type == "CheckpointLoaderSimple":
            name = v["ckpt_name"]
            if name not in self.checkpoints:
                raise FileNotFoundError(
                    f"Model in folder 'checkpoints' with filename '{name}' not found."
                )
            return (_Opaque("MODEL", name), _Opaque("CLIP", name), _Opaque("VAE", name)), None
        if class_type == "UpscaleModelLoader":
            name = v["model_name"]
            if name not in self.upscale_models:
                raise FileNotFoundError(
                    f"Model in folder 'upscale_models' with filename '{name}' not found."
                )
            return (_Opaque("UPSCALE_MODEL", name),), None
        if class_type == "ImageUpscaleWithModel":
            image, model = v.get("image"), v.get("upscale_model")
            factor = 4 if isinstance(model, _Opaque) and "4" in model.name else 2
            if isinstance(image, _Image):
                image = _Image(
                    image.batch, image.width * factor, image.height * factor, image.color
                )
            return (image,), None
        if class_type == "CLIPTextEncode":
            return (_Opaque("CONDITIONING", str(v.get("text", ""))[:40]),), None
        if class_type == "EmptyLatentImage":
            return (_Latent(int(v["batch_size"]), int(v["width"]), int(v["height"])),), None
        if class_type == "VAEDecode":
            latent = v.get("samples")
            if isinstance(latent, _Latent):
                return (_Image(latent.batch, latent.width, latent.height, 0x7F7F7F),), None
            return (_Image(1, 512, 512, 0x7F7F7F),), None
        if class_type in ("SaveImage", "PreviewImage"):
            return (), {"images": self._save_images(run, node_id, class_type, v)}
        if class_type == "SaveAnimatedWEBP":
            return (), self._save_webp(v)
        if class_type == "SaveLatent":
            return (), {"latents": self._save_latent(run, v)}
        if class_type == "FakeText":
            return (), {"text": [str(v.get("value", ""))]}
        if class_type == "FakeBigOutput":
            return (), {"images": [self._save_big(v)]}
        # Anything else: pass the first linked input through.
        first = next((value for value in v.values() if value is not None), None)
        return (first,), None

    def _image_arg(self, value: Any) -> _Image:
        return value if isinstance(value, _Image) else _Image(1, 64, 64, 0)

    def _save_images(
        self, run: _Run, node_id: str, class_type: str, v: dict[str, Any]
    ) -> list[dict[str, str]]:
        images = self._image_arg(v.get("images"))
        if class_type == "PreviewImage":
            obj = self._objects.setdefault((node_id, class_type), {})
            suffix = obj.setdefault(
                "suffix", "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
            )
            prefix, base_dir, kind = f"ComfyUI_temp_{suffix}", self.temp_dir, "temp"
        else:
            prefix, base_dir, kind = (
                str(v.get("filename_prefix", "ComfyUI")),
                self.output_dir,
                "output",
            )
        folder, filename, counter, subfolder = self._save_path(
            prefix, base_dir, images.width, images.height
        )
        text = {"prompt": json.dumps(run.prompt)}
        extra = v.get("extra_pnginfo")
        if isinstance(extra, dict):
            text.update({key: json.dumps(value) for key, value in extra.items()})
        results = []
        for batch_number in range(images.batch):
            file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            with open(os.path.join(folder, file), "wb") as out:
                out.write(_png(images.width, images.height, images.color, text))
            results.append({"filename": file, "subfolder": subfolder, "type": kind})
            counter += 1
        return results

    def _save_webp(self, v: dict[str, Any]) -> dict[str, Any]:
        images = self._image_arg(v.get("images"))
        prefix = str(v.get("filename_prefix", "ComfyUI"))
        folder, filename, counter, subfolder = self._save_path(
            prefix, self.output_dir, images.width, images.height
        )
        file = f"{filename}_{counter:05}_.webp"
        with open(os.path.join(folder, file), "wb") as out:
            out.write(_WEBP)
        return {
            "images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
            "animated": [images.batch != 1],
        }

    def _save_latent(self, run: _Run, v: dict[str, Any]) -> list[dict[str, str]]:
        latent = v.get("samples")
        if not isinstance(latent, _Latent):
            latent = _Latent(1, 512, 512)
        prefix = str(v.get("filename_prefix", "ComfyUI"))
        folder, filename, counter, subfolder = self._save_path(prefix, self.output_dir)
        file = f"{filename}_{counter:05}_.latent"
        shape = [
            latent.batch,
            4,
            max(1, min(latent.height, 512) // 8),
            max(1, min(latent.width, 512) // 8),
        ]
        with open(os.path.join(folder, file), "wb") as out:
            out.write(_safetensors({"prompt": json.dumps(run.prompt)}, shape))
        return [{"filename": file, "subfolder": subfolder, "type": "output"}]

    def _save_big(self, v: dict[str, Any]) -> dict[str, str]:
        prefix = str(v.get("filename_prefix", "ComfyUI_big"))
        folder, filename, counter, subfolder = self._save_path(prefix, self.output_dir)
        file = f"{filename}_{counter:05}_.bin"
        self._virtual_files[os.path.abspath(os.path.join(folder, file))] = int(
            v.get("size_bytes", 0)
        )
        return {"filename": file, "subfolder": subfolder, "type": "output"}


# --- standalone ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve the fake until Ctrl-C or SIGTERM (e.g. for ``--comfyui-url`` trials)."""
    import argparse
    import signal
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.comfyui", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8188, help="0 picks a free port")
    parser.add_argument("--root", type=Path, help="directory for output/, temp/, input/")
    parser.add_argument("--execution-time", type=float, default=0.0, help="seconds per prompt")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        root = args.root or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fake = stack.enter_context(FakeComfyUI(root, host=args.host, port=args.port))
        fake.execution_time_s = args.execution_time
        print(f"fake ComfyUI listening on {fake.base_url} (files under {root})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    print("fake ComfyUI stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
