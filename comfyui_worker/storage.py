"""Open the output store ``WORKER_OUTPUT_URL`` names: a local directory, or an object store.

Object stores use obstore (Python bindings to Rust's ``object_store``): it streams
multipart uploads with concurrent parts outside the GIL, so a 1 GiB output uploads
faster than boto3's ``upload_file`` while the worker's memory grows by tens of MiB,
and an upload that fails is aborted, so nothing half-written ever appears under a key.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from comfyui_worker.errors import ConfigError
from comfyui_worker.objstore import REFUSED_SCHEMES, ObjectStore, is_object_url, refusal
from comfyui_worker.settings import ComfySettings
from comfyui_worker.store import LocalStore, OutputStore


def open_store(settings: ComfySettings) -> OutputStore:
    """The store for this worker's outputs (validated here, at start)."""
    location = settings.output_location
    scheme = urlsplit(location).scheme
    if scheme in REFUSED_SCHEMES:
        raise ConfigError(f"WORKER_OUTPUT_URL: {refusal(scheme)}")
    if is_object_url(location):
        return ObjectStore(location, settings.store_config(), presign_ttl_s=settings.presign_ttl_s)
    if scheme not in ("", "file"):
        raise ConfigError(
            f"WORKER_OUTPUT_URL: unknown scheme {scheme}://; use a directory or s3://"
        )
    directory = Path(location.removeprefix("file://"))
    return LocalStore(directory, fsync=settings.fsync)
