"""Shared fixtures: real test scenes and an S3 endpoint on loopback (moto_server subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RepoData:
    """Where the real test scenes lie (provenance in each folder's PROVENANCE.md).

    Attributes:
        tests: ``tests/data`` (Sentinel-2 B04 uint16, NAIP 4-band uint8, Copernicus DEM float32).
        samples: ``samples/`` (the demo scene ``landsat7_RGB.byte.tif``).
    """

    tests: Path
    samples: Path

    def path(self, name: str) -> Path:
        """The file called ``name`` in ``tests/data`` or ``samples/``."""
        for folder in (self.tests, self.samples):
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(f"{name}: not in {self.tests} or {self.samples}")


@pytest.fixture(scope="session")
def repo_data() -> RepoData:
    """Paths of ``tests/data`` and ``samples/``."""
    return RepoData(tests=REPO / "tests" / "data", samples=REPO / "samples")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_exe() -> str:
    candidate = Path(sys.executable).parent / "moto_server"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("moto_server")
    if found is None:
        pytest.fail("moto_server not installed: run the README's test command (it installs the "
                    "test extras, moto[server] among them)")
    return found


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 HTTP endpoint on loopback: ``moto_server`` run as a subprocess.

    A subprocess rather than moto's in-process ``ThreadedMotoServer``: GDAL holds the GIL while it
    uploads a ``/vsis3/`` file, which deadlocks an in-process server. For the session, sets
    ``AWS_ENDPOINT_URL`` (read by boto3, s3fs, obstore), dummy credentials and
    ``AWS_DEFAULT_REGION=us-east-1``; the previous environment is restored afterwards.

    Yields:
        The endpoint URL, ``http://127.0.0.1:PORT``.
    """
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([_moto_server_exe(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint} within 30 s"
                                       ) from None
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as mp:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(name, raising=False)
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            # Never pick up a developer's real config or credentials files.
            mp.setenv("AWS_CONFIG_FILE", os.devnull)
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Dask cluster with two worker processes (one thread each), shared by the tests that
    run the pipeline, so tile writes from different processes are exercised.

    Yields:
        The scheduler address (``tcp://127.0.0.1:PORT``).
    """
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR,
                           local_directory=str(tmp_path_factory.mktemp("dask")))
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def crop_scene(src_path: Path, dst_path: Path, *, row: int, col: int, height: int, width: int
               ) -> Path:
    """Write a window of a real scene as a new GeoTIFF, georeferencing, nodata, masks, band
    descriptions and colour interpretation kept (the window's own affine transform)."""
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window

    win = Window(col, row, width, height)
    with rasterio.open(src_path) as src:
        profile = {k: v for k, v in src.profile.items()
                   if k not in ("blockxsize", "blockysize", "tiled", "compress", "interleave")}
        profile.update(driver="GTiff", width=width, height=height,
                       transform=src.window_transform(win))
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.colorinterp = src.colorinterp
            for b in range(1, src.count + 1):
                if src.descriptions[b - 1]:
                    dst.set_band_description(b, src.descriptions[b - 1])
            if src.nodata is None and MaskFlags.per_dataset in src.mask_flag_enums[0] \
                    and MaskFlags.all_valid not in src.mask_flag_enums[0]:
                dst.write_mask(src.dataset_mask(window=win))
    return dst_path


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test harness (a temporary local server, ~15 s to start) for one test module."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``sr_core.cli.main(argv)`` in-process: ``(exit status, stdout, stderr)``."""
    from sr_core.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


#: Real medical files in tests/data/medical (see PROVENANCE.md) and pydicom's bundled test files.
MED = Path(__file__).resolve().parent / "data" / "medical"
SVS = MED / "CMU-1-Small-Region.svs"
EX4D = MED / "example4d.nii.gz"
SERIES = MED / "CT5N"


def pydicom_file(name: str) -> Path:
    """A DICOM file bundled with pydicom (``CT_small.dcm``, ``MR_small.dcm``)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


@pytest.fixture(autouse=True)
def stac_items_valid(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """Every STAC item a test makes in this process (:func:`sr_core.archive.stac_item` as
    :func:`sr_core.archive.process_scene` calls it, the
    archive flow's task threads included) is validated when the test ends against the STAC 1.1.0
    Item schema and its declared extensions' schemas, bundled in ``tests/data/stac-schemas``
    (``tests/stac_schemas.py``); an invalid one fails the test.

    Yields:
        The items made so far in this test.
    """
    from stac_schemas import stac_item_problems

    from sr_core.archive import scenes

    items: list[dict] = []
    make = scenes.stac_item

    def recorded(*args, **kwargs) -> dict:
        item = make(*args, **kwargs)
        items.append(json.loads(json.dumps(item)))  # as written (tuples become arrays)
        return item

    monkeypatch.setattr(scenes, "stac_item", recorded)
    yield items
    bad = [f"{item.get('id')}: {p}" for item in items for p in stac_item_problems(item)]
    if bad:
        pytest.fail("invalid STAC item(s):\n" + "\n".join(bad), pytrace=False)


def bucket_with_scene(prefix: str, repo_data, tmp_path: Path) -> str:
    """A new bucket on moto_server (the ``moto_s3`` fixture must be active) holding a 64 x 64
    crop of the Sentinel-2 B04 scene as ``in/crop.tif``; returns the bucket's name."""
    import uuid

    import boto3

    bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    crop = crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), tmp_path / "crop.tif",
                      row=300, col=300, height=64, width=64)
    s3.upload_file(str(crop), bucket, "in/crop.tif")
    return bucket
