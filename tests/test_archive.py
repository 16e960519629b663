"""Archive scale (sr_core.archive, no Prefect): listing S3 prefixes past 1,000 keys, local folders
and STAC catalogs; the output layout, STAC item and idempotency manifest of a processed scene."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import rasterio
from conftest import crop_scene

from sr_core import archive, storage
from sr_core.errors import InputError
from sr_core.pipeline import UpscaleConfig, resolve_model


def put_objects(bucket: str, items: dict[str, bytes]) -> None:
    """Upload many small objects to the moto endpoint, 16 at a time."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", config=Config(max_pool_connections=16))
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      items.items()))


@pytest.fixture(scope="module")
def listing_bucket(moto_s3):
    """1,110 keys: 1,050 .tif (two folders) and 60 .xml under arch/, one .tif elsewhere."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="listing")
    items = {f"arch/{2024 + i % 2}/scene-{i:04d}.tif": b"II*\x00" + i.to_bytes(4, "little")
             for i in range(1050)}
    items.update({f"arch/2024/scene-{i:04d}.xml": b"<x/>" for i in range(60)})
    items["other/outside.tif"] = b"II*\x00"
    put_objects("listing", items)
    return "listing"


def test_list_s3_glob_paginates(listing_bucket):
    import hashlib

    scenes = archive.list_scenes(f"s3://{listing_bucket}/arch/**/*.tif")
    assert len(scenes) == 1050  # more than one page of 1,000 keys
    first = scenes[0]
    assert first.scene_id == "2024/scene-0000" and first.uri == "s3://listing/arch/2024/scene-0000.tif"
    body = b"II*\x00" + (0).to_bytes(4, "little")
    assert first.fingerprint == {"etag": hashlib.md5(body).hexdigest(), "size": 8}
    assert len(archive.list_scenes(f"s3://{listing_bucket}/arch/2025/*.tif")) == 525
    assert len(archive.list_scenes(f"s3://{listing_bucket}/arch/**/*.xml")) == 60
    with pytest.raises(InputError, match="give a glob"):
        archive.list_scenes(f"s3://{listing_bucket}/arch/")


def test_list_local_and_stac(repo_data, tmp_path):
    import pystac

    root = tmp_path / "archive"
    (root / "2024").mkdir(parents=True)
    (root / "2025").mkdir()
    a = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), root / "2024" / "a.tif",
                   row=100, col=100, height=40, width=40)
    b = crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), root / "2025" / "b.tif",
                   row=0, col=0, height=40, width=40)
    (root / "2025" / "notes.txt").write_text("not a scene")
    scenes = archive.list_scenes(str(root))
    assert [s.scene_id for s in scenes] == ["2024/a", "2025/b"]
    assert scenes[0].fingerprint == {"sha256": storage.sha256_file(str(a)),
                                     "size": os.path.getsize(a)}
    assert [s.scene_id for s in archive.list_scenes(f"{root}/2025/*.tif")] == ["b"]

    # a STAC ItemCollection with asset hrefs relative to its file
    items = []
    for path, item_id in ((a, "LS7_a"), (b, "S2_b")):
        with rasterio.open(path) as src:
            bounds = list(src.bounds)
        item = pystac.Item(id=item_id, geometry=None, bbox=bounds, properties={},
                           datetime=pystac.utils.str_to_datetime("2024-05-01T10:00:00Z"))
        item.add_asset("visual", pystac.Asset(href=os.path.relpath(path, root),
                                              media_type=pystac.MediaType.GEOTIFF))
        items.append(item)
    ic_path = root / "items.json"
    ic_path.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    got = archive.list_scenes(str(ic_path), asset_key="visual")
    assert [(s.scene_id, s.uri) for s in got] == [("LS7_a", f"{root}/{os.path.relpath(a, root)}"),
                                                  ("S2_b", f"{root}/{os.path.relpath(b, root)}")]
    assert got[0].datetime.startswith("2024-05-01") and got[0].fingerprint["sha256"]
    with pytest.raises(InputError, match="item LS7_a has no asset 'data'"):
        archive.list_scenes(str(ic_path))

    # a self-contained catalog written by pystac (items in their own folders)
    cat = pystac.Catalog(id="archive", description="test archive")
    for item in items:
        item = item.clone()
        item.assets["visual"].href = str(a if item.id == "LS7_a" else b)
        cat.add_item(item)
    cat.normalize_hrefs(str(tmp_path / "catalog"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    got = archive.list_scenes(str(tmp_path / "catalog" / "catalog.json"), asset_key="visual")
    assert [(s.scene_id, os.path.realpath(s.uri)) for s in got] == [
        ("LS7_a", os.path.realpath(a)), ("S2_b", os.path.realpath(b))]
    assert got[0].stac_href.endswith("LS7_a/LS7_a.json")


def test_scene_outputs_stac_and_manifest(repo_data, dask_address, tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), src_dir / "s2.tif",
               row=50, col=60, height=48, width=56)
    out = tmp_path / "out"
    cfg = UpscaleConfig(src="-", dst="-", model="bicubic", scale=2, tile_size_px=32,
                        dask_address=dask_address, progress=False, wald_window_px=48)
    model = resolve_model("bicubic", 2)
    (scene,) = archive.list_scenes(str(src_dir))
    plan = archive.plan_scene(scene, str(out), cfg, model)
    assert (plan.status, plan.reason) == ("todo", "no manifest")
    assert plan.paths.cog == f"{out}/s2/bicubic_x2/s2.tif"
    result, rep = archive.process_scene(plan, cfg, model)
    assert result.status == "done" and result.output_mp_per_s > 0
    assert rep["output"]["width"] == 112 and "wald_psnr_db" in result.quality

    import pystac

    item = pystac.Item.from_dict(json.loads(open(plan.paths.stac).read()))
    with rasterio.open(plan.paths.cog) as cog, rasterio.open(scene.uri) as src:
        assert item.properties["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert item.properties["proj:shape"] == [cog.height, cog.width]
        assert item.properties["proj:transform"] == pytest.approx(list(cog.transform)[:6])
        assert item.properties["gsd"] == pytest.approx(src.res[0] / 2)
    lon0, lat0, lon1, lat1 = item.bbox
    assert -180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90
    assert item.assets["data"].href == plan.paths.cog
    assert "bicubic-x2" in item.properties["processing:lineage"]
    assert item.get_single_link("derived_from").target == scene.uri

    manifest = json.loads(open(plan.paths.manifest).read())
    assert manifest["input"] == scene.fingerprint
    assert manifest["parameters"] == {"model": "bicubic-x2", "scale": 2, "wald_window_px": 48}

    def again(c=cfg):
        (now,) = archive.list_scenes(str(src_dir))
        return archive.plan_scene(now, str(out), c, model)

    assert (again().status, again().reason) == ("skipped", "up to date")
    # tile size does not change the output: still up to date
    assert again(replace(cfg, tile_size_px=64)).status == "skipped"
    assert again(replace(cfg, wald_window_px=64)).reason == \
        "parameters changed"
    shutil.copy(repo_data.path("landsat7_RGB.byte.tif"), src_dir / "s2.tif")
    assert again().reason == "input changed"
    os.remove(plan.paths.cog)
    assert archive.plan_scene(scene, str(out), cfg, model).reason == "output COG missing"


def test_list_stac_catalog_on_s3(listing_bucket, tmp_path):
    """A self-contained catalog uploaded to S3 with asset hrefs relative to each item: read
    through boto3, assets resolved to s3:// URLs, fingerprints are the objects' ETags."""
    import boto3
    import pystac

    cat = pystac.Catalog(id="s3-archive", description="catalog on S3")
    for i in (3, 4):
        item = pystac.Item(id=f"scene-{i}", geometry=None, bbox=[0, 0, 1, 1], properties={},
                           datetime=pystac.utils.str_to_datetime("2025-01-01T00:00:00Z"))
        # the item lands at stac/scene-i/scene-i.json; the scene is arch/2025/scene-000i.tif
        item.add_asset("data", pystac.Asset(href=f"../../arch/{2024 + i % 2}/scene-{i:04d}.tif"))
        cat.add_item(item)
    cat.normalize_hrefs(str(tmp_path / "stac"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    s3 = boto3.client("s3")
    for path in (tmp_path / "stac").rglob("*.json"):
        s3.upload_file(str(path), listing_bucket, f"stac/{path.relative_to(tmp_path / 'stac')}")
    got = archive.list_scenes(f"s3://{listing_bucket}/stac/catalog.json")
    assert [(s.scene_id, s.uri) for s in got] == [
        ("scene-3", f"s3://{listing_bucket}/arch/2025/scene-0003.tif"),
        ("scene-4", f"s3://{listing_bucket}/arch/2024/scene-0004.tif")]
    head = s3.head_object(Bucket=listing_bucket, Key="arch/2025/scene-0003.tif")
    assert got[0].fingerprint == {"etag": head["ETag"].strip('"'), "size": 8}


def test_gpu_resource_routing(repo_data, dask_address, tmp_path):
    """Tile tasks that ask for the Dask resource GPU=1 run only on workers declaring it: refused
    at once on a cluster without such a worker; run on the archive's LocalCluster started with
    gpu=True (its workers declare GPU=1; the model runs on the CPU here)."""
    from distributed import Client

    from sr_core.compute.cluster import shared_cluster
    from sr_core.errors import SRError
    from sr_core.pipeline import run_upscale

    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "in.tif",
                     row=100, col=100, height=40, width=40)
    cfg = UpscaleConfig(src=str(src), dst=str(tmp_path / "out.tif"), model="bicubic",
                        tile_size_px=32, progress=False, resources={"GPU": 1})
    with pytest.raises(SRError, match="no worker declares the resources GPU=1"):
        run_upscale(replace(cfg, dask_address=dask_address))
    assert not (tmp_path / "out.tif").exists()
    with shared_cluster(None, 1, str(tmp_path / "dask"), gpu=True) as address:
        with Client(address) as client:
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}]
        run = run_upscale(replace(cfg, dask_address=address))
    assert run.dask["tasks"] == 4 + 1 and (tmp_path / "out.tif").exists()
