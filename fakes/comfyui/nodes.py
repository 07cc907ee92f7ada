"""The node catalogue: what /object_info lists, and what each node does when it runs.

The seven captured nodes (``get_object_info_subset.json``) are listed exactly as captured.
Nodes do no real work: values are small descriptions (``Fake``) that Save nodes turn into
tiny files. Fake-only nodes for tests: ``FakeSleep`` (interruptible time), ``FakeText`` (a
text output) and ``FakeBigOutput`` (a big file that /view generates while streaming).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fakes.comfyui.host import Host
from fakes.comfyui.samples import load_fixture


class Simulation(Protocol):
    """The run a node behaves in (``simulate.Simulation``): its graph, server and clock."""

    graph: dict[str, Any]
    node_seconds: float

    @property
    def server(self) -> Host:
        """The fake server the run belongs to."""

    async def work(self, seconds: float, *, interruptible: bool) -> None:
        """Take this long (cut short by an interrupt if ``interruptible``)."""

    def step(self, value: int, total: int) -> None:
        """Announce sampling progress."""


DEFAULT_CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "flux1-schnell-fp8.safetensors"]
DEFAULT_UPSCALE_MODELS = ["RealESRGAN_x4plus.pth"]
MAX_SIDE = 16384
WEBP = bytes.fromhex("524946461a000000574542505650384c0d0000002f0000001007101111888888fe0700")


@dataclass
class Fake:
    """A value flowing between nodes: IMAGE and LATENT batches keep a size, models a name."""

    kind: str
    batch: int = 1
    width: int = 512
    height: int = 512
    color: int = 0
    name: str = ""


Result = tuple[tuple[Any, ...], dict[str, Any] | None]  # (output values, ui output or None)
Behaviour = Callable[["Simulation", dict[str, Any]], Awaitable[Result]]  # (run, input values)


@dataclass
class Node:
    """One node type: its /object_info entry and its behaviour."""

    info: dict[str, Any]
    behaviour: Behaviour
    interruptible: bool = False  # an interrupt cuts its work short (others finish first)
    own_pace: bool = False  # spends its share of time itself (KSampler, over its steps)


# --- /object_info entries of the nodes not in the capture ---------------------------------


def _entry(
    category: str, outputs: list[str], *, saves: bool = False, optional: Any = None, **required: Any
) -> dict[str, Any]:
    """An /object_info entry; ``saves``: an output node that also gets the hidden inputs."""
    inputs = {"required": required} | ({"optional": optional} if optional else {})
    inputs |= {"hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}} if saves else {}
    return {
        "input": inputs,
        "input_order": {section: list(specs) for section, specs in inputs.items()},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "description": "",
        "python_module": "nodes",
        "category": category,
        "output_node": saves,
    }


def _int(default: int, low: int, high: int, step: int | None = None) -> list[Any]:
    return ["INT", {"default": default, "min": low, "max": high} | ({"step": step} if step else {})]


def _float(default: float, low: float, high: float, step: float) -> list[Any]:
    return ["FLOAT", {"default": default, "min": low, "max": high, "step": step}]


def _text(default: str) -> list[Any]:
    return ["STRING", {"default": default}]


def _infos() -> dict[str, dict[str, Any]]:
    image, latent, vae, big = ["IMAGE"], ["LATENT"], ["VAE"], 1 << 42
    side, sd_side, sd3_side = (
        _int(512, 0, MAX_SIDE, 1),
        _int(512, 16, MAX_SIDE, 8),
        _int(1024, 16, MAX_SIDE, 16),
    )
    methods = [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]]
    infos = {
        "ImageBlur": _entry(
            "image/postprocessing",
            image,
            image=image,
            blur_radius=_int(1, 1, 31, 1),
            sigma=_float(1.0, 0.1, 10.0, 0.1),
        ),
        "ImageScale": _entry(
            "image/upscaling",
            image,
            image=image,
            upscale_method=methods,
            width=side,
            height=side,
            crop=[["disabled", "center"]],
        ),
        "SaveAnimatedWEBP": _entry(
            "image/animation",
            [],
            saves=True,
            images=image,
            filename_prefix=_text("ComfyUI"),
            fps=_float(6.0, 0.01, 1000.0, 0.01),
            lossless=["BOOLEAN", {"default": True}],
            quality=_int(80, 0, 100),
            method=[["default", "fastest", "slowest"]],
        ),
        "SaveLatent": _entry(
            "_for_testing", [], saves=True, samples=latent, filename_prefix=_text("latents/ComfyUI")
        ),
        "EmptyLatentImage": _entry(
            "latent", latent, width=sd_side, height=sd_side, batch_size=_int(1, 1, 4096)
        ),
        "EmptySD3LatentImage": _entry(
            "latent/sd3", latent, width=sd3_side, height=sd3_side, batch_size=_int(1, 1, 4096)
        ),
        "VAEDecode": _entry("latent", image, samples=latent, vae=vae),
        "VAEEncode": _entry("latent", latent, pixels=image, vae=vae),
        "UpscaleModelLoader": _entry(
            "loaders", ["UPSCALE_MODEL"], model_name=["COMBO", {"options": []}]
        ),
        "ImageUpscaleWithModel": _entry(
            "image/upscaling", image, upscale_model=["UPSCALE_MODEL"], image=image
        ),
        "FakeBigOutput": _entry(
            "_fake_testing",
            [],
            saves=True,
            optional={"after": ["*"]},
            size_bytes=_int(1 << 20, 0, big),
            filename_prefix=_text("ComfyUI_big"),
        ),
        "FakeText": _entry(
            "_fake_testing", [], saves=True, optional={"after": ["*"]}, value=_text("")
        ),
        "FakeSleep": _entry(
            "_fake_testing",
            ["*"],
            optional={"value": ["*"]},
            seconds=_float(1.0, 0.0, 86400.0, 0.01),
        ),
    }
    infos["FakeBigOutput"]["description"] = "Fake: one file of size_bytes given bytes (.bin)."
    infos["FakeText"]["description"] = 'Fake: ui output {"text": [value]}, no file.'
    infos["FakeSleep"]["description"] = "Fake: passes value through after sleeping (interruptible)."
    for name, info in infos.items():
        info |= {"name": name, "display_name": name}
        info["python_module"] = "custom_nodes.fake_nodes" if name.startswith("Fake") else "nodes"
    captured: dict[str, dict[str, Any]] = load_fixture("get_object_info_subset.json")
    return captured | infos


# --- behaviours -------------------------------------------------------------------------


def _value(value: Any, kind: str) -> Fake:
    return value if isinstance(value, Fake) else Fake(kind)


def _make(kind: str) -> Behaviour:
    async def make(ctx: Simulation, v: dict[str, Any]) -> Result:
        size = int(v["batch_size"]), int(v["width"]), int(v["height"]), int(v.get("color", 0))
        return (Fake(kind, *size),), None

    return make


def _as(kind: str, source: str, **changes: Any) -> Behaviour:
    """The input ``source`` turned into ``kind`` (VAE decode and encode, blur, ...)."""

    async def convert(ctx: Simulation, v: dict[str, Any]) -> Result:
        return (dataclasses.replace(_value(v.get(source), kind), kind=kind, **changes),), None

    return convert


def _loader(folder: str, input_name: str, kinds: tuple[str, ...]) -> Behaviour:
    async def load(ctx: Simulation, v: dict[str, Any]) -> Result:
        name = str(v[input_name])
        if name not in ctx.server.installed(folder):
            raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
        return tuple(Fake(kind, name=name) for kind in kinds), None

    return load


async def _load_image(ctx: Simulation, v: dict[str, Any]) -> Result:
    width, height = ctx.server.files.image_size(str(v["image"]))
    return (Fake("IMAGE", 1, width, height, 0x808080), Fake("MASK")), None


async def _scale(ctx: Simulation, v: dict[str, Any]) -> Result:
    image, width, height = _value(v.get("image"), "IMAGE"), int(v["width"]), int(v["height"])
    width = width or round(image.width * height / image.height)  # 0 keeps the aspect ratio
    height = height or round(image.height * width / image.width)
    return (dataclasses.replace(image, width=width, height=height) if width else image,), None


async def _upscale(ctx: Simulation, v: dict[str, Any]) -> Result:
    image, model = _value(v.get("image"), "IMAGE"), _value(v.get("upscale_model"), "MODEL")
    times = 4 if "x4" in model.name else 2
    bigger = dataclasses.replace(image, width=image.width * times, height=image.height * times)
    return (bigger,), None


async def _sample(ctx: Simulation, v: dict[str, Any]) -> Result:
    steps = max(1, int(v.get("steps", 1)))
    reported = sorted({round(k * steps / 100) for k in range(1, 101)} - {0})  # <= 100 reports
    for step in reported:
        await ctx.work(ctx.node_seconds / len(reported), interruptible=False)
        ctx.step(step, steps)
    return (_value(v.get("latent_image"), "LATENT"),), None


def _pnginfo(ctx: Simulation, v: dict[str, Any]) -> dict[str, str]:
    """What Save nodes embed in their files: the prompt, and the client's extra_pnginfo."""
    extra = v.get("extra_pnginfo") or {}
    return {"prompt": json.dumps(ctx.graph)} | {k: json.dumps(x) for k, x in extra.items()}


async def _save_image(ctx: Simulation, v: dict[str, Any]) -> Result:
    images, text = _value(v.get("images"), "IMAGE"), _pnginfo(ctx, v)
    return (), {"images": ctx.server.files.save_pngs(str(v["filename_prefix"]), images, text)}


async def _preview_image(ctx: Simulation, v: dict[str, Any]) -> Result:
    images, text = _value(v.get("images"), "IMAGE"), _pnginfo(ctx, v)
    return (), {"images": ctx.server.files.save_pngs(None, images, text)}


async def _save_webp(ctx: Simulation, v: dict[str, Any]) -> Result:
    item = ctx.server.files.save_bytes(str(v["filename_prefix"]), ".webp", WEBP)
    return (), {"images": [item], "animated": [_value(v.get("images"), "IMAGE").batch != 1]}


async def _save_latent(ctx: Simulation, v: dict[str, Any]) -> Result:
    data = _safetensors(_pnginfo(ctx, v), _value(v.get("samples"), "LATENT"))
    item = ctx.server.files.save_bytes(str(v["filename_prefix"]), ".latent", data)
    return (), {"latents": [item]}


def _safetensors(metadata: dict[str, str], latent: Fake) -> bytes:
    """A .latent file: safetensors holding one zero tensor [batch, 4, 1, 1]."""
    size, shape = 16 * latent.batch, [latent.batch, 4, 1, 1]
    tensor = {"dtype": "F32", "shape": shape, "data_offsets": [0, size]}
    header = json.dumps({"__metadata__": metadata, "latent_tensor": tensor}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(size)


async def _fake_text(ctx: Simulation, v: dict[str, Any]) -> Result:
    return (), {"text": [str(v.get("value", ""))]}


async def _fake_big(ctx: Simulation, v: dict[str, Any]) -> Result:
    prefix, size = str(v.get("filename_prefix", "ComfyUI_big")), int(v.get("size_bytes", 0))
    return (), {"images": [ctx.server.files.save_virtual(prefix, size)]}


async def _fake_sleep(ctx: Simulation, v: dict[str, Any]) -> Result:
    await ctx.work(float(v.get("seconds", 0.0)), interruptible=True)
    return (v.get("value"),), None


async def _encode_text(ctx: Simulation, v: dict[str, Any]) -> Result:
    return (Fake("CONDITIONING", name=str(v.get("text", ""))[:40]),), None


_BEHAVIOURS: dict[str, Behaviour] = {
    "EmptyImage": _make("IMAGE"),
    "SaveImage": _save_image,
    "PreviewImage": _preview_image,
    "LoadImage": _load_image,
    "CheckpointLoaderSimple": _loader("checkpoints", "ckpt_name", ("MODEL", "CLIP", "VAE")),
    "KSampler": _sample,
    "CLIPTextEncode": _encode_text,
    "ImageBlur": _as("IMAGE", "image"),
    "ImageScale": _scale,
    "SaveAnimatedWEBP": _save_webp,
    "SaveLatent": _save_latent,
    "EmptyLatentImage": _make("LATENT"),
    "EmptySD3LatentImage": _make("LATENT"),
    "VAEDecode": _as("IMAGE", "samples", color=0x7F7F7F),
    "VAEEncode": _as("LATENT", "pixels"),
    "UpscaleModelLoader": _loader("upscale_models", "model_name", ("UPSCALE_MODEL",)),
    "ImageUpscaleWithModel": _upscale,
    "FakeBigOutput": _fake_big,
    "FakeText": _fake_text,
    "FakeSleep": _fake_sleep,
}

NODES: dict[str, Node] = {
    name: Node(
        info,
        _BEHAVIOURS[name],
        interruptible=name in ("FakeSleep", "FakeBigOutput"),
        own_pace=name == "KSampler",
    )
    for name, info in _infos().items()
}


def object_info(checkpoints: list[str], upscalers: list[str], images: list[str]) -> dict[str, Any]:
    """The /object_info answer, with the lists that depend on installed models and input/."""
    info: dict[str, Any] = {name: copy.deepcopy(node.info) for name, node in NODES.items()}
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(checkpoints)
    info["LoadImage"]["input"]["required"]["image"][0] = list(images)
    info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = list(upscalers)
    return info
