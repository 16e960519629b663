"""Fault tolerance, each row of the fault table in docs/fault-tolerance.md a test: transient S3
faults (503 SlowDown, connection resets, a body cut off mid-download) injected by an HTTP proxy in
front of ``moto_server`` are retried and the output is identical; a persistent S3 fault and a tile
that kills every worker it touches each fail their own scene after a bounded number of attempts
while the other scenes of the archive finish; a worker killed mid-tile costs nothing; a full
scratch disk is one line, nothing at the destination, scratch cleaned."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import replace

import boto3
import dask
import numpy as np
import pytest
import rasterio
from conftest import REPO, crop_scene
from faults import KILL_ENV, PRELOAD, S3FaultProxy, small_tmpfs, unmount

from sr_core import storage
from sr_core.pipeline import UpscaleConfig, run_upscale

BUCKET = "faults"
SECRET = "SRfaultTestSecretKeyNeverLogged0123456789"
KEY_ID = "AKIASRFAULTTESTKEYID"


def pixels(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def fault_s3(moto_s3, repo_data, tmp_path_factory):
    """The bucket ``faults`` with three real scenes under ``in/`` (crops of Sentinel-2 B04,
    Landsat 7 RGB and NAIP), and a proxy in front of moto; inside the fixture boto3 (and the
    pipeline) talk to the proxy, with credentials that the logs must never show."""
    d = tmp_path_factory.mktemp("fault-scenes")
    scenes = {
        "in/s2.tif": crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), d / "s2.tif",
                                row=300, col=400, height=64, width=64),
        "in/landsat.tif": crop_scene(repo_data.path("landsat7_RGB.byte.tif"), d / "ls.tif",
                                     row=300, col=300, height=64, width=64),
        "in/naip.tif": crop_scene(repo_data.path("naip_m_4709963_se_14_1_20200831_5m.tif"),
                                  d / "naip.tif", row=100, col=100, height=48, width=80),
    }
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for key, path in scenes.items():
        s3.upload_file(str(path), BUCKET, key)
    proxy = S3FaultProxy(moto_s3)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", proxy.url)
            mp.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
            mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
            yield proxy, scenes
    finally:
        proxy.close()


def _retry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "sr_core.storage.retries"]


def test_transient_s3_faults_are_retried(fault_s3, dask_address, tmp_path, caplog):
    """503 SlowDown twice on the source's HEAD (no body: seen as HTTP 503), a reset mid-body on
    its GET, a reset on the output's upload and a 503 on the report's: the scene completes,
    byte-equal to a run without faults, one WARNING line per retry, no credential in any line."""
    proxy, scenes = fault_s3
    proxy.clear()
    cfg = UpscaleConfig(src=f"s3://{BUCKET}/in/s2.tif", dst=f"s3://{BUCKET}/clean/s2.tif",
                        model="espcn", tile_size_px=32, dask_address=dask_address,
                        progress=False, wald_window_px=48)
    run_upscale(cfg)
    assert proxy.count("", outcome="ok") > 0 and proxy.count("", outcome="503") == 0

    proxy.add("503", "/in/s2.tif", method="HEAD", times=2)
    proxy.add("reset-body", "/in/s2.tif", method="GET", times=1)
    proxy.add("reset", "/out/s2.tif", method="PUT", times=1)
    proxy.add("503", "/out/s2.report.json", method="PUT", times=1)
    caplog.set_level(logging.WARNING, logger="sr_core.storage.retries")
    run_upscale(replace(cfg, dst=f"s3://{BUCKET}/out/s2.tif"))
    assert [r.hits for r in proxy.rules] == [2, 1, 1, 1]  # every fault was injected

    local = tmp_path / "dl"
    local.mkdir()
    s3 = boto3.client("s3")
    for name in ("clean", "out"):
        s3.download_file(BUCKET, f"{name}/s2.tif", str(local / f"{name}.tif"))
    assert np.array_equal(pixels(local / "clean.tif"), pixels(local / "out.tif"))

    lines = _retry_lines(caplog)
    assert sum("HeadObject faults/in/s2.tif after HTTP 503" in x for x in lines) == 2, lines
    assert sum("PutObject faults/out/s2.tif after ConnectionClosedError" in x
               for x in lines) == 1, lines
    assert sum("PutObject faults/out/s2.report.json after 503 SlowDown" in x
               for x in lines) == 1, lines
    assert sum(x.startswith("S3 download body failed") for x in lines) == 1, lines
    assert len(lines) == 5 and all("\n" not in x for x in lines)
    text = caplog.text
    assert SECRET not in text and KEY_ID not in text and "Signature=" not in text


def test_persistent_s3_fault_is_bounded(fault_s3, dask_address, tmp_path, caplog, monkeypatch):
    """A source that answers 503 SlowDown to every request: the scene fails with a one-line
    reason after exactly AWS_MAX_ATTEMPTS attempts (here 3, to keep the test short: botocore
    backs off up to 1 + 2 s), each retry logged."""
    proxy, _ = fault_s3
    proxy.clear()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    proxy.add("503", "/in/landsat.tif", times=None)
    caplog.set_level(logging.WARNING, logger="sr_core.storage.retries")
    dst = tmp_path / "landsat_x2.tif"
    with pytest.raises(storage.StorageError) as info:
        run_upscale(UpscaleConfig(src=f"s3://{BUCKET}/in/landsat.tif", dst=str(dst),
                                  model="bicubic", progress=False, dask_address=dask_address))
    message = str(info.value)
    assert message.startswith(f"s3://{BUCKET}/in/landsat.tif: ") and "\n" not in message
    assert message.endswith("S3 error 503: Service Unavailable (gave up after 3 attempts)")
    assert proxy.count("/in/landsat.tif") == 3  # bounded: the first attempt and two retries
    assert len(_retry_lines(caplog)) == 2
    assert not dst.exists() and os.listdir(tmp_path) == []


def test_worker_killed_mid_tile(repo_data, dask_address, tmp_path, caplog, monkeypatch):
    """The worker running tile (1, 1) dies (``os._exit`` right after it wrote the tile's chunk,
    before the task returned): the scheduler runs the tile again on another worker, the scene
    completes and its pixels equal an undisturbed run's; the loss is one WARNING line per tile
    task the worker held."""
    src = crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), tmp_path / "s2.tif",
                     row=500, col=500, height=64, width=64)
    cfg = UpscaleConfig(src=str(src), dst=str(tmp_path / "clean.tif"), model="espcn",
                        tile_size_px=32, dask_address=dask_address, progress=False,
                        wald_window_px=48)
    run_upscale(cfg)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ENV, json.dumps({"shape": [64, 64], "tile": [1, 1],
                                             "once": str(marker)}))
    caplog.set_level(logging.WARNING, logger="sr_core.compute.lost_workers")
    with dask.config.set({"distributed.worker.preload": [PRELOAD]}):
        run = run_upscale(replace(cfg, dst=str(tmp_path / "killed.tif"), dask_address=None,
                                  workers=2))
    assert marker.exists()  # a worker did die
    assert np.array_equal(pixels(tmp_path / "clean.tif"), pixels(tmp_path / "killed.tif"))
    assert len(run.tiles) == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "sr_core.compute.lost_workers"]
    # Dask counts the death against every task assigned to the worker: the tile it was running
    # and, when the scheduler had queued one there too, that one (each run again, each a line)
    line = "Dask worker died with {} tile ({}, {}) assigned (1 of at most 3 workers); Dask runs " \
           "it again (retry 1 of 2)"
    assert line.format(src, 1, 1) in lines, lines
    assert 1 <= len(lines) <= 2 and len(set(lines)) == len(lines)
    assert all(any(x == line.format(src, r, c) for r in (0, 1) for c in (0, 1)) for x in lines)


def test_archive_isolates_persistent_faults(prefect_harness, fault_s3, tmp_path, monkeypatch):
    """The archive flow on S3 (through the fault proxy) with its own LocalCluster: one scene's
    source answers 503 SlowDown to every request, another scene has a tile that kills every
    worker running it. Each of the two fails with a one-line reason after a bounded number of
    attempts (3 S3 requests; 3 workers), nothing of theirs is published, and the third scene is
    done: the archive does not stall."""
    from flows.upscale_archive import Cluster, Processing, upscale_archive

    proxy, _ = fault_s3
    proxy.clear()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv(KILL_ENV, json.dumps({"shape": [48, 80], "tile": [0, 1], "once": None}))
    proxy.add("503", "/in/landsat.tif", times=None)
    # Prefect's logging set-up sits between caplog and the loggers here: listen directly
    seen: list[logging.LogRecord] = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = seen.append
    logging.getLogger("sr_core.compute.lost_workers").addHandler(listener)
    out = f"s3://{BUCKET}/arch-out"
    with dask.config.set({"distributed.worker.preload": [PRELOAD]}):
        result = upscale_archive(source=f"s3://{BUCKET}/in/**/*.tif", output_prefix=out,
                                 processing=Processing(model="espcn", tile_size=32,
                                                       wald_window=48),
                                 cluster=Cluster(workers=2), max_scenes_in_flight=2)
    assert (result["done"], result["failed"]) == (1, 2), result
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key="arch-out/archive-summary.json")
    rows = {r["scene_id"]: r for r in json.loads(body["Body"].read())["results"]}
    assert rows["s2"]["status"] == "done"
    landsat, naip = rows["landsat"], rows["naip"]
    assert landsat["status"] == "failed" and naip["status"] == "failed"
    # a HEAD answer has no body, so S3's own words are the status line's
    assert landsat["reason"] == f"s3://{BUCKET}/in/landsat.tif: S3 error 503: Service " \
                                "Unavailable (gave up after 3 attempts)", landsat
    assert re.fullmatch(rf"s3://{BUCKET}/in/naip.tif: Dask workers kept dying while running "
                        r"tile \(\d, \d\) \(3 died with it assigned\); gave up",
                        naip["reason"]), naip
    # two operations reach the object (the archive reads its first bytes to name the output,
    # then the scene fetches it): each bounded, the first attempt and two retries
    tried = sorted(m for m, p, o in proxy.requests if "/in/landsat.tif" in p)
    assert tried == ["GET"] * 3 + ["HEAD"] * 3, tried
    logging.getLogger("sr_core.compute.lost_workers").removeHandler(listener)
    lost = [r.getMessage() for r in seen]
    # every worker death is logged for the poison tile (a tile waiting on the same worker
    # may be logged beside it: Dask counts the loss against every task assigned there)
    poison = [x for x in lost if "naip.tif tile (0, 1)" in x]
    assert [re.search(r"\((\d) of at most 3 workers\); (.*)$", x).groups() for x in poison] == [
        ("1", "Dask runs it again (retry 1 of 2)"), ("2", "Dask runs it again (retry 2 of 2)"),
        ("3", "giving up")], lost
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix="arch-out/").get("Contents", [])]
    assert any(k.startswith("arch-out/s2/espcn_x2/s2.tif") for k in keys)
    assert not [k for k in keys if k.startswith(("arch-out/landsat/", "arch-out/naip/"))], keys


def test_scratch_disk_full(repo_data, tmp_path):
    """``sr-pipeline upscale`` with its scratch directory on a 2 MiB tmpfs (a real file system
    that fills up: ENOSPC) and a scene whose Zarr tiles need more (NAIP 720x720x4 uint8, 8 MB of
    output pixels): exit 1 with one line naming
    the full directory, nothing at the destination, the scratch file system empty afterwards."""
    mnt = tmp_path / "small-disk"
    why = small_tmpfs(str(mnt), "2m")
    if why is not None:
        pytest.skip(f"cannot mount a tmpfs here ({why}); CI runs as root and can")
    try:
        src = crop_scene(repo_data.path("naip_m_4709963_se_14_1_20200831_5m.tif"),
                         tmp_path / "naip.tif", row=0, col=0, height=720, width=720)
        dst = tmp_path / "out" / "naip_x2.tif"
        dst.parent.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        res = subprocess.run([sys.executable, "-m", "sr_core.cli", "upscale", str(src), str(dst),
                              "--model", "bicubic", "--tile-size", "256", "--workers", "1",
                              "--scratch-dir", str(mnt), "--no-progress"],
                             capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
        err = res.stderr.strip()
        assert res.returncode == 1, (res.returncode, err[-3000:])
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err[-3000:]
        assert "no space left" in err.lower() and str(mnt) in err, err
        assert os.listdir(dst.parent) == []  # no output, no report, no partial file
        assert os.listdir(mnt) == []  # the run's scratch directory is gone
    finally:
        unmount(str(mnt))
