#!/usr/bin/env bash
# Trains the shipped default models on the real scenes in ../shared/data/geo (Wald protocol).
# Held out for validation: the Landsat 7 sample scene (uint8 RGB) and the Sentinel-2 L1C B8A
# scene (uint16, a different tile and processing level than the L2A training bands).
# The SCL layer is categorical and must not be super-resolved, so it is not a training scene.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${SR_GEO_DATA:-../shared/data/geo}
SCENES=(S2A_29RKH_20200219_L2A_B04.tif S2A_29RKH_20200219_L2A_B08.tif S2A_29RKH_20200219_L2A_B11.tif
        S2_L1C_18SVG_20160112_B01_60m.tif LC80200392015216_B4_30m.tif LC80200392015216_B8_pan15m.tif
        naip_m_4709963_se_14_1_20200831_5m.tif cogeo_jpeg_overviews.tif opengeos_cog_4band_float64.tif
        Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif)
VAL=(landsat7_RGB.byte.tif S2_L1C_18SVG_20160112_B8A_20m.tif)
args=()
for s in "${SCENES[@]}"; do args+=(--scene "$G/$s"); done
for s in "${VAL[@]}"; do args+=(--val-scene "$G/$s"); done
W=sr_core/models/weights
ONLY=${ONLY:-edsr espcn espcn4}   # which shipped models to train
if [[ " $ONLY " == *" edsr "* ]]; then
.venv/bin/sr-pipeline train --arch edsr --scale 2 --name edsr-x2 --out $W/edsr_x2.safetensors \
    --epochs ${EPOCHS:-10} --steps ${STEPS:-100} --seed 0 --device cpu "${args[@]}"
fi
if [[ " $ONLY " == *" espcn "* ]]; then
.venv/bin/sr-pipeline train --arch espcn --scale 2 --name espcn-x2 --out $W/espcn_x2.safetensors \
    --epochs ${EPOCHS:-10} --steps ${STEPS:-100} --seed 0 --lr 1e-3 --device cpu "${args[@]}"
fi
if [[ " $ONLY " == *" espcn4 "* ]]; then
# x4: ESPCN on 24 px LR / 96 px HR patches
.venv/bin/sr-pipeline train --arch espcn --scale 4 --name espcn-x4 --out $W/espcn_x4.safetensors \
    --patch 24 --epochs ${EPOCHS:-10} --steps ${STEPS:-100} --seed 0 --lr 1e-3 --device cpu "${args[@]}"
fi
