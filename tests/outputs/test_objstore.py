"""The S3 output store against a real S3 server (SeaweedFS), through a cutting proxy too."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.common import MIB, ROOT, byte_chunks
from comfyui_worker.errors import ConfigError, OutputRejectedError, OutputStorageError
from comfyui_worker.outputs.objstore import RECORDS, ObjectStore
from comfyui_worker.run.execution import Runner
from fakes.comfyui import FakeComfyUI
from fakes.seaweed import CuttingProxy, SeaweedS3, free_ports
from tests.conftest import RecordedFence, make_request, make_settings, recorded

# A real S3 server (SeaweedFS) per session, and 200 MB uploads.
pytestmark = pytest.mark.slow


def run_python(script: str, timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -c SCRIPT`` from the project root, with ``env`` added to this environment."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def digest(size: int, seed: int = 0) -> str:
    h = hashlib.sha256()
    for piece in byte_chunks(size, seed=seed):
        h.update(piece)
    return h.hexdigest()


@pytest.fixture
def prefix() -> str:
    """A prefix of the test's own, so tests sharing the session's server never meet."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def proxy(seaweed: SeaweedS3) -> Iterator[CuttingProxy]:
    """A byte-counting, line-cutting TCP proxy in front of SeaweedFS's S3 port."""
    with CuttingProxy(seaweed.port) as p:
        yield p


def store_for(seaweed: SeaweedS3, prefix: str, **kw: Any) -> ObjectStore:
    endpoint = kw.pop("endpoint", seaweed.endpoint)
    config = seaweed.config(AWS_ENDPOINT_URL=endpoint, **kw.pop("config", {}))
    return ObjectStore(f"s3://{kw.pop('bucket', seaweed.bucket)}/{prefix}", config, **kw)


def keys_under(seaweed: SeaweedS3, prefix: str) -> list[str]:
    listed = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix=f"{prefix}/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def exists(seaweed: SeaweedS3, key: str) -> bool:
    try:
        seaweed.client().head_object(Bucket=seaweed.bucket, Key=key)
    except Exception as exc:
        if "404" in str(exc) or "Not Found" in str(exc):
            return False
        raise
    return True


def body(seaweed: SeaweedS3, key: str) -> bytes:
    data: bytes = seaweed.client().get_object(Bucket=seaweed.bucket, Key=key)["Body"].read()
    return data


def task_graph(big_bytes: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 3, "color": 0x3366FF},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "img/s"},
        },
        "3": {
            "class_type": "FakeBigOutput",
            "inputs": {"size_bytes": big_bytes, "filename_prefix": "video/clip"},
        },
    }


def test_multi_output_task_lands_whole_with_sha256_metadata(
    seaweed: SeaweedS3, comfy: FakeComfyUI, tmp_path: Path, prefix: str
):
    """A task's images and a multipart video all land, each with its sha256; manifest last."""
    store = store_for(seaweed, prefix)
    settings = make_settings(comfy.base_url, tmp_path / "unused")
    with Runner(settings, store=store) as runner:
        result = runner.run(make_request(task_graph(20 * MIB), run_key="wf/task-1"))
    run = f"{prefix}/wf/task-1"
    assert result.output_dir == f"s3://{seaweed.bucket}/{run}"
    assert result.manifest == f"s3://{seaweed.bucket}/{run}/manifest.json"
    assert len(result.outputs) == 4
    client = seaweed.client()
    for out in result.outputs:
        key = f"{run}/{out.relative_path}"
        assert out.path == f"s3://{seaweed.bucket}/{key}"
        data = body(seaweed, key)
        assert len(data) == out.size_bytes and hashlib.sha256(data).hexdigest() == out.sha256
        meta = client.head_object(Bucket=seaweed.bucket, Key=key)
        if out.size_bytes <= store.part_bytes:  # one PUT: the object carries its own sha256
            assert meta["Metadata"] == {"sha256": out.sha256, "size": str(out.size_bytes)}
            assert meta["ContentType"] == "image/png"
        else:  # multipart: the record written after completion carries it, bound by ETag
            record = json.loads(body(seaweed, f"{run}/{RECORDS}/{out.relative_path}"))
            assert record["sha256"] == out.sha256 and record["size_bytes"] == out.size_bytes
            assert record["e_tag"] == meta["ETag"] and meta["ETag"].endswith('-3"')
    manifest = json.loads(body(seaweed, f"{run}/manifest.json"))
    assert sorted(o["sha256"] for o in manifest["outputs"]) == sorted(
        o.sha256 for o in result.outputs
    )
    listed = keys_under(seaweed, run)
    expected = {f"{run}/{o.relative_path}" for o in result.outputs} | {f"{run}/manifest.json"}
    assert expected <= set(listed)
    assert set(listed) - expected == {
        f"{run}/{RECORDS}/{o.relative_path}"
        for o in result.outputs
        if o.size_bytes > store.part_bytes
    }
    stamps = {k: client.head_object(Bucket=seaweed.bucket, Key=k)["LastModified"] for k in listed}
    assert stamps[f"{run}/manifest.json"] == max(stamps.values())


def test_keys_with_spaces_unicode_and_symbols_round_trip(seaweed: SeaweedS3, prefix: str):
    """A key with spaces, non-ASCII, '#', '%' and '+' is stored under exactly that name."""
    run = store_for(seaweed, prefix).run("r")
    run.prepare()
    key = "sub dir/ünïcødé #1 50%+.png"
    stored = run.write(key, [b"abc"], media_type="image/png", size_hint=3)
    assert stored.location == f"s3://{seaweed.bucket}/{prefix}/r/{key}"
    assert body(seaweed, f"{prefix}/r/{key}") == b"abc"
    assert run.reusable(key) == stored


def test_200mb_upload_keeps_memory_flat(seaweed: SeaweedS3, prefix: str, tmp_path: Path):
    """A 200 MB stream goes up with peak RSS growing by at most 64 MiB (child process)."""
    size = 200 * 1000 * 1000
    script = textwrap.dedent(
        f"""
        import json, sys
        from benchmarks.common import byte_chunks, peak_rss_growth
        from comfyui_worker.outputs.objstore import ObjectStore
        store = ObjectStore({f"s3://{seaweed.bucket}/{prefix}"!r}, {seaweed.config()!r})
        run = store.run("big")
        run.write("warm.bin", byte_chunks(12 * 2**20, seed=1), media_type="x", size_hint=None)
        growth_mib = peak_rss_growth(exact=True)
        stored = run.write("out.bin", byte_chunks({size}), media_type="video/mp4", size_hint=None)
        print(json.dumps({{"growth_mib": growth_mib(), "sha256": stored.sha256, "size": stored.size_bytes}}))
        """
    )
    done = run_python(script, timeout_s=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["size"] == size and report["sha256"] == digest(size)
    print(f"peak RSS growth for {size} bytes: {report['growth_mib']:.1f} MiB")
    assert report["growth_mib"] <= 64, report
    record = json.loads(body(seaweed, f"{prefix}/big/{RECORDS}/out.bin"))
    assert record["sha256"] == digest(size)


def test_connection_cut_mid_upload_then_retry_completes(
    seaweed: SeaweedS3, proxy: CuttingProxy, prefix: str
):
    """A cut mid-upload fails with one error naming the key; nothing ever shows; the retry lands."""
    run = store_for(seaweed, prefix, endpoint=proxy.endpoint).run("r")
    run.prepare()
    key, size = "clip.mp4", 40 * MIB
    final = f"{prefix}/r/{key}"
    seen: list[bool] = []
    writing, watching = threading.Event(), threading.Event()
    writing.set()

    def watch() -> None:
        client = seaweed.client()
        while writing.is_set():
            try:
                client.head_object(Bucket=seaweed.bucket, Key=final)
                seen.append(True)
            except Exception:
                seen.append(False)
            watching.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert watching.wait(10)
    proxy.cut_after(20 * MIB)
    try:
        with pytest.raises(OutputStorageError) as failure:
            run.write(key, byte_chunks(size), media_type="video/mp4", size_hint=size)
    finally:
        writing.clear()
        watcher.join()
    assert proxy.is_cut and seen and not any(seen)
    assert f"s3://{seaweed.bucket}/{final}" in str(failure.value)
    assert "\n" not in str(failure.value) and seaweed.secret_key not in str(failure.value)
    assert not exists(seaweed, final)

    proxy.heal()
    retry = store_for(seaweed, prefix, endpoint=proxy.endpoint).run("r")
    retry.prepare()
    assert retry.reusable(key) is None
    stored = retry.write(key, byte_chunks(size), media_type="video/mp4", size_hint=size)
    assert stored.sha256 == digest(size) and stored.size_bytes == size
    assert hashlib.sha256(body(seaweed, final)).hexdigest() == digest(size)


def test_a_failing_stream_raises_its_own_error_and_leaves_nothing(seaweed: SeaweedS3, prefix: str):
    """An error from the chunks (output over the cap) propagates unchanged; no object appears."""

    def failing() -> Iterator[bytes]:
        yield from byte_chunks(20 * MIB)
        raise OutputRejectedError("over the limit")

    run = store_for(seaweed, prefix).run("r")
    run.prepare()
    with pytest.raises(OutputRejectedError):
        run.write("big.bin", failing(), media_type="x", size_hint=None)
    with pytest.raises(OutputRejectedError):
        run.write("small.bin", iter([b"x", *failing()]), media_type="x", size_hint=None)
    assert keys_under(seaweed, f"{prefix}/r") == []


def test_objects_already_there_are_not_uploaded_again(
    seaweed: SeaweedS3, proxy: CuttingProxy, prefix: str
):
    """A retry reuses a whole small (metadata) and big (record) object without re-uploading."""
    first = store_for(seaweed, prefix, endpoint=proxy.endpoint).run("r")
    first.prepare()
    small = first.write("a.png", byte_chunks(MIB), media_type="image/png", size_hint=MIB)
    big = first.write(
        "b.mp4", byte_chunks(24 * MIB, seed=2), media_type="video/mp4", size_hint=None
    )
    before = proxy.bytes_up

    retry = store_for(seaweed, prefix, endpoint=proxy.endpoint).run("r")
    retry.prepare()
    assert retry.reusable("a.png") == small and retry.reusable("b.mp4") == big
    assert retry.reusable("missing.png") is None
    assert proxy.bytes_up - before < 16 * 1024  # a few HEADs and one small GET, no upload

    client = seaweed.client()
    client.put_object(Bucket=seaweed.bucket, Key=f"{prefix}/r/a.png", Body=b"other")
    client.put_object(Bucket=seaweed.bucket, Key=f"{prefix}/r/b.mp4", Body=b"other")
    assert retry.reusable("a.png") is None  # no sha256 metadata on the foreign object
    assert retry.reusable("b.mp4") is None  # the record's ETag no longer matches


def test_a_task_retry_reuses_what_the_first_attempt_stored(
    seaweed: SeaweedS3, proxy: CuttingProxy, comfy: FakeComfyUI, tmp_path: Path, prefix: str
):
    """Runner retried with the same run key reports every output reused and uploads no file."""
    store = store_for(seaweed, prefix, endpoint=proxy.endpoint)
    settings = make_settings(comfy.base_url, tmp_path / "unused")
    with Runner(settings, store=store) as runner:
        first = runner.run(make_request(task_graph(12 * MIB), run_key="task"))
        before = proxy.bytes_up
        fence = RecordedFence(recorded(comfy.base_url, first.prompt_id, task_graph(12 * MIB)))
        again = runner.run(make_request(task_graph(12 * MIB), run_key="task"), fence=fence)
    assert [o.reused for o in again.outputs] == [True] * 4
    assert [o.sha256 for o in again.outputs] == [o.sha256 for o in first.outputs]
    assert proxy.bytes_up - before < 64 * 1024  # HEADs, a record GET and the manifest


def test_wrong_credentials_give_one_clear_error(seaweed: SeaweedS3, prefix: str):
    """A wrong secret: one OutputStorageError line naming the bucket and what to check."""
    store = store_for(seaweed, prefix, config={"AWS_SECRET_ACCESS_KEY": "not-the-secret-123"})
    with pytest.raises(OutputStorageError) as failure:
        store.check_writable()
    text = str(failure.value)
    assert "\n" not in text and "not-the-secret-123" not in text
    assert "refused the credentials (SignatureDoesNotMatch)" in text
    assert "AWS_SECRET_ACCESS_KEY" in text and seaweed.bucket in text
    with pytest.raises(OutputStorageError, match="InvalidAccessKeyId"):
        store_for(seaweed, prefix, config={"AWS_ACCESS_KEY_ID": "nobody"}).check_writable()
    run = store.run("r")
    with pytest.raises(OutputStorageError, match=r"cannot upload s3://.*/r/x\.png: .*credentials"):
        run.write("x.png", [b"x"], media_type="image/png", size_hint=1)


def test_a_missing_bucket_gives_one_clear_error(seaweed: SeaweedS3, prefix: str):
    """A bucket that does not exist: one OutputStorageError line saying so."""
    store = store_for(seaweed, prefix, bucket="no-such-bucket-here")
    with pytest.raises(OutputStorageError) as failure:
        store.check_writable()
    text = str(failure.value)
    assert "\n" not in text
    assert "bucket 'no-such-bucket-here' does not exist at " + seaweed.endpoint in text


def test_an_unreachable_endpoint_gives_one_clear_error(seaweed: SeaweedS3, prefix: str):
    """Nothing listening at the endpoint: one OutputStorageError line naming it."""
    [port] = free_ports(1)
    store = store_for(seaweed, prefix, endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(OutputStorageError) as failure:
        store.check_writable()
    text = str(failure.value)
    assert "\n" not in text and f"cannot reach http://127.0.0.1:{port}" in text


def test_check_writable_leaves_no_probe(seaweed: SeaweedS3, prefix: str):
    """The write check puts and deletes its probe, and describes the location."""
    store = store_for(seaweed, prefix)
    assert store.check_writable() == f"s3://{seaweed.bucket}/{prefix} at {seaweed.endpoint}"
    assert keys_under(seaweed, prefix) == []


def test_presigned_urls_are_fetchable_with_plain_httpx(seaweed: SeaweedS3, prefix: str):
    """With presign_ttl_s, stored objects and the manifest come with a working GET URL."""
    run = store_for(seaweed, prefix, presign_ttl_s=300).run("r")
    run.prepare()
    stored = run.write("a.png", [b"png", b"bytes"], media_type="image/png", size_hint=None)
    assert stored.url is not None and "X-Amz-Signature=" in stored.url
    reply = httpx.get(stored.url)
    assert reply.status_code == 200 and reply.content == b"pngbytes"
    run.write_manifest({"outputs": []})
    manifest_url = run.presign("manifest.json")
    assert manifest_url is not None and httpx.get(manifest_url).json() == {"outputs": []}
    assert store_for(seaweed, prefix).run("r").reusable("a.png").url is None  # type: ignore[union-attr]


def test_the_environment_is_never_consulted(seaweed: SeaweedS3, prefix: str):
    """Bogus AWS_* variables in the process environment change nothing (child process)."""
    script = textwrap.dedent(
        f"""
        from comfyui_worker.outputs.objstore import ObjectStore
        store = ObjectStore({f"s3://{seaweed.bucket}/{prefix}"!r}, {seaweed.config()!r})
        store.check_writable()
        run = store.run("env")
        stored = run.write("a.txt", [b"hello"], media_type="text/plain", size_hint=5)
        assert run.reusable("a.txt") == stored
        print("ok")
        """
    )
    bogus = {
        "AWS_ACCESS_KEY_ID": "AKIAENVIRONMENT",
        "AWS_SECRET_ACCESS_KEY": "from-the-environment",
        "AWS_SESSION_TOKEN": "token-from-the-environment",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_REGION": "eu-west-3",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
        "AWS_SKIP_SIGNATURE": "true",
        "AWS_ALLOW_HTTP": "false",
        "AWS_REQUEST_PAYER": "true",
        "AWS_S3_EXPRESS": "true",
    }
    done = run_python(script, timeout_s=120, **bogus)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize(
    ("url", "config", "message"),
    [
        ("gs://bucket/p", {}, "gs:// outputs are not supported"),
        ("az://container/p", {}, "az:// outputs are not supported"),
        ("s3://", {}, "must look like s3://bucket/prefix"),
        ("s3://key:secret@bucket/p", {}, "credentials go in AWS_"),
        ("s3://bucket/p", {"AWS_SECRET_ACCESS_KEY": ""}, "AWS_SECRET_ACCESS_KEY must be set"),
        ("s3://bucket/p", {"AWS_SECRET": "x"}, "unknown object store setting"),
        ("s3://bucket/p", {"AWS_ENDPOINT_URL": "ftp://x"}, "must be an http"),
        ("s3://bucket/p", {"AWS_UNSIGNED_PAYLOAD": "maybe"}, "must be true or false"),
    ],
)
def test_bad_configuration_is_a_config_error(url: str, config: dict[str, str], message: str):
    """A URL or setting the store cannot use is one ConfigError naming it."""
    base = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    with pytest.raises(ConfigError, match=message):
        ObjectStore(url, {**base, **config})


def test_part_size_grows_only_past_ten_thousand_parts():
    """8 MiB parts up to ~77 GiB; a larger announced size gets parts that fit S3's 10,000."""
    from comfyui_worker.outputs.objstore import MAX_PARTS, PART_BYTES, _part_size

    assert _part_size(PART_BYTES, None) == PART_BYTES
    assert _part_size(PART_BYTES, 50 * 2**30) == PART_BYTES
    huge = 200 * 2**30
    part = _part_size(PART_BYTES, huge)
    assert part % MIB == 0 and -(-huge // part) < MAX_PARTS
