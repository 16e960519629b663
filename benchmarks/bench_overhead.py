"""Benchmark: what orchestration costs on a scene of many tiles (Prefect + Dask scheduling).

A mosaic of a real scene (default: the Landsat 7 sample, 3 bands uint8, mirrored repeats up to
1024 x 1024 px) is run through the Prefect flow ``upscale_scene`` with 64 px tiles (256 tiles) on
a local Dask cluster, against a temporary Prefect server started before the clock starts.

* **Prefect overhead**: flow wall time minus the time spent inside sr_core (the six stages,
  waiting for the cluster to start, its teardown, removing the scratch folder): the flow and
  task engines (creating the flow run, state transitions, heartbeats), artifacts;
* **Dask overhead**: the ``infer`` stage's wall time minus the time measured inside the tasks
  (each tile task's wall time, its durable journal markers included, and the Wald check)
  divided by the worker threads: submitting, queueing, sending results back, idle threads;

each as a share of the flow's wall time, with the count of Prefect task runs and Dask tasks.

    .venv/bin/python benchmarks/bench_overhead.py [--edge 1024] [--tile-size 64] [--model espcn-x2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from measure import REPO, build_mosaic


async def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default=str(REPO / "samples/landsat7_RGB.byte.tif"))
    ap.add_argument("--edge", type=int, default=1024)
    ap.add_argument("--tile-size", type=int, default=64)
    ap.add_argument("--model", default="espcn-x2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PREFECT_HOME", os.path.join(tmp, "prefect"))
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        from prefect.testing.utilities import prefect_test_harness

        from flows.upscale_scene import upscale_scene

        src, dst = os.path.join(tmp, "mosaic.tif"), os.path.join(tmp, "mosaic_x2.tif")
        build_mosaic(args.scene, args.edge, src)
        with prefect_test_harness(server_startup_timeout=120):
            logging.getLogger("prefect").setLevel(logging.WARNING)
            t0 = time.perf_counter()
            state = upscale_scene(src=src, dst=dst, model=args.model, tile_size=args.tile_size,
                                  return_state=True)
            flow_wall = time.perf_counter() - t0
            if not state.is_completed():
                raise SystemExit(f"flow run failed: {state.message}")
            tasks = asyncio.run(_task_runs(state.state_details.flow_run_id))
            out = state.result()
        rep = json.loads(Path(tmp, "mosaic_x2.report.json").read_text())
    # every second the flow spends inside sr_core: model load, stages, cluster wait and teardown
    # report_* are parts of the report stage, already inside it
    stages = {k: v for k, v in out["timings_s"].items() if not k.startswith("report_")}
    dask = rep["dask"]
    compute = (dask["tile_compute_s"] + dask["wald_compute_s"]) / max(1, dask["threads"])
    dask_over = stages["infer"] - compute
    prefect_over = flow_wall - sum(stages.values())
    print(f"scene {args.scene} mosaicked to {args.edge} px, model {args.model}, "
          f"{rep['tiling']['tiles']} tiles of {args.tile_size} px, {dask['workers']} worker(s), "
          f"{os.cpu_count()} cores")
    print(f"Prefect task runs: {len(tasks)}; Dask tasks: {dask['tasks']}")
    stage_list = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
    print(f"flow wall {flow_wall:.2f} s; stages {stage_list}")
    print(f"Dask overhead: {dask_over:.2f} s ({dask_over / flow_wall:.1%} of wall); "
          f"Prefect overhead: {prefect_over:.2f} s ({prefect_over / flow_wall:.1%}); "
          f"together {(dask_over + prefect_over) / flow_wall:.1%}")
    print(json.dumps({"benchmark": "orchestration_overhead", "model": args.model,
                      "tiles": rep["tiling"]["tiles"], "prefect_task_runs": len(tasks),
                      "dask_tasks": dask["tasks"], "flow_wall_s": flow_wall, "stages_s": stages,
                      "dask_overhead_s": dask_over, "prefect_overhead_s": prefect_over,
                      "overhead_fraction": (dask_over + prefect_over) / flow_wall}))


if __name__ == "__main__":
    main()
