"""Security (issue 7): no server-side request forgery through a scene, VRT or STAC link; GDAL never
reaches the network by itself; weights pinned by SHA-256 and checked before loading; SSE on
uploads; and no secret in flow parameters, logs, reports, artifacts or scratch leftovers."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import rasterio
from conftest import bucket_with_scene

from sr_core import archive, storage
from sr_core.cli import main
from sr_core.errors import InputError, ModelError
from sr_core.models.registry import build_module
from sr_core.models.weights import load_weights, save_model
from sr_core.storage.security import GDAL_NO_NETWORK, check_source

CLI = str(Path(sys.executable).parent / "sr-pipeline")
S2 = "S2A_29RKH_20200219_L2A_B04.tif"


@pytest.fixture
def http_server():
    """A local HTTP server that records every request it gets (it must get none)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_server_records_hits(http_server):
    """The recorder works: a plain request is seen (so the checks below can fail)."""
    import urllib.error
    import urllib.request

    url, hits = http_server
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{url}/probe.tif", timeout=5)
    assert hits == ["/probe.tif"]


@pytest.mark.parametrize("form", ["vsicurl", "http", "https", "vsis3", "gdal-prefix"])
def test_url_sources_are_refused_and_nothing_is_fetched(form, http_server, tmp_path, capsys):
    url, hits = http_server
    src = {"vsicurl": f"/vsicurl/{url}/x.tif", "http": f"{url}/x.tif",
           "https": url.replace("http", "https") + "/x.tif", "vsis3": "/vsis3/bucket/x.tif",
           "gdal-prefix": f"GTIFF_DIR:1:{url}/x.tif"}[form]
    out = tmp_path / "out"
    out.mkdir()
    argv = ["upscale", src, str(out / "x.tif"), "--model", "bicubic"]
    if form in ("vsicurl", "http"):  # the console script itself for the two examples
        res = subprocess.run([CLI, *argv], capture_output=True, text=True, timeout=120)
        code, err = res.returncode, res.stderr
    else:  # the same entry point in-process
        with pytest.raises(SystemExit) as exc:
            main(argv)
        code, err = exc.value.code, capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sr-pipeline: error: ") and "refused" in lines[0]
    assert "Traceback" not in err
    assert hits == [] and list(out.iterdir()) == []


def test_vrt_with_a_remote_source_fetches_nothing(http_server, tmp_path, repo_data):
    """A VRT renamed .tif is refused by the driver allowlist; and even a direct GDAL open of it
    in an sr_core process does not reach the network (CPL_VSIL_CURL_ALLOWED_EXTENSIONS)."""
    url, hits = http_server
    vrt = tmp_path / "remote.tif"
    vrt.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand '
                   f'dataType="Byte" band="1"><SimpleSource><SourceFilename>/vsicurl/{url}/x.tif'
                   f'</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
                   f'</VRTDataset>')
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([CLI, "upscale", str(vrt), str(out / "x.tif"), "--model", "bicubic"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "not a readable GeoTIFF" in res.stderr
    assert os.environ["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] == GDAL_NO_NETWORK
    with pytest.raises(rasterio.errors.RasterioError), rasterio.open(vrt) as ds:
        ds.read(1)
    assert hits == []
    # without the guard GDAL does fetch (so the check above can fail)
    probe = ("import os, rasterio; os.environ.pop('CPL_VSIL_CURL_ALLOWED_EXTENSIONS', None)\n"
             f"try:\n  rasterio.open({str(vrt)!r}).read(1)\nexcept Exception: pass\n")
    subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
    assert hits, "GDAL without the guard should have tried the URL"


def test_stac_catalog_link_to_http_is_not_followed(http_server, tmp_path):
    url, hits = http_server
    cat = {"type": "Catalog", "id": "c", "stac_version": "1.0.0", "description": "d",
           "links": [{"rel": "child", "href": f"{url}/child/catalog.json"}]}
    (tmp_path / "catalog.json").write_text(json.dumps(cat))
    with pytest.raises(InputError, match="refused|invalid STAC"):  # pystac rewords ours
        archive.list_scenes(str(tmp_path / "catalog.json"))
    assert hits == []


def test_allowed_local_roots(tmp_path, monkeypatch, repo_data):
    inside = tmp_path / "data"
    inside.mkdir()
    (inside / "a.tif").write_bytes(b"x")
    (inside / "link.tif").symlink_to(repo_data.path(S2))  # points outside
    assert check_source(str(inside / "a.tif")) == str(inside / "a.tif")  # default: all local
    monkeypatch.setenv("SR_ALLOWED_LOCAL_ROOTS", str(inside))
    assert check_source(str(inside / "a.tif"))
    assert check_source("s3://bucket/key.tif")
    for path in (repo_data.path(S2), inside / "link.tif", inside / ".." / "x.tif"):
        with pytest.raises(InputError, match="outside the allowed local folders"):
            check_source(str(path))


# ------------------------------------------------------------------------- weights pin

def _espcn(tmp_path: Path) -> Path:
    arguments = {"scale": 2, "in_channels": 1}
    card = {"name": "e-x2", "architecture": "espcn", "arguments": arguments, "scale": 2}
    return save_model(build_module("espcn", **arguments), card, tmp_path / "e.safetensors")


def test_sha256_pin_matches_and_loads(tmp_path):
    path = _espcn(tmp_path)
    state, card = load_weights(path)
    assert len(card["sha256"]) == 64 and state
    card_file = tmp_path / "e.json"
    card_file.write_text(json.dumps({**card, "sha256": "sha256:" + card["sha256"].upper()}))
    assert load_weights(path)[1]["sha256"].startswith("sha256:")


def test_sha256_pin_mismatch_is_refused_before_loading(tmp_path):
    """A corrupted file with a stale pin fails on the pin, not in the safetensors parser: the
    digest is checked before a byte is deserialised."""
    path = _espcn(tmp_path)
    path.write_bytes(b"\x00" * 64)  # not a safetensors file any more
    with pytest.raises(ModelError, match=r"SHA-256 .* differs from the .* its card pins; refusing"
                       ) as info:
        load_weights(path)
    assert "\n" not in str(info.value) and "safetensors" in str(info.value)
    card = json.loads((tmp_path / "e.json").read_text())
    (tmp_path / "e.json").write_text(json.dumps({**card, "sha256": "abc"}))
    with pytest.raises(ModelError, match="'sha256' must be 64 hex digits"):
        load_weights(path)


# --------------------------------------------------------------------------------- SSE

def test_sse_kms_on_uploads(moto_s3, tmp_path, monkeypatch):
    import boto3

    bucket = f"sse-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "f.txt"
    local.write_text("x")
    monkeypatch.setenv("SR_S3_SSE", "aws:kms")
    monkeypatch.setenv("SR_S3_SSE_KMS_KEY_ID", "alias/sr-pipeline-test")
    storage.publish(local, f"s3://{bucket}/out/f.txt")
    head = s3.head_object(Bucket=bucket, Key="out/f.txt")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/sr-pipeline-test")
    monkeypatch.setenv("SR_S3_SSE", "rot13")
    local.write_text("y")
    with pytest.raises(InputError, match="SR_S3_SSE='rot13'"):
        storage.publish(local, f"s3://{bucket}/out/g.txt")
    monkeypatch.delenv("SR_S3_SSE")
    monkeypatch.delenv("SR_S3_SSE_KMS_KEY_ID")
    storage.publish(local, f"s3://{bucket}/out/h.txt")
    assert "SSEKMSKeyId" not in s3.head_object(Bucket=bucket, Key="out/h.txt")


def test_sse_on_the_manifest_and_on_copies(moto_s3, tmp_path, monkeypatch):
    """The manifest's conditional PutObject and the server-side copies that keep a replaced
    publication carry the same SSE settings as uploads."""
    import boto3

    from sr_core.publication import manifest

    bucket = f"sse-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("SR_S3_SSE", "aws:kms")
    monkeypatch.setenv("SR_S3_SSE_KMS_KEY_ID", "alias/sr-pipeline-test")
    muri = f"s3://{bucket}/out/x.manifest.json"
    first = manifest.commit(muri, {"outputs": {}}, None, str(tmp_path))
    manifest.commit(muri, {"outputs": {}, "n": 2}, first, str(tmp_path))  # the If-Match path
    s3.put_object(Bucket=bucket, Key="out/x.tif", Body=b"cog")  # no SSE asked
    storage.copy(f"s3://{bucket}/out/x.tif", f"s3://{bucket}/out/x.previous/output/x.tif")
    for key in ("out/x.manifest.json", "out/x.previous/output/x.tif"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"].endswith("alias/sr-pipeline-test"), key
    assert "SSEKMSKeyId" not in s3.head_object(Bucket=bucket, Key="out/x.tif")


# ----------------------------------------------------------------------------- secrets

ACCESS_KEY = "AKIASRPIPETEST7A0001"
SECRET = "SRPIPE-TEST-SECRET-" + "q7Zx4" * 4


def _scan(root: Path, needles: tuple[str, ...]) -> list[str]:
    """Files under ``root`` whose bytes contain a needle."""
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p}: {n}" for n in needles if n.encode() in data]
    return found


async def _prefect_records(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        tasks = await client.read_task_runs(flow_run_filter=flt)
        artifacts = await client.read_artifacts(flow_run_filter=flt)
        logs = await client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert len(tasks) == 6 and len(artifacts) >= 2
    return "\n".join([run.model_dump_json(), *(t.model_dump_json() for t in tasks),
                      *(a.model_dump_json() for a in artifacts),
                      *(lg.model_dump_json() for lg in logs)])


def test_no_secret_in_flow_outputs_logs_or_prefect(prefect_harness, moto_s3, repo_data,
                                                  dask_address, tmp_path, monkeypatch, capfd,
                                                  caplog):
    import boto3

    from flows.upscale_scene import upscale_scene

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setattr(storage.s3, "_clients", {})  # a client built with these credentials
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("SR_SCRATCH", str(scratch))
    monkeypatch.setenv("SR_KEEP_SCRATCH", "1")  # keep the leftovers to scan them
    # INFO: what the CLI and Prefect log by default (DEBUG of the S3 stack: the next test)
    caplog.set_level(logging.INFO)
    bucket = bucket_with_scene("secrets", repo_data, tmp_path)
    s3 = boto3.client("s3")

    state = upscale_scene(src=f"s3://{bucket}/in/crop.tif", dst=f"s3://{bucket}/out/crop_x2.tif",
                          model="bicubic", tile_size=32, dask_address=dask_address,
                          return_state=True)
    assert state.is_completed(), state.message
    outputs = tmp_path / "outputs"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert len(keys) == 5  # COG, JSON, markdown and HTML reports, manifest
    for key in keys:
        (outputs / key).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(outputs / key))
    with rasterio.open(outputs / "out" / "crop_x2.tif") as ds:
        assert ds.tags()["SR_MODEL"] == "bicubic-x2"  # COG tags are part of the scanned bytes
    assert any(scratch.rglob("*")), "the scratch leftovers were kept for the scan"
    captured = capfd.readouterr()
    prefect_text = asyncio.run(_prefect_records(state.state_details.flow_run_id))
    assert "crop_x2" in prefect_text  # parameters, artifacts and logs were read back
    # the report links are presigned GET URLs (issue #18; SR_PRESIGN_REPORTS=0 turns them off),
    # and a SigV4 presigned URL names the access key id in its credential scope by design (never
    # the secret): that scope is the one place the key id may appear
    import re

    prefect_text, n_scopes = re.subn(r"X-Amz-Credential=[^&\s\"'()\\]+", "X-Amz-Credential=",
                                     prefect_text)
    assert n_scopes >= 2  # the link artifact and the markdown artifact
    needles = (SECRET, ACCESS_KEY)
    leaks = _scan(outputs, needles) + _scan(scratch, needles)
    for where, text in {"stdout": captured.out, "stderr": captured.err, "log": caplog.text,
                        "prefect": prefect_text}.items():
        leaks += [f"{where}: {n}" for n in needles if n in text]
    assert leaks == []
    # the scan bites: a leftover holding the secret would be found
    (scratch / "planted.txt").write_text(f"creds={SECRET}")
    assert _scan(scratch, needles) == [f"{scratch / 'planted.txt'}: {SECRET}"]


TOKEN = "SRPIPE-TEST-SESSION-TOKEN-" + "k3Vw9" * 6


def test_no_secret_in_debug_logs_of_an_s3_upscale(moto_s3, repo_data, dask_address, tmp_path,
                                                   monkeypatch, caplog, capfd):
    """With boto3, botocore, s3transfer and urllib3 logging at DEBUG (botocore then dumps every
    request's headers: the SigV4 Authorization names the access key id, X-Amz-Security-Token
    carries the session token), an S3-to-S3 upscale logs neither the access key id, the secret
    nor the session token: sr_core redacts those records
    (sr_core.storage.security.redact_s3_logs)."""
    from sr_core.pipeline import UpscaleConfig, run_upscale
    from sr_core.storage.security import REDACTED, REDACTED_LOGGERS

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setattr(storage.s3, "_clients", {})  # a client built with these credentials
    bucket = bucket_with_scene("debug", repo_data, tmp_path)
    capfd.readouterr()
    for name in REDACTED_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    run = run_upscale(UpscaleConfig(
        src=f"s3://{bucket}/in/crop.tif", dst=f"s3://{bucket}/out/crop_x2.tif", model="bicubic",
        tile_size_px=32, dask_address=dask_address, progress=False,
        scratch_dir=str(tmp_path / "scratch")))
    assert run.manifest is not None
    text = caplog.text
    captured = capfd.readouterr()
    leaks = [f"{where}: {n}" for where, t in {"log": text, "stdout": captured.out,
                                              "stderr": captured.err}.items()
             for n in (ACCESS_KEY, SECRET, TOKEN) if n in t]
    assert leaks == []
    # the dumps were there: request headers were logged, and credentials in them redacted
    assert "Sending http request" in text and "X-Amz-Security-Token" in text
    assert text.count(REDACTED) >= 4
