"""STAC items are valid (issue #18, item 5): the items the archive writes pass the STAC 1.1.0 Item
schema and the schemas of the extensions they declare (projection v2.0.0, processing v1.2.0),
bundled in tests/data/stac-schemas and checked offline; ``proj:wkt2`` is WKT2:2019 for every CRS,
a custom one (Albers equal-area, no EPSG code) included, and ``proj:code`` is the authority code
where there is one. (``conftest.stac_items_valid`` validates every item any test makes.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
from conftest import crop_scene
from stac_schemas import stac_item_problems

from sr_core import archive
from sr_core.pipeline import UpscaleConfig, resolve_model

S2 = "S2A_29RKH_20200219_L2A_B04.tif"  # the same file as shared/data/geo/S2A_..._B04.tif
#: Albers equal-area over the S2 tile (29RKH, about 28-29 N, 11-10 W): a CRS no authority has
ALBERS = ("+proj=aea +lat_0=27 +lon_0=-10.5 +lat_1=26 +lat_2=30 +x_0=500000 +y_0=0 "
          "+ellps=WGS84 +units=m +no_defs")


def albers_scene(src: Path, dst: Path) -> Path:
    """``src`` reprojected (bilinear) to :data:`ALBERS`, nodata kept."""
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    crs = CRS.from_proj4(ALBERS)
    with rasterio.open(src) as s:
        transform, width, height = calculate_default_transform(s.crs, crs, s.width, s.height,
                                                               *s.bounds)
        profile = {**s.profile, "driver": "GTiff", "crs": crs, "transform": transform,
                   "width": width, "height": height}
        with rasterio.open(dst, "w", **profile) as d:
            for b in range(1, s.count + 1):
                reproject(rasterio.band(s, b), rasterio.band(d, b), resampling=Resampling.bilinear,
                          src_nodata=s.nodata, dst_nodata=s.nodata)
    return dst


def test_archive_stac_items_are_valid(repo_data, dask_address, tmp_path, stac_items_valid):
    src = tmp_path / "in"
    src.mkdir()
    utm = crop_scene(repo_data.path(S2), tmp_path / "utm.tif", row=50, col=60, height=48,
                     width=56)
    (src / "utm.tif").write_bytes(utm.read_bytes())
    albers_scene(utm, src / "albers.tif")
    with rasterio.open(src / "albers.tif") as ds:
        assert ds.crs.to_epsg() is None and ds.crs.to_authority() is None
    out = tmp_path / "out"
    cfg = UpscaleConfig(src="-", dst="-", model="bicubic", scale=2, tile_size_px=32,
                        dask_address=dask_address, progress=False, wald_window_px=32)
    model = resolve_model("bicubic", 2)
    items = {}
    for scene in archive.list_scenes(str(src)):
        plan = archive.plan_scene(scene, str(out), cfg, model)
        result, _ = archive.process_scene(plan, cfg, model)
        assert result.status == "done", result.reason
        items[scene.scene_id] = json.loads(Path(plan.paths.stac).read_text())
    assert len(stac_items_valid) == 2  # the fixture saw both and checks them again at teardown
    for sid, item in items.items():
        assert stac_item_problems(item) == [], sid
        assert archive.PROJECTION_EXT in item["stac_extensions"]
        assert "proj:epsg" not in item["properties"]  # v1 field; v2.0.0 has proj:code

    with rasterio.open(src / "utm.tif") as ds:
        utm_crs = ds.crs
    props = items["utm"]["properties"]
    assert props["proj:code"] == f"EPSG:{utm_crs.to_epsg()}" == "EPSG:32629"
    assert props["proj:wkt2"].startswith("PROJCRS[")

    props = items["albers"]["properties"]
    assert props["proj:code"] is None
    wkt2 = props["proj:wkt2"]
    assert wkt2.startswith("PROJCRS[") and "Albers Equal Area" in wkt2
    from rasterio.crs import CRS

    assert CRS.from_wkt(wkt2) == CRS.from_proj4(ALBERS)


def _item(**properties) -> dict:
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": "x",
        "stac_extensions": [archive.PROJECTION_EXT, archive.PROCESSING_EXT],
        "geometry": {"type": "Point", "coordinates": [0.0, 0.0]}, "bbox": [0, 0, 0, 0],
        "properties": {"datetime": "2024-05-01T10:00:00Z", "processing:level": "L2", **properties},
        "links": [], "assets": {"data": {"href": "x.tif"}},
    }


@pytest.mark.parametrize("change,expect", [
    ({"proj:epsg": 32629}, "proj:epsg"),  # projection v1 field: refused by v2.0.0
    ({"proj:shape": [10]}, "proj:shape"),
    ({"processing:software": {"sr-pipeline": 1}}, "processing:software"),
], ids=["v1-epsg", "short-shape", "software-version-not-string"])
def test_bundled_schemas_refuse(change, expect):
    """The bundled schemas do check: a valid item passes, each broken one names its field."""
    assert stac_item_problems(_item(**{"proj:code": "EPSG:32629"})) == []
    problems = stac_item_problems(_item(**{"proj:code": "EPSG:32629", **change}))
    assert problems and any(expect in p for p in problems), problems
    undeclared = {**_item(**{"proj:code": "EPSG:32629"}), "stac_extensions": [
        "https://stac-extensions.github.io/projection/v1.1.0/schema.json"]}
    assert any("no bundled schema" in p for p in stac_item_problems(undeclared))
