"""sr_core.formats.cog: output Zarr -> COG, on output Zarrs built by hand from real scenes."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from sr_core.errors import InputError
from sr_core.formats.base import SceneInfo
from sr_core.formats.cog import CogOptions, _stage_windows, validate_cog, write_cog
from sr_core.formats.geotiff import open_scene, read_window
from sr_core.geometry.tiling import PixelWindow
from sr_core.geometry.transforms import upscaled_transform


def build_output_zarr(scene: SceneInfo, store: Path, scale: int, tile: int) -> tuple[np.ndarray,
                                                                                      np.ndarray]:
    """Write the output Zarr the pipeline would write for a nearest-neighbour "model".

    Returns:
        ``(image, valid)`` as written: ``(count, H*scale, W*scale)`` scene dtype / bool.
    """
    with rasterio.open(scene.path) as src:
        data, valid = read_window(src, PixelWindow(0, 0, scene.height, scene.width),
                                  name=scene.name)
    image = data.repeat(scale, axis=1).repeat(scale, axis=2)
    valid = valid.repeat(scale, axis=1).repeat(scale, axis=2)
    if scene.nodata is not None:
        image[~valid] = scene.nodata
    elif np.issubdtype(image.dtype, np.floating):
        image[~valid] = np.nan
    chunks = (scene.count, tile * scale, tile * scale)
    group = zarr.open_group(str(store), mode="w")
    fill = scene.nodata if scene.nodata is not None else 0
    group.create_array("image", shape=image.shape, dtype=image.dtype, chunks=chunks,
                       fill_value=fill)[...] = image
    group.create_array("valid", shape=valid.shape, dtype=bool, chunks=chunks,
                       fill_value=False)[...] = valid
    return image, valid


def write_window(src_path: Path, dst_path: Path, window: Window, **changes) -> None:
    """Copy a window of a real scene into a new GeoTIFF (georeferenced), applying ``changes``."""
    with rasterio.open(src_path) as src:
        profile = src.profile.copy()
        data = src.read(window=window)
        profile.update(width=int(window.width), height=int(window.height),
                       transform=src.window_transform(window), driver="GTiff", tiled=False)
        for key in ("blockxsize", "blockysize"):
            profile.pop(key, None)
        profile.update({k: v for k, v in changes.items() if k in ("nodata",)})
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(changes.get("data", data))
            if "descriptions" in changes:
                for b, d in enumerate(changes["descriptions"], start=1):
                    dst.set_band_description(b, d)
            if "units" in changes:
                for b, u in enumerate(changes["units"], start=1):
                    dst.set_band_unit(b, u)
            if "band_tags" in changes:
                for b, tags in enumerate(changes["band_tags"], start=1):
                    dst.update_tags(b, **tags)
            if "tags" in changes:
                dst.update_tags(**changes["tags"])
            dst.colorinterp = src.colorinterp
            if "mask" in changes:
                dst.write_mask(changes["mask"])


def check_cog(path: Path, scene: SceneInfo, scale: int,
              image: np.ndarray) -> rasterio.DatasetReader:
    """Assertions common to every case; returns the reopened dataset (caller closes it)."""
    out = rasterio.open(path)
    assert validate_cog(path) == []
    assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert (out.count, out.height, out.width) == image.shape
    assert out.dtypes == (scene.dtype,) * scene.count
    assert out.crs == rasterio.crs.CRS.from_wkt(scene.crs)
    expected = Affine(*scene.transform) @ Affine.scale(1 / scale)
    assert out.transform.almost_equals(expected, precision=1e-9)
    with rasterio.open(scene.path) as src:
        for got, want in zip(out.bounds, src.bounds, strict=True):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    if scene.nodata is None:
        assert out.nodata is None
    else:
        assert out.nodata == scene.nodata
    assert out.block_shapes == [(512, 512)] * scene.count
    assert out.profile["tiled"]
    ovr = out.overviews(1)
    assert ovr and ovr[0] == 2
    assert max(math.ceil(out.width / ovr[-1]), math.ceil(out.height / ovr[-1])) <= 512
    assert out.descriptions == scene.descriptions
    assert tuple(ci.name for ci in out.colorinterp) == scene.colorinterp
    assert out.units == scene.units
    tags = out.tags()
    assert tags["SR_SCALE"] == str(scale)
    for key, value in scene.tags.items():
        assert tags[key] == value
    np.testing.assert_array_equal(out.read(), image)  # NaN == NaN for assert_array_equal
    leftovers = [n for n in os.listdir(path.parent) if n.startswith(".") or n.endswith(".msk")]
    assert leftovers == []  # no staging GeoTIFF or sidecar left
    return out


def test_landsat_rgb_uint8_nodata(repo_data, tmp_path: Path) -> None:
    scene = open_scene(repo_data.path("landsat7_RGB.byte.tif"))
    assert scene.mask_kind == "nodata" and scene.nodata == 0
    image, _ = build_output_zarr(scene, tmp_path / "out.zarr", scale=2, tile=256)
    dst = tmp_path / "out" / "landsat_x2.tif"
    dst.parent.mkdir()
    info = write_cog(tmp_path / "out.zarr", scene, 2, dst,
                     CogOptions(extra_tags={"SR_MODEL": "nearest"}))
    assert info["width"] == 2 * scene.width and info["height"] == 2 * scene.height
    assert info["overviews"] == [2, 4] and info["bytes"] == dst.stat().st_size
    assert info["layout"] == "COG"
    with check_cog(dst, scene, 2, image) as out:
        assert out.tags()["SR_MODEL"] == "nearest"
        st = out.tags(ns="IMAGE_STRUCTURE")
        assert st["COMPRESSION"] == "DEFLATE" and st["PREDICTOR"] == "2"
        # Input statistics are not carried over to the (different) output pixels.
        assert not any(k.startswith("STATISTICS_") for k in out.tags(1))
        # Overviews are averages of valid pixels; nodata stays nodata.
        ov = out.read(1, out_shape=(out.height // 4, out.width // 4))
        assert ov.dtype == np.uint8 and (ov == 0).any() and (ov > 0).any()


def test_sentinel2_uint16_unaligned_chunks(repo_data, tmp_path: Path) -> None:
    # Chunks of 250 * 2 = 500 px are not multiples of 16: the 512-block fallback path.
    scene = open_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"))
    assert scene.dtype == "uint16" and scene.nodata == 0
    image, _ = build_output_zarr(scene, tmp_path / "out.zarr", scale=2, tile=250)
    dst = tmp_path / "s2_x2.tif"
    info = write_cog(tmp_path / "out.zarr", scene, 2, dst, CogOptions(compress="ZSTD"))
    assert info["compress"] == "ZSTD"
    with check_cog(dst, scene, 2, image) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
        assert out.crs.to_epsg() == 32629


def test_float_dem_nan_descriptions_units_tags(repo_data, tmp_path: Path) -> None:
    # A 300 x 260 window of the Copernicus DEM (float32, no nodata) with a NaN hole, a band
    # description, a unit and tags: all must survive.
    src = repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif")
    with rasterio.open(src) as ds:
        win = Window(1800, 1500, 260, 300)
        data = ds.read(window=win)
    data[:, 100:140, 50:90] = np.nan
    lr = tmp_path / "dem.tif"
    write_window(src, lr, win, data=data, descriptions=["elevation"], units=["metre"],
                 band_tags=[{"SOURCE_BAND": "DEM"}], tags={"PRODUCT": "GLO-30"})
    scene = open_scene(lr)
    assert scene.mask_kind == "none" and scene.dtype == "float32"
    assert scene.descriptions == ("elevation",) and scene.units == ("metre",)
    image, valid = build_output_zarr(scene, tmp_path / "out.zarr", scale=2, tile=128)
    assert np.isnan(image).sum() == 4 * 40 * 40
    dst = tmp_path / "dem_x2.tif"
    write_cog(tmp_path / "out.zarr", scene, 2, dst, CogOptions(extra_tags={"SR_MODEL": "m"}))
    with check_cog(dst, scene, 2, image) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"  # floating-point predictor
        assert out.tags(1)["SOURCE_BAND"] == "DEM"
        assert out.tags()["PRODUCT"] == "GLO-30"
        assert np.array_equal(np.isnan(out.read(1)), ~valid[0])


def test_per_dataset_mask(repo_data, tmp_path: Path) -> None:
    # A window of the NAIP scene (4 bands uint8) without nodata, with an internal dataset mask
    # that hides a triangle.
    src = repo_data.path("naip_m_4709963_se_14_1_20200831_5m.tif")
    win = Window(300, 200, 300, 280)
    rows, cols = np.mgrid[0:280, 0:300]
    mask = np.where(rows > cols, 0, 255).astype(np.uint8)
    lr = tmp_path / "naip.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        write_window(src, lr, win, nodata=None, mask=mask)
    scene = open_scene(lr)
    assert scene.mask_kind == "per_dataset" and scene.nodata is None and scene.count == 4
    image, valid = build_output_zarr(scene, tmp_path / "out.zarr", scale=2, tile=128)
    dst = tmp_path / "naip_x2.tif"
    write_cog(tmp_path / "out.zarr", scene, 2, dst)
    assert not (tmp_path / "naip_x2.tif.msk").exists()  # the mask is internal
    with check_cog(dst, scene, 2, image) as out:
        assert out.mask_flag_enums[0] == [MaskFlags.per_dataset]
        expected = np.where(valid.any(axis=0), 255, 0).astype(np.uint8)
        np.testing.assert_array_equal(out.dataset_mask(), expected)
        assert (expected == 0).any() and (expected == 255).any()


def test_rotated_transform_kept(repo_data, tmp_path: Path) -> None:
    scene = open_scene(repo_data.path("landsat7_RGB.byte.tif"))
    a, b, c, d, e, f = scene.transform
    rotated = dataclasses.replace(scene, transform=(a, 12.5, c, -7.5, e, f))
    image, _ = build_output_zarr(rotated, tmp_path / "out.zarr", scale=3, tile=64)
    dst = tmp_path / "rot.tif"
    write_cog(tmp_path / "out.zarr", rotated, 3, dst)
    with rasterio.open(dst) as out:
        want = Affine(a, 12.5, c, -7.5, e, f) @ Affine.scale(1 / 3)
        assert out.transform.almost_equals(want, precision=1e-9)
        assert out.transform.b == pytest.approx(12.5 / 3) and out.transform.d == pytest.approx(-2.5)
        # Corners of the HR grid land on the LR grid's corners.
        hr_corner = out.transform @ (out.width, out.height)
        lr_corner = Affine(*rotated.transform) @ (scene.width, scene.height)
        assert hr_corner == pytest.approx(lr_corner)
        np.testing.assert_array_equal(out.read(), image)


def test_contract_violations(repo_data, tmp_path: Path) -> None:
    scene = open_scene(repo_data.path("landsat7_RGB.byte.tif"))
    build_output_zarr(scene, tmp_path / "out.zarr", scale=2, tile=256)
    with pytest.raises(InputError, match="shape"):
        write_cog(tmp_path / "out.zarr", scene, 3, tmp_path / "x.tif")
    wrong = dataclasses.replace(scene, dtype="uint16")
    with pytest.raises(InputError, match="dtype"):
        write_cog(tmp_path / "out.zarr", wrong, 2, tmp_path / "x.tif")
    with pytest.raises(InputError, match="not an output Zarr"):
        write_cog(tmp_path / "nothing.zarr", scene, 2, tmp_path / "x.tif")
    with pytest.raises(InputError, match="blocksize"):
        write_cog(tmp_path / "out.zarr", scene, 2, tmp_path / "x.tif", CogOptions(blocksize=100))
    assert not (tmp_path / "x.tif").exists()


def test_output_exactly_one_block_wide(repo_data, tmp_path: Path) -> None:
    """A 256 px wide scene at x2 is one 512 px block wide: still a valid COG (rasterio's profile
    calls such a file untiled; the TIFF tags say tiled)."""
    src = tmp_path / "narrow.tif"
    write_window(repo_data.path("landsat7_RGB.byte.tif"), src, Window(200, 150, 256, 200))
    scene = open_scene(src)
    image, _ = build_output_zarr(scene, tmp_path / "out.zarr", scale=2, tile=64)
    info = write_cog(tmp_path / "out.zarr", scene, 2, tmp_path / "out.tif")
    assert (info["width"], info["layout"]) == (512, "COG")
    assert validate_cog(tmp_path / "out.tif") == []
    with rasterio.open(tmp_path / "out.tif") as out:
        assert np.array_equal(out.read(), image)


def test_validate_cog_rejects_plain_geotiff(repo_data) -> None:
    problems = validate_cog(repo_data.path("landsat7_RGB.byte.tif"))  # striped, no overviews
    assert "IMAGE_STRUCTURE has no LAYOUT=COG" in problems
    assert any("not tiled" in p for p in problems)


@pytest.mark.parametrize("height,width,chunk,tile", [
    (1436, 1582, 512, 512), (2196, 2196, 500, None), (100, 37, 64, 64), (513, 1, 400, 400),
    (4500, 4200, 2048, 512), (900, 1000, 1200, 400)])
def test_stage_windows_partition(height: int, width: int, chunk: int, tile: int | None) -> None:
    tile_h, tile_w, windows = _stage_windows(height, width, chunk, chunk, 512)
    step = chunk if tile else 512  # one window per Zarr chunk, else one per 512 tile
    assert tile_h == tile_w == (tile or 512)
    cover = np.zeros((height, width), np.int32)
    for w in windows:
        assert w.row_off % step == 0 and w.col_off % step == 0
        # Whole tiles only (clipped at the right and bottom edges): no tile is written twice.
        assert w.height % tile_h == 0 or w.row_off + w.height == height
        assert w.width % tile_w == 0 or w.col_off + w.width == width
        cover[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert (cover == 1).all()  # every pixel written exactly once


def test_upscaled_transform_keeps_bounds() -> None:
    t = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)
    hr = upscaled_transform(tuple(t)[:6], 4)
    assert hr @ (400, 400) == t @ (100, 100)
    assert (hr.a, hr.e, hr.c, hr.f) == (7.5, -7.5, 500000.0, 4000000.0)
