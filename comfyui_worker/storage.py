"""Open the output store ``WORKER_OUTPUT_URL`` names: a local directory, or an object store.

Object stores use obstore (Python bindings to Rust's ``object_store``): it streams
multipart uploads with concurrent parts outside the GIL, so a 1 GiB output uploads
faster than boto3's ``upload_file`` while the worker's memory grows by tens of MiB,
and an upload that fails is aborted, so nothing half-written ever appears under a key.
"""

from __future__ import annotations

from pathlib import Path

from comfyui_worker.errors import ConfigError
from comfyui_worker.objstore import ObjectStore
from comfyui_worker.settings import ComfySettings
from comfyui_worker.store import LocalStore, OutputStore

OBJECT_SCHEMES = ("s3://", "s3a://")


def open_store(settings: ComfySettings) -> OutputStore:
    """The store for this worker's outputs (validated here, at start)."""
    location = settings.output_location
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme in ("gs", "az", "abfs", "azure"):
        raise ConfigError(
            f"WORKER_OUTPUT_URL: {scheme}:// is not supported (its client would read credentials "
            "from the environment behind the settings' back); use the provider's S3-compatible "
            "endpoint: s3://bucket/prefix with AWS_ENDPOINT_URL (GCS: "
            "https://storage.googleapis.com with HMAC keys)"
        )
    if location.startswith(OBJECT_SCHEMES):
        return ObjectStore(location, settings.store_config(), presign_ttl_s=settings.presign_ttl_s)
    if scheme not in ("", "file"):
        raise ConfigError(
            f"WORKER_OUTPUT_URL: unknown scheme {scheme}://; use a directory or s3://"
        )
    directory = Path(location.removeprefix("file://"))
    return LocalStore(directory, fsync=settings.fsync)
