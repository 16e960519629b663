#!/bin/sh
# Register sr-pipeline's Prefect deployments on the server at $PREFECT_API_URL; idempotent (run on
# every start of the compose stack, as a Kubernetes Job, and by tests/test_infra_stack.py).
# Run from the repository root (the image's /opt/sr-pipeline): `prefect deploy` records this
# directory, and the process worker runs the flows from the same path.
#
#   SR_WORK_POOL      process work pool (default sr-process, as in deployments/prefect.yaml)
#   SR_GPU_SLOTS      slots of the `sr-gpu` global concurrency limit (default 1)
#   SR_DASK_ADDRESS   Dask scheduler the deployments use by default (empty: a LocalCluster per run)
#   SR_DASK_GPU       true: nightly-archive's tile tasks need the Dask resource GPU=1 (GPU workers)
#   SR_ARCHIVE_SOURCE, SR_ARCHIVE_OUTPUT   nightly-archive's source and output prefix (optional);
#                     with both set its 02:00 schedule is activated, else it stays paused (as
#                     deployments/prefect.yaml deploys it, so that it never runs on placeholders)
set -eu
pool=${SR_WORK_POOL:-sr-process}
slots=${SR_GPU_SLOTS:-1}
file=deployments/prefect.yaml

prefect work-pool create "$pool" --type process --overwrite
prefect gcl create sr-gpu --limit "$slots" 2>/dev/null || prefect gcl update sr-gpu --limit "$slots"

# default parameters from the environment, as JSON (json.dumps quotes whatever the values hold)
params() {
    python -c 'import json, os, sys
addr = os.environ.get("SR_DASK_ADDRESS") or None
if sys.argv[1] == "scene":
    out = {"dask_address": addr}
else:
    out = {"cluster": {"dask_address": addr,
                       "gpu": os.environ.get("SR_DASK_GPU", "false").lower() == "true"}}
    for key, var in (("source", "SR_ARCHIVE_SOURCE"), ("output_prefix", "SR_ARCHIVE_OUTPUT")):
        if os.environ.get(var):
            out[key] = os.environ[var]
print(json.dumps(out))' "$1"
}
prefect --no-prompt deploy --prefect-file "$file" --name upscale-scene --params "$(params scene)"
prefect --no-prompt deploy --prefect-file "$file" --name nightly-archive --params "$(params archive)"
if [ -n "${SR_ARCHIVE_SOURCE:-}" ] && [ -n "${SR_ARCHIVE_OUTPUT:-}" ]; then
    python -c 'import asyncio
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as client:
        dep = await client.read_deployment_by_name("upscale_archive/nightly-archive")
        for sched in dep.schedules:
            await client.update_deployment_schedule(dep.id, sched.id, active=True)
asyncio.run(main())'
    echo "nightly-archive: schedule active"
else
    echo "nightly-archive: schedule paused (set SR_ARCHIVE_SOURCE and SR_ARCHIVE_OUTPUT to activate it)"
fi
echo "registered upscale-scene and nightly-archive on ${PREFECT_API_URL:-<no PREFECT_API_URL>}"
