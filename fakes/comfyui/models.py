"""The model folders, listed from a real directory as ComfyUI lists its ``models/``.

Observed behaviour: ``GET /models`` answers the folder names; ``GET /models/{folder}``
a JSON list of the files ComfyUI would offer, relative to the folder with ``/`` between
subfolders, only with a model extension (so a ``.part`` download is never listed); an
unknown folder is a 404.
"""

from __future__ import annotations

from pathlib import Path

MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
    "clip",
    "unet",
)
EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})


def model_files(models_dir: Path | None, folder: str) -> list[str]:
    """The model files under ``models_dir/folder``, relative, sorted; none without a dir."""
    base = models_dir / folder if models_dir is not None else None
    if base is None or not base.is_dir():
        return []
    return sorted(
        path.relative_to(base).as_posix()
        for path in base.rglob("*")
        if path.is_file() and path.suffix.lower() in EXTENSIONS
    )
