"""Resume, all-or-nothing publication and concurrency, with real processes.

The CLI runs as a subprocess against a Dask cluster of real ``dask scheduler`` / ``dask worker``
processes that the tests kill with SIGKILL: the CLI process, the scheduler, a worker. A rerun must
finish with pixels byte-equal to an uninterrupted run and redo only the tiles whose completion
marker is missing. Crashes between the steps of a publication (``SR_CRASH_AT``) must leave either
the complete previous publication or the complete new one, as its manifest describes it, or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import REPO, _free_port, crop_scene

from sr_core import storage
from sr_core.errors import BusyError
from sr_core.pipeline import UpscaleConfig, run_upscale
from sr_core.publication import manifest

ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
DASK = str(Path(sys.executable).parent / "dask")
TILE = 16  # a 64 x 64 crop: 16 tiles


class Cluster:
    """A scheduler and one worker (with its nanny), each a real process this test can kill."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.start()

    def start(self) -> None:
        from distributed import Client

        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        log = open(self.folder / f"cluster-{port}.log", "wb")  # noqa: SIM115
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        self.worker = subprocess.Popen(
            [DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard",
             "--local-directory", str(self.folder)], stdout=log, stderr=subprocess.STDOUT,
            env=ENV, start_new_session=True)
        self.procs += [self.scheduler, self.worker]
        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=120)

    def worker_pid(self) -> int:
        from distributed import Client

        with Client(self.address, timeout="20s") as client:
            (pid,) = client.run(os.getpid).values()
        return pid

    def stop(self) -> None:
        """Stop every process of the cluster (each started in its own process group, so the
        worker process under the nanny goes too)."""
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def scene(repo_data, tmp_path_factory) -> Path:
    """A 64 x 64 Sentinel-2 window (uint16, every pixel valid): 16 tiles of 16 px."""
    return crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"),
                      tmp_path_factory.mktemp("scene") / "s2.tif",
                      row=400, col=380, height=64, width=64)


@pytest.fixture(scope="module")
def reference(scene, cluster, tmp_path_factory) -> dict[str, np.ndarray]:
    """Uninterrupted runs (in-process), per model: the pixels every resumed run must equal."""
    out = {}
    folder = tmp_path_factory.mktemp("reference")
    for model in ("edsr-x2", "espcn-x2"):
        dst = folder / f"{model}.tif"
        run = run_upscale(UpscaleConfig(src=str(scene), dst=str(dst), model=model,
                                        tile_size_px=TILE, dask_address=cluster.address,
                                        progress=False, scratch_dir=str(folder / "scratch")))
        assert run.resume == {"staging_reused": False, "tiles": 16, "tiles_run": 16,
                              "tiles_reused": 0, "tiles_all_nodata": 0}
        out[model] = read(dst)
    return out


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def cli(src, dst, scratch, address, model="edsr-x2", **env) -> list[str]:
    return [sys.executable, "-m", "sr_core.cli", "upscale", str(src), str(dst), "--model", model,
            "--tile-size", str(TILE), "--no-progress", "--scratch-dir", str(scratch),
            "--dask-address", address]


def run_cli(args, timeout=240, **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **env})


def markers(scratch: Path) -> int:
    return sum(1 for _ in scratch.glob("sr-work/*/tiles/*.json"))


def wait_markers(scratch: Path, n: int, proc: subprocess.Popen, timeout=180) -> None:
    deadline = time.monotonic() + timeout
    while markers(scratch) < n:
        assert proc.poll() is None, f"run ended before {n} tiles: {proc.communicate()}"
        assert time.monotonic() < deadline, "tiles did not complete in time"
        time.sleep(0.05)


def settle(scratch: Path) -> int:
    """The marker count once no task of a dead client writes any more (stable for 2 s)."""
    last, since = markers(scratch), time.monotonic()
    while time.monotonic() - since < 2:
        time.sleep(0.2)
        if markers(scratch) != last:
            last, since = markers(scratch), time.monotonic()
    return last


def report_of(dst: Path) -> dict:
    return json.loads(dst.with_suffix(".report.json").read_text())


def assert_resumed(res, dst, done, reference):
    assert res.returncode == 0, res.stderr
    rep = report_of(dst)
    assert rep["resume"]["tiles_reused"] == done and rep["resume"]["staging_reused"]
    assert rep["resume"]["tiles_run"] == 16 - done
    np.testing.assert_array_equal(read(dst), reference)  # byte-equal pixels
    assert state(dst) == "edsr-x2"


def digest(uri: str) -> tuple[int, str]:
    """Size and SHA-256 of a local file or an S3 object (read whole: small test outputs)."""
    if storage.is_s3(uri):
        bucket, key = storage.parse_s3(uri)
        data = storage.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return len(data), hashlib.sha256(data).hexdigest()
    return os.path.getsize(uri), storage.sha256_file(uri)


def published(dst: Path | str) -> tuple[str | None, dict]:
    """The model of the complete publication at ``dst`` and its outputs (name -> SHA-256), read
    from its manifest after checking that every output it lists exists with its size and
    SHA-256; ``(None, {})`` when no manifest lists outputs. A manifest listing a file that
    differs fails the test: that is the torn state the guarantee rules out."""
    found = manifest.read(manifest.manifest_uri(str(dst)))
    if found is None or not found.doc.get("outputs"):
        return None, {}
    for name, entry in found.doc["outputs"].items():
        assert digest(entry["uri"]) == (entry["bytes"], entry["sha256"]), \
            f"{name} ({entry['uri']}) differs from its manifest"
    return (found.doc["parameters"]["model"],
            {n: e["sha256"] for n, e in found.doc["outputs"].items()})


def state(dst: Path | str) -> str | None:
    """The model of the complete publication at ``dst`` (see :func:`published`)."""
    return published(dst)[0]


def test_kill_cli_mid_run_then_rerun_resumes(scene, cluster, reference, tmp_path):
    """kill -9 of the CLI (flow) process part-way: the rerun reuses every recorded tile."""
    dst, scratch = tmp_path / "out.tif", tmp_path / "scratch"
    proc = subprocess.Popen(cli(scene, dst, scratch, cluster.address), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_markers(scratch, 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = settle(scratch)
    assert 3 <= done < 16 and not dst.exists()
    res = run_cli(cli(scene, dst, scratch, cluster.address))
    assert_resumed(res, dst, done, reference["edsr-x2"])
    assert list((scratch / "sr-work").iterdir()) == [], "work directory removed after publishing"


def test_kill_scheduler_then_rerun_resumes(scene, reference, tmp_path):
    """kill -9 of the Dask scheduler: the run fails with one line; a rerun on a new cluster
    resumes."""
    dst, scratch = tmp_path / "out.tif", tmp_path / "scratch"
    c = Cluster(tmp_path)
    try:
        proc = subprocess.Popen(cli(scene, dst, scratch, c.address), env=ENV, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_markers(scratch, 3, proc)
        os.kill(c.scheduler.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 1
        assert err.strip().splitlines()[-1].startswith("sr-pipeline: error: ") and \
            "lost the connection to the Dask scheduler" in err and "Traceback" not in err
        c.stop()
        done = settle(scratch)
        assert 3 <= done < 16 and state(dst) is None
        c.start()
        res = run_cli(cli(scene, dst, scratch, c.address))
        assert_resumed(res, dst, done, reference["edsr-x2"])
    finally:
        c.stop()


def test_worker_killed_mid_tile(scene, cluster, reference, tmp_path):
    """kill -9 of the worker process mid-run: its nanny restarts it, Dask runs the lost tiles
    again, the output equals the uninterrupted run."""
    dst, scratch = tmp_path / "out.tif", tmp_path / "scratch"
    pid = cluster.worker_pid()
    proc = subprocess.Popen(cli(scene, dst, scratch, cluster.address), env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_markers(scratch, 3, proc)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert cluster.worker_pid() != pid
    np.testing.assert_array_equal(read(dst), reference["edsr-x2"])
    assert report_of(dst)["resume"]["tiles_run"] == 16 and state(dst) == "edsr-x2"


def test_two_concurrent_runs_publish_once(scene, cluster, reference, tmp_path):
    """Two CLI processes started together on one scene and DST: one publishes, the other exits
    with one line saying another run holds it (75) or, if it came after, that DST is up to
    date (0)."""
    dst, scratch = tmp_path / "out.tif", tmp_path / "scratch"
    procs = [subprocess.Popen(cli(scene, dst, scratch, cluster.address, model="espcn-x2"),
                              env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    published = [r for r in results if r[0] == 0 and "COG:" in r[1]]
    others = [r for r in results if r not in published]
    assert len(published) == 1 and len(others) == 1, results
    code, out, err = others[0]
    if code == 75:
        assert err.strip().splitlines() == [err.strip()] and err.startswith("sr-pipeline: busy: ")
        assert "another run (pid " in err
    else:
        assert code == 0 and out.startswith("up to date: "), others
    np.testing.assert_array_equal(read(dst), reference["espcn-x2"])
    assert state(dst) == "espcn-x2"


STEPS = [("stitched", "bicubic-x2"), ("preserved", "bicubic-x2"),
         ("published:output", "bicubic-x2"), ("published:report_json", "bicubic-x2"),
         ("manifest", "espcn-x2")]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_crash_at_each_publication_step(where, scene, cluster, reference, tmp_path, request):
    """A complete publication (bicubic) is replaced by another (ESPCN) by runs that crash
    (``os._exit``) after each step in turn: after each crash DST's manifest lists files whose
    size and SHA-256 match it and that are either the complete previous publication (the same
    SHA-256 as before, kept under side names while the fixed names are rewritten) or the
    complete new one; never none, never a torn one. Each rerun resumes: the tiles are run once in
    all. Then a rerun is up to date, and an uninterrupted replacement back to bicubic removes the
    side copies. Locally (hard links) and on S3 (moto_server; server-side copies)."""
    scratch = tmp_path / "scratch"
    if where == "s3":
        import uuid

        import boto3

        request.getfixturevalue("moto_s3")
        bucket = f"sr-replace-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        dst = f"s3://{bucket}/out/s2.tif"
    else:
        dst = str(tmp_path / "out.tif")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}  # moto's too
    side = manifest.previous_uri(dst)

    def upscale(model):
        return run_upscale(UpscaleConfig(src=str(scene), dst=dst, model=model,
                                         tile_size_px=TILE, dask_address=cluster.address,
                                         progress=False, scratch_dir=str(scratch)))

    upscale("bicubic")
    old_model, old = published(dst)
    assert old_model == "bicubic-x2" and set(old) == {"output", "report_json", "report_md",
                                                      "report_html"}
    for step, expected in STEPS:
        res = subprocess.run(cli(scene, dst, scratch, cluster.address, model="espcn-x2"),
                             capture_output=True, text=True, timeout=240,
                             env={**env, "SR_CRASH_AT": step})
        assert res.returncode == 86, (step, res.stderr)
        model, outputs = published(dst)
        assert model == expected, step
        if expected == "bicubic-x2":  # the previous publication, byte for byte
            assert outputs == old, step
            kept = step != "stitched"  # from "preserved" on, listed under the side name
            uris = [e["uri"] for e in manifest.read(manifest.manifest_uri(dst)).doc[
                "outputs"].values()]
            assert all(u.startswith(side + "/") == kept for u in uris), (step, uris)
    new_model, new = published(dst)
    assert new_model == "espcn-x2" and set(new) == set(old) and new["output"] != old["output"]
    local_cog = dst
    if where == "s3":
        local_cog = str(tmp_path / "published.tif")
        storage.s3_client().download_file(bucket, "out/s2.tif", local_cog)
    np.testing.assert_array_equal(read(local_cog), reference["espcn-x2"])
    rep = json.loads(storage.read_text(manifest.strip_ext(dst) + ".report.json"))
    assert rep["resume"] == {"staging_reused": True, "tiles": 16, "tiles_run": 0,
                             "tiles_reused": 16, "tiles_all_nodata": 0}
    if where == "local":
        assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name], \
            "temporaries of killed runs are swept"
    res = subprocess.run(cli(scene, dst, scratch, cluster.address, model="espcn-x2"),
                         capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0 and res.stdout.startswith("up to date: "), res
    # the crash after the manifest left the (unlisted) copies; the next replacement removes them
    assert _count(side) == 4
    upscale("bicubic")
    assert published(dst)[0] == "bicubic-x2" and _count(side) == 0


def _count(uri: str) -> int:
    """Files under a local folder or S3 prefix."""
    if storage.is_s3(uri):
        return sum(1 for _ in storage.list_s3(uri + "/"))
    return sum(len(f) for _, _, f in os.walk(uri))


def test_s3_manifest_conditional_write(scene, cluster, moto_s3, tmp_path):
    """S3: outputs uploaded with SHA-256 checksums, the manifest last with If-None-Match / If-Match:
    a second writer that read the same (absent or old) manifest loses."""
    import uuid

    import boto3

    bucket = f"sr-resume-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    dst = f"s3://{bucket}/out/s2.tif"
    run = run_upscale(UpscaleConfig(src=str(scene), dst=dst, model="bicubic", tile_size_px=TILE,
                                    dask_address=cluster.address, progress=False,
                                    scratch_dir=str(tmp_path)))
    muri = manifest.manifest_uri(dst)
    assert run.published["manifest"] == muri
    found = manifest.read(muri)
    entry = found.doc["outputs"]["output"]
    head = s3.head_object(Bucket=bucket, Key="out/s2.tif", ChecksumMode="ENABLED")
    assert head["ContentLength"] == entry["bytes"] and head.get("ChecksumSHA256")
    assert manifest.missing_output(found.doc) is None
    # a writer that saw no manifest, and one that saw an older one, both lose
    with pytest.raises(BusyError, match="another run published this destination first"):
        manifest.commit(muri, {"x": 1}, None, str(tmp_path))
    stale = manifest.Existing(found.doc, found.text, '"0123"')
    with pytest.raises(BusyError):
        manifest.commit(muri, {"x": 1}, stale, str(tmp_path))
    assert manifest.read(muri).text == found.text
    # the writer holding the current ETag wins
    manifest.commit(muri, {**found.doc, "note": "replaced"}, found, str(tmp_path))
    assert manifest.read(muri).doc["note"] == "replaced"


def test_tile_markers_follow_durable_chunks(scene, tmp_path, monkeypatch):
    """A tile's marker counts only once its chunks are on disk: every ``os.fsync`` and
    ``os.replace`` of a run (its Dask worker threads in this process) is recorded; each marker's
    rename comes after the fsync of both its output chunk files (image and validity) and of its
    own temporary file, and is followed by the fsync of the ``tiles`` folder; ``staged.json``
    comes after the fsync of the staged store's chunks. (Page cache is lost by a power loss or
    kernel crash, not by ``kill -9``, so this is checked by the order of the calls.)"""
    from distributed import LocalCluster

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.path.abspath(os.fspath(dst))))
        return real_replace(src, dst, **kw)

    scratch = tmp_path / "scratch"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc:
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        run = run_upscale(UpscaleConfig(src=str(scene), dst=str(tmp_path / "out.tif"),
                                        model="bicubic", tile_size_px=32,
                                        dask_address=lc.scheduler_address, progress=False,
                                        scratch_dir=str(scratch)))
        monkeypatch.undo()
    assert run.resume["tiles_run"] == 4
    work = str(scratch / "sr-work" / run.work_key)

    for row in range(2):
        for col in range(2):
            marker = os.path.join(work, "tiles", f"r{row}_c{col}.json")
            at = events.index(("replace", marker))
            before = [p for kind, p in events[:at] if kind == "fsync"]
            for array in ("image", "valid"):
                chunk = os.path.join(work, "output.zarr", array, "c", "0", str(row), str(col))
                assert chunk in before, f"{chunk} not flushed before its marker"
            assert before[-1].startswith(marker + ".tmp-"), "marker content flushed first"
            assert events[at + 1] == ("fsync", os.path.join(work, "tiles"))
    staged = events.index(("replace", os.path.join(work, "staged.json")))
    assert os.path.join(work, "input.zarr", "image", "c", "0", "0", "0") in \
        [p for kind, p in events[:staged] if kind == "fsync"]


@pytest.fixture
def s3_dst(moto_s3):
    """A fresh bucket on moto_server and a DST in it."""
    import uuid

    import boto3

    bucket = f"sr-claim-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/out/s2.tif"


def test_run_without_shared_journal_never_overwrites_a_publication(scene, cluster, s3_dst,
                                                                    tmp_path):
    """Two runs on one scene and S3 DST that share no journal (two scratch folders, as on two
    hosts): run A computes; before it publishes, run B (a CLI process) publishes. A then stops
    with BusyError before writing anything at DST: B's publication stays complete (every file
    its manifest lists has its size and SHA-256), and A's files never reached DST."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    other: list[subprocess.CompletedProcess] = []

    def b_publishes_first(run):
        other.append(subprocess.run(
            cli(scene, s3_dst, tmp_path / "scratch-b", cluster.address, model="bicubic"),
            capture_output=True, text=True, timeout=240, env=env))
        return {}

    with pytest.raises(BusyError) as info:
        run_upscale(UpscaleConfig(src=str(scene), dst=s3_dst, model="bicubic",
                                  tile_size_px=TILE, dask_address=cluster.address,
                                  progress=False, scratch_dir=str(tmp_path / "scratch-a")),
                    extra=b_publishes_first)
    assert other[0].returncode == 0, other[0].stderr
    model, outputs = published(s3_dst)  # B's, intact
    b_report = json.loads(storage.read_text(manifest.strip_ext(s3_dst) + ".report.json"))
    assert model == "bicubic-x2" and b_report["resume"]["tiles_run"] == 16
    assert digest(manifest.strip_ext(s3_dst) + ".report.json")[1] == outputs["report_json"]
    assert not storage.exists(manifest.strip_ext(s3_dst) + ".claim.json"), "claim released"
    assert "another run published this destination meanwhile" in str(info.value)


def test_live_claim_of_another_host_is_respected_and_a_stale_one_taken_over(
        scene, cluster, s3_dst, tmp_path):
    """A claim held by a live run on another host (not expired) stops a run before it writes
    anything at DST, with one line naming that host; once the claim has expired, a run takes it
    over, publishes and removes it."""
    import time

    from sr_core.publication import claim

    bucket, _ = storage.parse_s3(s3_dst)
    curi = claim.claim_uri(s3_dst)
    key = storage.parse_s3(curi)[1]
    s3 = storage.s3_client()

    def hold(expires):
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(
            {"owner": "x", "host": "other-host", "pid": 1, "expires": expires}).encode())

    def upscale():
        return run_upscale(UpscaleConfig(src=str(scene), dst=s3_dst, model="bicubic",
                                         tile_size_px=TILE, dask_address=cluster.address,
                                         progress=False, scratch_dir=str(tmp_path)))

    hold(time.time() + 600)
    with pytest.raises(BusyError, match=r"another run \(pid 1 on other-host\) is publishing") \
            as info:
        upscale()
    assert "\n" not in str(info.value)
    keys = [k for k, _, _ in storage.list_s3(f"s3://{bucket}/")]
    assert keys == [key], "nothing written at DST but the other run's claim"
    hold(time.time() - 1)  # expired: the run that held it died
    run = upscale()
    assert run.manifest is not None and state(s3_dst) == "bicubic-x2"
    assert not storage.exists(curi)
