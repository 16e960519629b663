"""Clean logs for expected failures (issue #18, item 4): a scene that fails on a user's mistake (a
truncated TIFF) is one log line naming the scene and the reason, without a traceback, in the
``upscale_archive`` flow (the scene's task run fails, the flow run completes, the summary has
the failed row with the seconds it ran) and in the ``upscale_scene`` flow (its run fails). Runs
against Prefect's test harness, listening on the root logger (Prefect's handlers sit between
caplog and its loggers)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import crop_scene

from sr_core.errors import InputError


@contextmanager
def records() -> Iterator[list[logging.LogRecord]]:
    """Every log record that reaches the root logger meanwhile (Prefect's run loggers, sr_core,
    distributed), whatever the root's level."""
    seen: list[logging.LogRecord] = []
    listener = logging.Handler(logging.NOTSET)
    listener.emit = seen.append
    root = logging.getLogger()
    root.addHandler(listener)
    try:
        yield seen
    finally:
        root.removeHandler(listener)


def mentioning(seen: list[logging.LogRecord], text: str) -> list[logging.LogRecord]:
    """The records whose message, or whose task / flow run's name, holds ``text``."""
    return [r for r in seen if text in r.getMessage()
            or text in str(getattr(r, "task_run_name", "")) + str(getattr(r, "flow_run_name", ""))]


def no_traceback(rec: logging.LogRecord) -> bool:
    return rec.exc_info is None and rec.exc_text is None and "Traceback" not in rec.getMessage()


async def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


@pytest.fixture
def broken_tif(repo_data, tmp_path):
    """An archive folder: ``ok/landsat.tif`` (a real crop) and ``bad/broken.tif`` (its first
    3,000 bytes: a truncated TIFF)."""
    root = tmp_path / "archive"
    (root / "ok").mkdir(parents=True)
    (root / "bad").mkdir()
    ok = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), root / "ok" / "landsat.tif",
                    row=200, col=400, height=40, width=48)
    (root / "bad" / "broken.tif").write_bytes(ok.read_bytes()[:3000])
    return root


def test_archive_bad_scene_is_one_log_line(prefect_harness, dask_address, broken_tif, tmp_path):
    from flows.upscale_archive import Cluster, Processing, upscale_archive

    out = tmp_path / "out"
    with records() as seen:
        state = upscale_archive(source=str(broken_tif), output_prefix=str(out),
                                processing=Processing(model="bicubic", tile_size=32,
                                                      wald_window=32),
                                cluster=Cluster(dask_address=dask_address), return_state=True)
    assert state.is_completed(), state.message  # one scene's failure never fails the run
    result = state.result()
    assert (result["done"], result["failed"]) == (1, 1), result

    about = mentioning(seen, "bad/broken")
    loud = [r for r in about if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert "broken.tif" in loud[0].getMessage()  # the reason, naming the file
    assert "\n" not in loud[0].getMessage()
    # nothing about the scene carries a traceback (the run's closing INFO line lists it too)
    assert all(no_traceback(r) for r in about), [r.getMessage() for r in about]
    assert not [r for r in seen if r.levelno >= logging.WARNING and not no_traceback(r)]

    # the task run still fails, alone; the summary rows as before, with the real seconds
    tasks = asyncio.run(_task_runs(state.state_details.flow_run_id))
    assert [t.name for t in tasks if t.state.is_failed()] == ["scene bad/broken"]
    rows = {r["scene_id"]: r for r in
            json.loads((out / "archive-summary.json").read_text())["results"]}
    bad, ok = rows["bad/broken"], rows["ok/landsat"]
    assert bad["status"] == "failed" and "broken.tif" in bad["reason"]
    assert bad["seconds"] > 0 and bad["finished"] >= bad["started"]
    # reason only for skipped and failed scenes; a processed one says why it was processed
    assert ok["status"] == "done" and "reason" not in ok
    assert ok["processed_because"] == "no manifest" and "processed_because" not in bad


def test_scene_flow_bad_input_fails_without_traceback(prefect_harness, dask_address,
                                                      broken_tif, tmp_path):
    from flows.upscale_scene import upscale_scene

    src = broken_tif / "bad" / "broken.tif"
    with records() as seen:
        state = upscale_scene(src=str(src), dst=str(tmp_path / "x2.tif"), model="bicubic",
                              dask_address=dask_address, return_state=True)
    assert state.is_failed() and "broken.tif" in state.message
    about = mentioning(seen, "broken.tif")
    loud = [r for r in about if r.levelno >= logging.WARNING]
    # the failed stage's task run and the flow run each end in one line: no traceback
    assert 1 <= len(loud) <= 2, [r.getMessage() for r in loud]
    assert all(no_traceback(r) for r in about), [r.getMessage() for r in about]
    assert not (tmp_path / "x2.tif").exists()
    # called as a function, the flow raises the user's mistake itself
    with pytest.raises(InputError, match="broken.tif"):
        upscale_scene(src=str(src), dst=str(tmp_path / "x2.tif"), model="bicubic",
                      dask_address=dask_address)
