"""sr_core.storage against local disk and a real S3 HTTP endpoint (moto_server on loopback)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from sr_core import storage
from sr_core.errors import InputError, StorageError

SCENE = "S2A_29RKH_20200219_L2A_B04.tif"


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session")
def bucket(moto_s3: str) -> str:
    """A fresh bucket on the moto endpoint (created with plain boto3, not with sr_core)."""
    name = f"sr-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One test suite, two backends: a local directory or an S3 prefix."""
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/{uuid.uuid4().hex[:8]}"


# --- URLs -------------------------------------------------------------------------------------

def test_is_s3() -> None:
    assert storage.is_s3("s3://b/k") and storage.is_s3("S3://b/k")
    assert not storage.is_s3("/tmp/s3://x") and not storage.is_s3("out.tif")
    assert not storage.is_s3(Path("s3:/b/k"))


def test_parse_s3() -> None:
    assert storage.parse_s3("s3://my-bucket/a/b/scene.tif") == ("my-bucket", "a/b/scene.tif")


@pytest.mark.parametrize("url", ["s3://bucket", "s3://bucket/", "s3:///key.tif", "s3://b/key",
                                 "s3://bad_bucket!/k", "http://bucket/key"])
def test_parse_s3_malformed(url: str) -> None:
    with pytest.raises(InputError) as info:
        storage.parse_s3(url)
    message = str(info.value)
    assert url in message and "\n" not in message


# --- client -----------------------------------------------------------------------------------

def test_s3_client_config_and_cache(moto_s3: str) -> None:
    client = storage.s3_client()
    assert storage.s3_client() is client
    assert client.meta.endpoint_url == moto_s3
    retries = client.meta.config.retries
    # botocore normalises max_attempts=5 (retries) to total_max_attempts=6 (attempts).
    assert retries == {"mode": "standard", "total_max_attempts": 6}


# --- round trips on both backends ------------------------------------------------------------

def test_publish_fetch_round_trip(root: str, repo_data, tmp_path: Path) -> None:
    src = repo_data.path(SCENE)
    dst = f"{root}/sub/{SCENE}"
    if not storage.is_s3(dst):
        os.makedirs(os.path.dirname(dst))
    storage.check_destination(dst)
    assert not storage.exists(dst)
    temp = storage.temp_path_for(dst, tmp_path / "scratch")
    shutil.copyfile(src, temp)
    storage.publish(temp, dst)
    assert not os.path.exists(temp)
    assert storage.exists(dst)
    local = storage.fetch(dst, tmp_path / "scratch")
    assert os.path.isfile(local)
    assert sha256(local) == sha256(src)


def test_publish_replaces_existing(root: str, tmp_path: Path) -> None:
    dst = f"{root}/report.json"
    if not storage.is_s3(dst):
        os.makedirs(os.path.dirname(dst))
    for content in (b"first", b"second"):
        temp = storage.temp_path_for(dst, tmp_path / "scratch")
        Path(temp).write_bytes(content)
        storage.publish(temp, dst)
    assert Path(storage.fetch(dst, tmp_path / "scratch")).read_bytes() == b"second"


# --- local ------------------------------------------------------------------------------------

def test_fetch_local_is_returned_as_is(repo_data, tmp_path: Path) -> None:
    src = str(repo_data.path(SCENE))
    assert storage.fetch(src, tmp_path / "scratch") == src
    assert not (tmp_path / "scratch").exists()  # nothing copied


def test_local_publish_is_atomic_rename(tmp_path: Path) -> None:
    dst = tmp_path / "out" / "scene_x2.tif"
    dst.parent.mkdir()
    temp = storage.temp_path_for(str(dst), tmp_path / "scratch")
    # Hidden temporary in the destination's own directory: os.replace is then atomic.
    assert os.path.dirname(temp) == str(dst.parent)
    assert os.path.basename(temp).startswith(".scene_x2.tif.partial-")
    Path(temp).write_bytes(b"x" * 1000)
    inode = os.stat(temp).st_ino
    assert not dst.exists()  # the destination does not exist while the temp is written
    storage.publish(temp, str(dst))
    assert os.listdir(dst.parent) == ["scene_x2.tif"]
    assert os.stat(dst).st_ino == inode  # renamed, not copied
    assert dst.read_bytes() == b"x" * 1000


def test_local_publish_across_file_systems_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        storage.publish(str(tmp_path / "missing.partial"), str(tmp_path / "out.tif"))
    assert "out.tif" in str(info.value)


def test_discard_is_quiet(tmp_path: Path) -> None:
    temp = tmp_path / ".x.partial-1"
    temp.write_bytes(b"1")
    storage.discard(str(temp))
    assert not temp.exists()
    storage.discard(str(temp))  # already gone: no error
    storage.discard(None)


def test_check_destination_local(tmp_path: Path) -> None:
    storage.check_destination(str(tmp_path / "ok.tif"))
    missing = tmp_path / "no" / "such" / "out.tif"
    with pytest.raises(InputError, match="parent directory does not exist") as info:
        storage.check_destination(str(missing))
    assert str(missing) in str(info.value)
    assert not missing.parent.exists()  # not created
    with pytest.raises(InputError, match="is a directory"):
        storage.check_destination(str(tmp_path))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write to any directory")
def test_check_destination_local_not_writable(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            storage.check_destination(str(ro / "out.tif"))
    finally:
        ro.chmod(0o755)


# --- S3 ---------------------------------------------------------------------------------------

def test_fetch_s3_real_scene(bucket: str, repo_data, tmp_path: Path) -> None:
    src = repo_data.path(SCENE)
    boto3.client("s3").upload_file(str(src), bucket, f"in/{SCENE}")
    scratch = tmp_path / "scratch"
    local = storage.fetch(f"s3://{bucket}/in/{SCENE}", scratch)
    assert Path(local).parent == scratch
    assert local.endswith(SCENE)
    assert sha256(local) == sha256(src)
    assert os.listdir(scratch) == [os.path.basename(local)]  # no leftover temporaries


def test_fetch_s3_missing_key_and_bucket(bucket: str, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    for uri in (f"s3://{bucket}/no/such/scene.tif", "s3://no-such-bucket-sr/scene.tif"):
        with pytest.raises(InputError) as info:
            storage.fetch(uri, scratch)
        assert str(info.value) == f"{uri}: no such object"
        assert os.listdir(scratch) == []  # nothing partial left behind
        assert storage.exists(uri) is False


def test_publish_s3_single_part_sha256(bucket: str, repo_data, tmp_path: Path) -> None:
    src = repo_data.path(SCENE)
    dst = f"s3://{bucket}/out/single.tif"
    temp = storage.temp_path_for(dst, tmp_path / "scratch")
    assert Path(temp).parent == tmp_path / "scratch"
    shutil.copyfile(src, temp)
    storage.publish(temp, dst)
    assert not os.path.exists(temp)
    head = boto3.client("s3").head_object(Bucket=bucket, Key="out/single.tif",
                                          ChecksumMode="ENABLED")
    expected = base64.b64encode(hashlib.sha256(src.read_bytes()).digest()).decode()
    assert head["ChecksumSHA256"] == expected
    assert head["ContentLength"] == src.stat().st_size


def test_publish_s3_multipart_sha256(bucket: str, repo_data, tmp_path: Path) -> None:
    # 3 real scenes back to back: ~8.6 MB, uploaded in 5 MiB parts (S3's minimum part size).
    names = [SCENE, "naip_m_4709963_se_14_1_20200831_5m.tif", "landsat7_RGB.byte.tif"]
    payload = b"".join(repo_data.path(n).read_bytes() for n in names)
    dst = f"s3://{bucket}/out/multi.bin"
    temp = storage.temp_path_for(dst, tmp_path / "scratch")
    Path(temp).write_bytes(payload)
    part = 5 * 1024 * 1024
    storage.publish(temp, dst, multipart_threshold=part, multipart_chunksize=part)
    client = boto3.client("s3")
    head = client.head_object(Bucket=bucket, Key="out/multi.bin", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-2")  # really a multipart upload
    # Composite checksum: SHA-256 of the parts' SHA-256 digests. Real S3 appends "-<number of
    # parts>"; moto 5.2 returns the same digest without the suffix.
    digests = b"".join(hashlib.sha256(payload[i:i + part]).digest()
                       for i in range(0, len(payload), part))
    expected = base64.b64encode(hashlib.sha256(digests).digest()).decode()
    assert head["ChecksumSHA256"] in (expected, f"{expected}-2")
    local = storage.fetch(dst, tmp_path / "back")
    assert sha256(local) == hashlib.sha256(payload).hexdigest()


def test_publish_s3_missing_bucket(tmp_path: Path, moto_s3: str) -> None:
    temp = tmp_path / "x.tif"
    temp.write_bytes(b"data")
    dst = "s3://no-such-bucket-sr/out.tif"
    with pytest.raises(InputError) as info:
        storage.publish(str(temp), dst)
    assert str(info.value) == f"{dst}: no such bucket"
    assert temp.exists()  # kept for a retry or discard()


def test_check_destination_s3(bucket: str) -> None:
    storage.check_destination(f"s3://{bucket}/out/scene.tif")
    with pytest.raises(InputError, match="no such bucket"):
        storage.check_destination("s3://no-such-bucket-sr/out.tif")
    with pytest.raises(InputError, match="prefix"):
        storage.check_destination(f"s3://{bucket}/out/")
    with pytest.raises(InputError, match="no key"):
        storage.check_destination(f"s3://{bucket}")


def test_access_denied_is_storage_error(bucket: str, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    client = boto3.client("s3")
    stub = Stubber(client)
    stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
    stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
    monkeypatch.setattr(storage.s3, "s3_client", lambda: client)
    dst = f"s3://{bucket}/secret.tif"
    with stub:
        with pytest.raises(StorageError, match="access denied") as info:
            storage.check_destination(dst)
        assert str(info.value).startswith(dst)
        with pytest.raises(StorageError, match="access denied"):
            storage.exists(dst)


def test_unreachable_endpoint_is_storage_error(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path, moto_s3: str) -> None:
    port = storage_free_port()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                          config=Config(retries={"mode": "standard", "max_attempts": 1},
                                        connect_timeout=2))
    monkeypatch.setattr(storage.s3, "s3_client", lambda: client)
    uri = "s3://bucket/scene.tif"
    with pytest.raises(StorageError) as info:
        storage.fetch(uri, tmp_path / "scratch")
    message = str(info.value)
    assert message.startswith(f"{uri}: ") and "\n" not in message
    assert os.listdir(tmp_path / "scratch") == []


def storage_free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
