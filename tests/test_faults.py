"""Fault tolerance, each row of the README's fault table a test: transient S3 faults (503
SlowDown, connection resets, a body cut off mid-download) injected by an HTTP proxy in front of
``moto_server`` are retried and the output is identical; a persistent S3 fault and a tile that
kills every worker it touches each fail their own scene after a bounded number of attempts
while the other scenes of the archive finish; a worker killed mid-tile costs nothing; a full
scratch disk is one line, nothing at the destination, scratch cleaned."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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
            if r.levelno == logging.WARNING and r.name == "sr_core.retries"]


def test_transient_s3_faults_are_retried(fault_s3, dask_address, tmp_path, caplog):
    """503 SlowDown twice on the source's HEAD (no body: seen as HTTP 503), a reset mid-body on its GET, a reset on the
    output's upload and a 503 on the report's: the scene completes, byte-equal to a run without
    faults, one WARNING line per retry, no credential in any line."""
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
    caplog.set_level(logging.WARNING, logger="sr_core.retries")
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
    caplog.set_level(logging.WARNING, logger="sr_core.retries")
    dst = tmp_path / "landsat_x2.tif"
    with pytest.raises(storage.StorageError) as info:
        run_upscale(UpscaleConfig(src=f"s3://{BUCKET}/in/landsat.tif", dst=str(dst),
                                  model="bicubic", progress=False, dask_address=dask_address))
    message = str(info.value)
    assert message.startswith(f"s3://{BUCKET}/in/landsat.tif: ") and "\n" not in message
    assert "SlowDown" in message or "503" in message
    assert proxy.count("/in/landsat.tif") == 3  # bounded: the first attempt and two retries
    assert len(_retry_lines(caplog)) == 2
    assert not dst.exists() and os.listdir(tmp_path) == []
