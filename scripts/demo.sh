#!/usr/bin/env bash
# The main job on the bundled real scene with embedded defaults: the Prefect flow upscale_scene
# (no separately started server: Prefect runs a temporary one), a local Dask cluster, the shipped
# default model, local files. Prints where the COG and the report went.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}" PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p out
.venv/bin/python -m flows.upscale_scene "${1:-samples/landsat7_RGB.byte.tif}" "${2:-out/landsat7_RGB_x2.tif}"
