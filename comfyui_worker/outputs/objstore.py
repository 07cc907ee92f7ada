"""Outputs in an S3 bucket (AWS, or any S3-compatible store: MinIO, SeaweedFS, R2, Ceph).

Built on obstore (Rust ``object_store``): uploads stream as multipart uploads with
parts sent concurrently outside the GIL, so throughput matches boto3 while memory
stays near ``(concurrency + 1) x part size``. Objects go to ``<prefix>/<run key>/<key>``.

Atomicity: an object appears under its key only whole. A small output (one part or
less: almost every image) is buffered and sent as one PUT, which stores bytes and
metadata together or nothing. A larger one is a multipart upload: S3 shows nothing
under the key until CompleteMultipartUpload, and obstore aborts the upload when the
stream or a part fails.

The sha256 is known only once the last byte has passed, but S3 fixes an object's
metadata when the upload starts. So a single-PUT object carries ``sha256`` and
``size`` as its own metadata; a multipart object gets a record instead, written after
the upload completed, at ``<run>/.comfyui-worker-journal.jsonl/<key>``: sha256, size
and the object's ETag. That record is this store's journal: a retry reuses an object
only when its metadata (or its record, bound by ETag and size) says it is whole.

Configuration comes only from the dict the caller passes (``AWS_*`` names): obstore's
constructors always start from the process environment, so this module gives the
credentials through a credential provider (the builder then never consults
``AWS_ACCESS_KEY_ID``/``AWS_SESSION_TOKEN``/web identity/instance metadata) and pins
every routing and signing option explicitly (an explicit value overrides the
environment's); passing client options replaces any ``AWS_*`` client option. Still
honoured from the environment: ``HTTP(S)_PROXY``/``NO_PROXY`` (as httpx does), and the
options obstore can only add, never clear (``AWS_SERVER_SIDE_ENCRYPTION``/``AWS_SSE_*``,
``AWS_CHECKSUM_ALGORITHM``). gs:// and az:// are refused: obstore's GCS and Azure
builders read ``GOOGLE_*``/``AZURE_*`` in ways an explicit value cannot undo.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from comfyui_worker.errors import ConfigError, OutputStorageError
from comfyui_worker.outputs.collect import JOURNAL, MANIFEST, Stored

if TYPE_CHECKING:
    from obstore import Attributes
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3Credential

MIB = 1024 * 1024
PART_BYTES = 8 * MIB  # S3's minimum part is 5 MiB; 8 MiB x 10,000 parts is 78 GiB
CONCURRENCY = 4  # parts in flight: memory is about (CONCURRENCY + 1) x PART_BYTES
MAX_PARTS = 10_000  # S3's limit; a larger size_hint gets larger parts
META_SHA256 = "sha256"
META_SIZE = "size"
RECORDS = JOURNAL  # <run>/<RECORDS>/<key>: the record of a multipart upload
PROBE_PREFIX = ".comfyui-worker-write-check-"
SCHEMES = ("s3", "s3a")
REFUSED_SCHEMES = ("gs", "az", "azure", "abfs", "abfss", "adl")

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
CONFIG_KEYS = frozenset(
    {
        *CREDENTIAL_KEYS,
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_UNSIGNED_PAYLOAD",
        "AWS_SERVER_SIDE_ENCRYPTION",
        "AWS_SSE_KMS_KEY_ID",
        "AWS_SSE_BUCKET_KEY_ENABLED",
    }
)
_SSE = {
    "AWS_SERVER_SIDE_ENCRYPTION": "server_side_encryption",
    "AWS_SSE_KMS_KEY_ID": "sse_kms_key_id",
    "AWS_SSE_BUCKET_KEY_ENABLED": "sse_bucket_key_enabled",
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
_UNREACHABLE = re.compile(
    r"error sending request|connect|timed? ?out|dns|resolve|connection (refused|reset|closed)|"
    r"broken pipe|incomplete message|unexpected eof",
    re.IGNORECASE,
)


class ObjectStore:
    """Outputs under ``s3://bucket/prefix/<run key>/`` (implements ``store.OutputStore``).

    ``config`` holds ``AWS_*`` values (credentials, ``AWS_REGION``,
    ``AWS_ENDPOINT_URL``...); nothing is read from the environment. A plain
    ``http://`` endpoint is allowed as given. With ``presign_ttl_s`` every stored
    object also gets a presigned GET URL valid that long.
    """

    def __init__(
        self,
        url: str,
        config: Mapping[str, str],
        *,
        presign_ttl_s: float | None = None,
        part_bytes: int = PART_BYTES,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.bucket, self.prefix = _parse_url(url)
        values = _validated(config)
        self.region = values.get("AWS_REGION") or values.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.virtual_hosted = _flag(values, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST", default=False)
        self.endpoint = (
            values.get("AWS_ENDPOINT_URL_S3")
            or values.get("AWS_ENDPOINT_URL")
            or (
                f"https://{self.bucket}.s3.{self.region}.amazonaws.com"
                if self.virtual_hosted
                else f"https://s3.{self.region}.amazonaws.com"
            )
        ).rstrip("/")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"AWS_ENDPOINT_URL must be an http(s) URL, got {self.endpoint!r}")
        if presign_ttl_s is not None and not 1 <= presign_ttl_s <= 7 * 24 * 3600:
            raise ConfigError("the presigned URL lifetime must be between 1 s and 7 days")
        if part_bytes < 5 * MIB or concurrency < 1:
            raise ConfigError("part_bytes must be at least 5 MiB and concurrency at least 1")
        self.presign_ttl_s = presign_ttl_s
        self.part_bytes = part_bytes
        self.concurrency = concurrency
        self._secrets = tuple(v for k in CREDENTIAL_KEYS if (v := values.get(k)))
        credential: S3Credential = {
            "access_key_id": values["AWS_ACCESS_KEY_ID"],
            "secret_access_key": values["AWS_SECRET_ACCESS_KEY"],
            "token": values.get("AWS_SESSION_TOKEN"),
            "expires_at": None,
        }
        s3_config = self._pinned_config(values)
        self.client = self._build(s3_config, credential, retries=4, timeout_s=300)
        # The write check fails fast: one retry, and a short limit for each request.
        self._probe_store = self._build(s3_config, credential, retries=1, timeout_s=20)

    @property
    def location(self) -> str:
        """``s3://bucket/prefix``."""
        return self.url_of(self.prefix)

    def run(self, run_key: str) -> ObjectRunStore:
        """The store for one task's objects, under ``<prefix>/<run key>/``."""
        return ObjectRunStore(self, _join(self.prefix, run_key))

    def check_writable(self) -> str:
        """PUT then DELETE a small probe object; any failure is one line saying what to check."""
        probe = _join(self.prefix, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
        with self.errors("write a probe object to", probe):
            obstore.put(self._probe_store, probe, b"ok", use_multipart=False)
        with self.errors("delete the probe object", probe):
            obstore.delete(self._probe_store, probe)
        return f"{self.location} at {self.endpoint}"

    def missing(self) -> str | None:
        """What of the location does not exist yet (the bucket), probed by listing one key.

        ``check`` asks before it writes: some stores (SeaweedFS, MinIO with a flag) create
        a bucket on the first PUT, so a typo in the bucket name would otherwise pass.
        """
        try:
            next(
                iter(obstore.list(self._probe_store, prefix=self.prefix or None, chunk_size=1)),
                None,
            )
        except (BaseError, FileNotFoundError) as exc:
            if _xml(self._scrub(str(exc)), "Code") == "NoSuchBucket":
                return f"bucket {self.bucket!r}"
            raise self._storage_error(exc, "list", self.prefix) from None
        return None

    def check_before_task(self) -> None:
        """Nothing per task: readiness probes the bucket, and a failed upload is retried."""

    def url_of(self, full_key: str) -> str:
        """An object's (or prefix's) URL as results show it: ``s3://bucket/key``."""
        return f"s3://{self.bucket}/{full_key}".rstrip("/")

    def key_in(self, url: str) -> str | None:
        """The key an object URL names under this store's bucket and prefix, else None."""
        try:
            bucket, key = _parse_url(url)
        except ConfigError:
            return None
        prefix = f"{self.prefix}/" if self.prefix else ""
        if bucket != self.bucket or not key.startswith(prefix) or ".." in key.split("/"):
            return None
        return key

    def presign(self, full_key: str) -> str | None:
        """A presigned GET URL for the object, or None when presigning is off.

        Signing is local (no request): it needs only the credentials and the clock.
        """
        if self.presign_ttl_s is None:
            return None
        with self.errors("presign", full_key):
            return obstore.sign(self.client, "GET", full_key, timedelta(seconds=self.presign_ttl_s))

    @contextlib.contextmanager
    def errors(self, action: str, full_key: str) -> Iterator[None]:
        """Turn an obstore failure into one ``OutputStorageError`` line naming the key.

        obstore raises its own ``BaseError`` tree, except "not found" (a missing
        bucket on a PUT, too), which is the builtin ``FileNotFoundError``.
        """
        try:
            yield
        except (BaseError, FileNotFoundError) as exc:
            raise self._storage_error(exc, action, full_key) from None

    def _storage_error(self, exc: Exception, action: str, full_key: str) -> OutputStorageError:
        text = self._scrub(str(exc))
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        code = _xml(text, "Code")
        target = self.url_of(full_key)
        where = f"bucket {self.bucket!r} at {self.endpoint}"
        if code == "NoSuchBucket":
            hint = (
                f"bucket {self.bucket!r} does not exist at {self.endpoint}: check the bucket "
                "in the output URL, AWS_ENDPOINT_URL and AWS_REGION"
            )
        elif code in _AUTH_CODES or isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            hint = (
                f"{where} refused the credentials ({code or type(exc).__name__}): check "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) and that "
                "the key may write to the bucket"
            )
        elif code is None and _UNREACHABLE.search(text):
            hint = f"cannot reach {self.endpoint}: check AWS_ENDPOINT_URL and that the store is up"
        else:
            message = _xml(text, "Message")
            hint = f"{code}: {message}" if code and message else first
        return OutputStorageError(
            f"cannot {action} {target}: {hint}",
            path=target,
            bucket=self.bucket,
            endpoint=self.endpoint,
            cause=code or type(exc).__name__,
        )

    def _scrub(self, text: str) -> str:
        """Never let a credential reach a message, whatever the library printed."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _pinned_config(self, values: Mapping[str, str]) -> S3Config:
        """Every option the environment could set, given a value of our own."""
        config: dict[str, Any] = {
            "bucket": self.bucket,
            "region": self.region,
            "endpoint": self.endpoint,
            "aws_endpoint_url_s3": self.endpoint,  # the env's AWS_ENDPOINT_URL_S3 wins otherwise
            "virtual_hosted_style_request": self.virtual_hosted,
            # TLS protects the body on https, as boto3 assumes; on plain http, sign it.
            "unsigned_payload": _flag(
                values, "AWS_UNSIGNED_PAYLOAD", default=self.endpoint.startswith("https://")
            ),
            "skip_signature": False,
            "s3_express": False,
            "request_payer": False,
            "disable_tagging": False,
            "conditional_put": "etag",
            "imdsv1_fallback": False,
        }
        for name, key in _SSE.items():
            if values.get(name):
                config[key] = values[name]
        s3_config: S3Config = config  # type: ignore[assignment]
        return s3_config

    def _build(
        self, config: S3Config, credential: S3Credential, *, retries: int, timeout_s: float
    ) -> S3Store:
        # Passing client_options replaces every client option the environment set.
        client: ClientConfig = {
            "allow_http": self.endpoint.startswith("http://"),
            "connect_timeout": timedelta(seconds=5),
            "timeout": timedelta(seconds=timeout_s),  # per request: one part at >= 28 kB/s
            "user_agent": "comfyui-worker",
        }
        retry: RetryConfig = {
            "max_retries": retries,
            "retry_timeout": timedelta(seconds=60),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
        }
        try:
            return S3Store(
                config=config,
                client_options=client,
                retry_config=retry,
                credential_provider=lambda: credential,
            )
        except BaseError as exc:
            message = self._scrub(str(exc)).strip().splitlines()[0]
            raise ConfigError(f"invalid object store configuration: {message}") from None


class ObjectRunStore:
    """One task's objects (implements ``store.RunStore``)."""

    def __init__(self, owner: ObjectStore, run_prefix: str) -> None:
        self.owner = owner
        self.run_prefix = run_prefix

    @property
    def location(self) -> str:
        """``s3://bucket/prefix/<run key>``."""
        return self.owner.url_of(self.run_prefix)

    def prepare(self) -> None:
        """Nothing to create or sweep: a bucket has no directories, and no half-written object.

        An interrupted multipart upload is invisible (its parts are no object) and
        obstore aborts its own on failure; one orphaned by a killed process is
        reaped by the bucket's lifecycle rule (AbortIncompleteMultipartUpload), as
        obstore has no call to list or abort uploads it did not start.
        """

    def reusable(self, key: str) -> Stored | None:
        """The object an earlier attempt stored whole under ``key``, per its metadata or record."""
        full_key = self._full(key)
        with self.owner.errors("look up", full_key):
            try:
                head = obstore.get(self.owner.client, full_key, options={"head": True})
            except FileNotFoundError:
                return None
            size, e_tag, attributes = head.meta["size"], head.meta["e_tag"], head.attributes
        media_type = str(attributes.get("Content-Type") or "application/octet-stream")
        sha256 = attributes.get(META_SHA256)
        if _is_sha256(sha256) and attributes.get(META_SIZE) == str(size):
            return self._stored(key, size, str(sha256), media_type)
        record = self._record(key)
        if (
            record is None
            or e_tag is None  # without an ETag nothing binds the record to this object
            or record.get("e_tag") != e_tag
            or record.get("size_bytes") != size
            or not _is_sha256(record.get("sha256"))
        ):
            return None
        return self._stored(key, size, str(record["sha256"]), media_type)

    def write(
        self, key: str, chunks: Iterable[bytes], *, media_type: str, size_hint: int | None
    ) -> Stored:
        """Stream ``chunks`` to ``key``, hashing on the way; one PUT if small, else multipart.

        An exception from ``chunks`` itself (the download failed, the output is too
        big) propagates unchanged after the upload was aborted; a store failure
        becomes ``OutputStorageError`` naming the key and the cause.
        """
        full_key = self._full(key)  # never under RECORDS/: outputs.plan keeps it for us
        part = _part_size(self.owner.part_bytes, size_hint)
        source = _Hashing(chunks)
        head, whole = source.take(part)
        try:
            with self.owner.errors("upload", full_key):
                if whole:
                    attributes: Attributes = {
                        "Content-Type": media_type,
                        META_SHA256: source.sha256(),
                        META_SIZE: str(source.size),
                    }
                    obstore.put(
                        self.owner.client,
                        full_key,
                        head,
                        attributes=attributes,
                        use_multipart=False,
                    )
                    e_tag = None
                else:
                    e_tag = obstore.put(
                        self.owner.client,
                        full_key,
                        itertools.chain(head, source),
                        attributes={"Content-Type": media_type},
                        use_multipart=True,
                        chunk_size=part,
                        max_concurrency=self.owner.concurrency,
                    )["e_tag"]
        except OutputStorageError:
            if source.error is not None:  # the abort failed too; the stream's failure is the news
                raise source.error from None
            raise
        sha256 = source.sha256()
        if not whole:
            self._write_record(key, source.size, sha256, media_type, e_tag)
        return self._stored(key, source.size, sha256, media_type)

    def write_manifest(self, manifest: dict[str, object]) -> str:
        """Write ``manifest.json`` in one PUT, last: its presence means the set is complete."""
        data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        full_key = self._full(MANIFEST)
        attributes: Attributes = {
            "Content-Type": "application/json",
            META_SHA256: hashlib.sha256(data).hexdigest(),
            META_SIZE: str(len(data)),
        }
        with self.owner.errors("write", full_key):
            obstore.put(
                self.owner.client, full_key, data, attributes=attributes, use_multipart=False
            )
        return self.owner.url_of(full_key)

    def delete(self, key: str) -> None:
        """Remove an object (and its upload record), e.g. one saved early that is not an output."""
        for full_key in (self._full(key), self._full(f"{RECORDS}/{key}")):
            with self.owner.errors("delete", full_key), contextlib.suppress(FileNotFoundError):
                obstore.delete(self.owner.client, full_key)

    def presign(self, key: str) -> str | None:
        """A presigned GET URL for ``key`` (``manifest.json`` too), or None when off."""
        return self.owner.presign(self._full(key))

    def _full(self, key: str) -> str:
        return _join(self.run_prefix, key)

    def _stored(self, key: str, size: int, sha256: str, media_type: str) -> Stored:
        full_key = self._full(key)
        return Stored(
            key=key,
            location=self.owner.url_of(full_key),
            size_bytes=size,
            sha256=sha256,
            media_type=media_type,
            url=self.owner.presign(full_key),
        )

    def _record(self, key: str) -> dict[str, Any] | None:
        """The record of an earlier multipart upload of ``key``; None if absent or torn."""
        record_key = self._full(f"{RECORDS}/{key}")
        with self.owner.errors("read the upload record", record_key):
            try:
                data = obstore.get(self.owner.client, record_key).bytes().to_bytes()
            except FileNotFoundError:
                return None
        with contextlib.suppress(ValueError):
            record = json.loads(data)
            if isinstance(record, dict):
                return record
        return None

    def _write_record(
        self, key: str, size: int, sha256: str, media_type: str, e_tag: str | None
    ) -> None:
        """After the upload completed: bind sha256 and size to this object by its ETag."""
        record = {
            "key": key,
            "size_bytes": size,
            "sha256": sha256,
            "media_type": media_type,
            "e_tag": e_tag,
        }
        record_key = self._full(f"{RECORDS}/{key}")
        with self.owner.errors("write the upload record", record_key):
            obstore.put(
                self.owner.client,
                record_key,
                json.dumps(record).encode("utf-8"),
                attributes={"Content-Type": "application/json"},
                use_multipart=False,
            )


class _Hashing:
    """An iterator over ``chunks`` that hashes and counts, and remembers its own failure."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._digest = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            raise
        except BaseException as exc:
            self.error = exc
            raise
        self._digest.update(chunk)
        self.size += len(chunk)
        return chunk

    def take(self, limit: int) -> tuple[list[bytes], bool]:
        """Chunks up to ``limit`` bytes (or one chunk past it); True if that was all."""
        taken: list[bytes] = []
        held = 0
        for chunk in self:
            taken.append(chunk)
            held += len(chunk)
            if held > limit:
                return taken, False
        return taken, True

    def sha256(self) -> str:
        return self._digest.hexdigest()


def _part_size(part_bytes: int, size_hint: int | None) -> int:
    """The configured part size, larger when the announced size would need over 10,000 parts."""
    if size_hint is None or size_hint <= part_bytes * (MAX_PARTS - 100):
        return part_bytes
    needed = -(-size_hint // (MAX_PARTS - 100))
    return -(-needed // MIB) * MIB


def is_object_url(location: str) -> bool:
    """Whether ``location`` names an object in (or a prefix of) an S3-compatible store."""
    return urlsplit(location).scheme in SCHEMES


def refusal(scheme: str) -> str:
    """Why a Google or Azure URL is refused, and what to use instead."""
    return (
        f"{scheme}:// outputs are not supported: obstore's GCS/Azure clients read "
        "GOOGLE_*/AZURE_* from the environment in ways explicit settings cannot undo; "
        "use the store's S3-compatible endpoint (GCS: s3:// with "
        "AWS_ENDPOINT_URL=https://storage.googleapis.com and HMAC keys)"
    )


def _parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    if parts.scheme in REFUSED_SCHEMES:
        raise ConfigError(refusal(parts.scheme))
    if parts.scheme not in SCHEMES or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"the output URL must look like s3://bucket/prefix, got {url!r}")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError("the output URL holds only the bucket: credentials go in AWS_* settings")
    return parts.netloc, parts.path.strip("/")


def _validated(config: Mapping[str, str]) -> dict[str, str]:
    """Known keys with non-empty values; static credentials are required."""
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown object store setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(CONFIG_KEYS))}"
        )
    values = {k: v.strip() for k, v in config.items() if v and v.strip()}
    missing = [k for k in CREDENTIAL_KEYS[:2] if k not in values]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} must be set for S3 outputs (instance and web-identity "
            "credentials are not read: nothing here consults the environment)"
        )
    return values


def _flag(values: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = values.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _xml(text: str, tag: str) -> str | None:
    """One element of an S3 error body quoted in the library's message, if any."""
    found = re.search(rf"<{tag}>([^<]{{1,300}})</{tag}>", text)
    return found.group(1).strip() if found else None
