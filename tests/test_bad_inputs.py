"""The bad-input matrix of issue 7: every row a test, on corrupt copies of real files made in
``tmp_path`` at test time.

Each bad input gets one ``sr-pipeline: error: <file>: <problem>`` line, exit status 2 and nothing
at the destination (or, in an archive, a failed scene while the others go on). Most rows call
``sr_core.cli.main`` in-process (the console script's entry point); a few go through the installed
console script to prove the exit status and that no traceback reaches stderr. The "Bad inputs
and security" table of docs/security.md lists the rows and names these tests.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import rasterio
import torch
from affine import Affine
from conftest import EX4D, SERIES, SVS, crop_scene, pydicom_file, run_main
from rasterio.windows import Window

from sr_core import archive, storage
from sr_core.errors import InputError, ModelError
from sr_core.formats.geotiff import open_scene
from sr_core.models.registry import load_model
from sr_core.models.weights import load_weights
from sr_core.pipeline import UpscaleConfig, resolve_model

CLI = str(Path(sys.executable).parent / "sr-pipeline")
CT_SMALL = pydicom_file("CT_small.dcm")
MR_SMALL = pydicom_file("MR_small.dcm")
S2 = "S2A_29RKH_20200219_L2A_B04.tif"  # uint16, nodata 0, UTM 29N


def assert_one_line_error(code, err, *phrases, code_expected=2):
    assert code == code_expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sr-pipeline: error: "), lines[0]
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def window_of(src: Path, dst: Path, *, dtype=None, size=64, **extra) -> Path:
    """A ``size`` px window of band 1 of a real scene, written with ``dtype`` and ``extra``."""
    with rasterio.open(src) as ds:
        data = ds.read(1, window=Window(0, 0, size, size))
        profile = {"driver": "GTiff", "width": size, "height": size, "count": 1,
                   "dtype": dtype or data.dtype, "crs": ds.crs, "transform": ds.transform, **extra}
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data.astype(profile["dtype"]), 1)
    return dst


def huge_header_tiff(path: Path, width: int, height: int) -> Path:
    """A classic TIFF whose header says ``width`` x ``height`` uint8 pixels in one deflate strip,
    over a body of about 1 KB (the compressed first megabyte of zeros)."""
    body = zlib.compress(bytes(1 << 20), 9)
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1),
            (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(body))]
    ifd_size = 2 + 12 * len(tags) + 4
    body_at = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)))
    for tag, typ, value in tags:
        value = body_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, 1) + packed
    out += struct.pack("<I", 0) + body
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def landsat(repo_data):
    return repo_data.path("landsat7_RGB.byte.tif")


# ------------------------------------------------------------------ files that are not scenes

def bad_files(tmp: Path, landsat: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error must contain)."""
    (tmp / "empty.tif").write_bytes(b"")
    (tmp / "page.tif").write_text("<!doctype html><html><body>Not Found</body></html>")
    raw = landsat.read_bytes()
    (tmp / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    palette = window_of(landsat, tmp / "palette.tif", photometric="palette")
    with rasterio.open(palette, "r+") as ds:
        ds.write_colormap(1, {i: (i, 255 - i, 0, 255) for i in range(256)})
    vrt = tmp / "mosaic.tif"
    vrt.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Byte" '
                   f'band="1"><SimpleSource><SourceFilename>{landsat}</SourceFilename>'
                   f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    return {
        "empty": (tmp / "empty.tif", "empty file"),
        "html": (tmp / "page.tif", "not a readable GeoTIFF"),
        "truncated": (tmp / "truncated.tif", "truncated"),
        "complex64": (window_of(landsat, tmp / "complex.tif", dtype="complex64"), "complex"),
        "int8": (window_of(landsat, tmp / "int8.tif", dtype="int8"), "dtype int8"),
        "int64": (window_of(landsat, tmp / "int64.tif", dtype="int64"), "dtype int64"),
        "uint32": (window_of(landsat, tmp / "uint32.tif", dtype="uint32"), "dtype uint32"),
        "palette": (palette, "palette"),
        "vrt": (vrt, "not a readable GeoTIFF"),
        "huge-header": (huge_header_tiff(tmp / "huge.tif", 100_000, 100_000),
                        "over the cap of 2,147,483,648 (SR_MAX_PIXELS)"),
        "missing": (tmp / "nope.tif", "no such file"),
    }


CASES = ["empty", "html", "truncated", "complex64", "int8", "int64", "uint32", "palette", "vrt",
         "huge-header", "missing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_exits_2_with_one_line_and_writes_nothing(case, landsat, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    src, phrase = bad_files(tmp_path / "in", landsat)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_main(["upscale", str(src), str(out_dir / "x.tif"), "--model", "bicubic",
                             "--no-progress"], capsys)
    assert_one_line_error(code, err, str(src), phrase)
    assert list(out_dir.iterdir()) == [], "nothing may be written at the destination"


@pytest.mark.parametrize("case", ["empty", "truncated", "huge-header"])
def test_console_script_bad_file(case, landsat, tmp_path):
    """The installed entry point: exit status 2 and one stderr line, never a traceback."""
    (tmp_path / "in").mkdir()
    src, phrase = bad_files(tmp_path / "in", landsat)[case]
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([CLI, "upscale", str(src), str(out / "x.tif"), "--model", "bicubic"],
                         capture_output=True, text=True, timeout=120)
    assert_one_line_error(res.returncode, res.stderr, str(src), phrase)
    assert list(out.iterdir()) == []


def test_huge_header_is_refused_by_the_cap_not_by_gdal(tmp_path, monkeypatch):
    """GDAL itself opens the 100,000 x 100,000 header over a 1 KB body (it would then "read"
    10 GB of zeros): the pixel cap is what refuses it, before any pixel is read; the caps are
    configurable."""
    path = huge_header_tiff(tmp_path / "huge.tif", 100_000, 100_000)
    assert path.stat().st_size < 2_000
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height) == (100_000, 100_000)
    with pytest.raises(InputError, match="10,000,000,000 pixels per plane, over the cap"):
        open_scene(path)
    # a larger pixel cap lets it through to the bytes cap, which names its own variable
    monkeypatch.setenv("SR_MAX_PIXELS", str(10**11))
    monkeypatch.setenv("SR_MAX_DECODED_BYTES", str(10**9))
    with pytest.raises(InputError, match=r"10,000,000,000 bytes .* \(SR_MAX_DECODED_BYTES\)"):
        open_scene(path)
    monkeypatch.setenv("SR_MAX_DECODED_BYTES", "many")
    with pytest.raises(InputError, match="SR_MAX_DECODED_BYTES='many': must be a whole number"):
        open_scene(path)


def test_size_caps_apply_to_real_scenes_and_medical_formats(repo_data, tmp_path, monkeypatch,
                                                            capsys):
    scene = repo_data.path(S2)  # 1098 x 1098 uint16
    monkeypatch.setenv("SR_MAX_DECODED_BYTES", "1000000")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_main(["upscale", str(scene), str(out / "x.tif"), "--model", "bicubic"],
                            capsys)
    assert_one_line_error(code, err, "2,411,208 bytes", "SR_MAX_DECODED_BYTES")
    monkeypatch.delenv("SR_MAX_DECODED_BYTES")
    monkeypatch.setenv("SR_MAX_PIXELS", "4000")  # CT_small is 128 x 128
    code, _, err = run_main(["upscale", str(CT_SMALL), str(out / "x.dcm"), "--model", "bicubic"],
                            capsys)
    assert_one_line_error(code, err, str(CT_SMALL), "SR_MAX_PIXELS")
    assert list(out.iterdir()) == []


# ------------------------------------------------------- readable scenes with odd content

@pytest.mark.parametrize("case", ["all-nodata", "nan-only"])
def test_scene_without_valid_pixels_is_refused_before_model_work(case, repo_data, dask_address,
                                                                 tmp_path, capsys):
    """Policy: a scene with no valid pixel is refused (exit 2) after staging, before any tile
    reaches the model; nothing is written at DST."""
    src = tmp_path / f"{case}.tif"
    if case == "all-nodata":  # the real scene's nodata value everywhere
        window_of(repo_data.path(S2), src, nodata=0)
        with rasterio.open(src, "r+") as ds:
            ds.write(np.zeros((1, 64, 64), np.uint16))
    else:  # a float DEM window, every pixel NaN, no nodata value
        window_of(repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"), src)
        with rasterio.open(src, "r+") as ds:
            ds.write(np.full((1, 64, 64), np.nan, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_main(["upscale", str(src), str(out / "x.tif"), "--model", "bicubic",
                             "--dask-address", dask_address, "--no-progress"], capsys)
    assert_one_line_error(code, err, str(src), "no valid pixels")
    assert list(out.iterdir()) == []


def test_missing_crs_is_upscaled_with_a_warning(repo_data, dask_address, tmp_path, capsys):
    """Policy: no CRS -> the output has none either, and the user is told (stderr, report)."""
    src = window_of(repo_data.path(S2), tmp_path / "nocrs.tif", crs=None, nodata=0)
    dst = tmp_path / "nocrs_x2.tif"
    code, out, err = run_main(["upscale", str(src), str(dst), "--model", "bicubic",
                               "--dask-address", dask_address, "--no-progress"], capsys)
    assert code == 0, err
    assert f"sr-pipeline: warning: {src}: input has no CRS" in err
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert a.crs is None and b.crs is None
        assert b.transform == a.transform * Affine.scale(0.5)
    rep = json.loads((tmp_path / "nocrs_x2.report.json").read_text())
    assert rep["warnings"] == ["input has no CRS: the output COG has none either (pixel "
                               "coordinates only)"]
    assert "**Warning**: input has no CRS" in (tmp_path / "nocrs_x2.report.md").read_text()


def test_rotated_transform_is_kept(repo_data, dask_address, tmp_path, capsys):
    """Policy: a rotated (sheared) affine transform is kept, scaled by 1 / scale, CRS kept."""
    with rasterio.open(repo_data.path(S2)) as ds:
        t = ds.transform
    rotated = Affine(t.a * 0.96, t.a * 0.28, t.c, t.a * 0.28, -t.a * 0.96, t.f)
    src = window_of(repo_data.path(S2), tmp_path / "rot.tif", transform=rotated, nodata=0)
    dst = tmp_path / "rot_x2.tif"
    code, _, err = run_main(["upscale", str(src), str(dst), "--model", "bicubic",
                             "--dask-address", dask_address, "--no-progress"], capsys)
    assert code == 0, err
    assert "warning" not in err
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs and b.transform.b != 0
        assert b.transform.almost_equals(a.transform * Affine.scale(0.5), precision=1e-9)
        assert (b.width, b.height) == (128, 128)
    assert json.loads((tmp_path / "rot_x2.report.json").read_text())["warnings"] == []


# ------------------------------------------------------------------------------ S3 keys

LONG_KEY = "arch/" + "k" * 1016 + ".tif"  # 1,025 bytes


@pytest.mark.parametrize("url,phrase", [
    ("s3://bkt/arch/../evil.tif", "'..' path segment"),
    ("s3://bkt//abs.tif", "starts with '/'"),
    ("s3://bkt/arch//x.tif", "empty, '.' or '..' path segment"),
    ("s3://bkt/arch/./x.tif", "'.' or '..' path segment"),
    ("s3://bkt/new\nline.tif", "control characters"),
    (f"s3://bkt/{LONG_KEY}", "S3 key is 1,025 bytes; S3 allows at most 1024"),
], ids=["dotdot", "leading-slash", "empty-segment", "dot", "newline", "1025-bytes"])
def test_bad_s3_key_is_refused_before_any_request(url, phrase, tmp_path, capsys):
    """No S3 endpoint is configured here: the key is refused before any request or download."""
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_main(["upscale", url, str(out / "x.tif"), "--model", "bicubic"], capsys)
    assert_one_line_error(code, err, phrase)
    assert "\n" not in err.strip()  # the newline of the key is escaped in the one line
    with pytest.raises(InputError, match="refused|allows at most"):
        storage.fetch(url, tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def key_bucket(moto_s3, repo_data, tmp_path_factory):
    """Real scene and DICOM copies under odd keys S3 itself accepts."""
    import boto3

    tmp = tmp_path_factory.mktemp("keys")
    crop = crop_scene(repo_data.path(S2), tmp / "crop.tif", row=300, col=300, height=48, width=48)
    name = f"keys-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    for key in ("arch/ok.tif", "arch/../evil.tif", "arch//lead.tif", "arch/./dot.tif",
                "arch/" + "x" * 1010 + ".tif"):
        s3.upload_file(str(crop), name, key)
    s3.upload_file(str(CT_SMALL), name, "series/IM1.dcm")
    s3.put_object(Bucket=name, Key="series/..", Body=b"not dicom")
    return name


def test_s3_folder_with_dotdot_key_is_refused(key_bucket, tmp_path):
    """``s3://b/series/`` lists a key ``series/..``: refused, nothing written outside scratch."""
    scratch = tmp_path / "scratch"
    with pytest.raises(InputError, match=r"series/\.\.: S3 key has an empty, '\.' or '\.\.'"):
        storage.fetch(f"s3://{key_bucket}/series/", scratch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch"]
    assert list(scratch.iterdir()) == []


def test_1010_byte_key_is_fetched_to_a_short_local_name(key_bucket, tmp_path):
    key = "arch/" + "x" * 1010 + ".tif"
    local = Path(storage.fetch(f"s3://{key_bucket}/{key}", tmp_path / "scratch"))
    assert local.parent == tmp_path / "scratch" and len(local.name) <= 113
    assert local.name.endswith("xxx.tif")
    with rasterio.open(local) as ds:
        assert (ds.width, ds.height) == (48, 48)


def test_archive_listing_with_odd_keys_fails_those_scenes_only(key_bucket, tmp_path):
    """``..``, empty and ``.`` segments and over-long keys in an archive listing: those scenes
    are planned as failed with the reason (nothing read or written for them); the good one is
    planned. Neither a local nor an S3 output prefix gets a path from the odd keys."""
    cfg = UpscaleConfig(src="<archive>", dst="<outputs>", model="bicubic")
    model = resolve_model("bicubic", 2)
    scenes = archive.list_scenes(f"s3://{key_bucket}/arch/**/*.tif")
    # arch//lead.tif is outside the glob (its relative path /lead.tif starts with a slash)
    assert sorted(s.scene_id[:12] for s in scenes) == ["../evil", "./dot", "ok", "x" * 12]
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    for prefix in (str(out), f"s3://{key_bucket}/outputs"):
        plans = {p.scene.uri.rsplit("/", 1)[-1][:12]: p
                 for p in archive.plan_archive(scenes, prefix, cfg, model)}
        assert plans["ok.tif"].status == "todo"
        assert plans["ok.tif"].paths.cog == f"{prefix}/ok/bicubic_x2/ok.tif"
        bad = [p for p in plans.values() if p.status == "failed"]
        assert len(bad) == 3 and all(p.paths is None for p in bad)
        reasons = " | ".join(p.reason for p in bad)
        assert reasons.count("'..' path segment") == 2, reasons  # ../evil, ./dot
        assert ("over 255 bytes" if prefix == str(out) else "S3 allows at most 1024") in reasons
        row = archive.failed_result(bad[0], InputError(bad[0].reason))
        assert row.status == "failed" and "\n" not in row.reason
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


def test_local_archive_with_newline_in_a_file_name(repo_data, tmp_path):
    folder = tmp_path / "arch"
    folder.mkdir()
    shutil.copy(repo_data.path(S2), folder / "ok.tif")
    shutil.copy(repo_data.path(S2), folder / "new\nline.tif")
    cfg = UpscaleConfig(src="<archive>", dst="<outputs>", model="bicubic")
    plans = archive.plan_archive(archive.list_scenes(str(folder)), str(tmp_path / "out"), cfg,
                                 resolve_model("bicubic", 2))
    status = {p.scene.scene_id: (p.status, p.reason) for p in plans}
    assert status["ok"] == ("todo", "no manifest")
    assert status["new\nline"][0] == "failed" and "control characters" in status["new\nline"][1]
    assert "\n" not in status["new\nline"][1]


# ----------------------------------------------------------------------- model weights

class _CreatesFile:
    """Unpickling this object calls ``open(target, "w")``: a file appears if it runs."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.target, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / f"evil{suffix}"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _CreatesFile(str(target))}, path)
    assert not target.exists()
    with pytest.raises(ModelError, match="needs full unpickling, which can run code; refusing"):
        load_weights(path, require_card=False)
    with pytest.raises(ModelError, match="model card missing"):
        load_weights(path)  # a card is required: nothing is deserialised without it
    with pytest.raises(ModelError, match="refusing"):
        load_model(str(path))
    assert not target.exists()


def test_console_script_pickle_model_exits_2_and_runs_nothing(landsat, tmp_path):
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "hook": _CreatesFile(str(target))}, evil)
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([CLI, "upscale", str(landsat), str(out / "x.tif"), "--model", str(evil)],
                         capture_output=True, text=True, timeout=120)
    assert_one_line_error(res.returncode, res.stderr, str(evil), "refusing")
    assert not target.exists() and list(out.iterdir()) == []


# ------------------------------------------------------------------------------ medical

def _bad_medical(tmp: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (source, DST name, phrase the one error line must contain)."""
    raw = CT_SMALL.read_bytes()
    (tmp / "ct_truncated.dcm").write_bytes(raw[: int(len(raw) * 0.6)])
    (tmp / "ex4d_truncated.nii.gz").write_bytes(EX4D.read_bytes()[:200_000])
    (tmp / "ex4d_truncated.nii").write_bytes(gzip.decompress(EX4D.read_bytes())[:600_000])
    (tmp / "cmu_truncated.svs").write_bytes(SVS.read_bytes()[:1_000_000])
    mixed = tmp / "mixed_series"
    mixed.mkdir()
    shutil.copy(CT_SMALL, mixed / "a.dcm")
    shutil.copy(MR_SMALL, mixed / "b.dcm")
    no_pixels = pydicom.dcmread(CT_SMALL)
    del no_pixels.PixelData
    no_pixels.save_as(tmp / "ct_no_pixels.dcm")
    return {
        "dicom-truncated": (tmp / "ct_truncated.dcm", "x.dcm", "truncated"),
        "dicom-no-pixels": (tmp / "ct_no_pixels.dcm", "x.dcm", "no pixel data"),
        "nifti-gz-truncated": (tmp / "ex4d_truncated.nii.gz", "x.nii.gz", "truncated"),
        "nifti-truncated": (tmp / "ex4d_truncated.nii", "x.nii", "truncated"),
        "svs-truncated": (tmp / "cmu_truncated.svs", "x.svs", "truncated"),
        "series-mixed": (mixed, "series_x2", "one series"),
        "dicom-to-nifti": (CT_SMALL, "x.nii.gz", "extension"),
        "series-to-one-file": (SERIES, "x.dcm", "folder name"),
        "nifti-to-tif": (EX4D, "x.tif", "extension"),
    }


@pytest.mark.parametrize("case", ["dicom-truncated", "dicom-no-pixels", "nifti-gz-truncated",
                                  "nifti-truncated", "svs-truncated", "series-mixed",
                                  "dicom-to-nifti", "series-to-one-file", "nifti-to-tif"])
def test_bad_medical_input_exits_2_one_line_nothing_written(case, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    src, dst_name, phrase = _bad_medical(tmp_path / "in")[case]
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_main(["upscale", str(src), str(out / dst_name), "--model", "bicubic",
                             "--no-progress"], capsys)
    assert_one_line_error(code, err, phrase)
    assert list(out.iterdir()) == [], "nothing may be written at the destination"


def test_console_script_truncated_dicom(tmp_path):
    src = tmp_path / "ct_truncated.dcm"
    src.write_bytes(CT_SMALL.read_bytes()[:5000])
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([CLI, "upscale", str(src), str(out / "x.dcm"), "--model", "bicubic"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "default"})
    assert_one_line_error(res.returncode, res.stderr, str(src), "truncated")
    assert list(out.iterdir()) == []


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Every decode of DICOM pixel data in this process (``Dataset.pixel_array``, which the
    pipeline's validation and staging use), recorded by file name, then done as usual."""
    seen: list[str] = []
    original = pydicom.dataset.Dataset.pixel_array

    def spy(ds):
        seen.append(os.path.basename(str(getattr(ds, "filename", "?"))))
        return original.fget(ds)

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(spy))
    return seen


@pytest.mark.parametrize("case", ["pixels", "frames", "series"])
def test_compressed_dicom_with_a_huge_header_is_refused_before_decoding(case, decodes, tmp_path,
                                                                        monkeypatch, capsys):
    """A real RLE-compressed DICOM (pydicom's MR_small_RLE.dcm, 64 x 64 x 16 bit) whose header
    is edited to claim a huge image is refused by the size caps from its header, with one line
    and exit 2, before any pixel data is decoded: Rows x Columns over SR_MAX_PIXELS; Number of
    Frames over SR_MAX_DECODED_BYTES; a series of two files each under the caps whose total is
    over them. The unedited file is decoded once and accepted (so the spy sees decodes)."""
    src_ds = pydicom.dcmread(pydicom_file("MR_small_RLE.dcm"))
    assert src_ds.file_meta.TransferSyntaxUID.is_compressed
    out = tmp_path / "out"
    out.mkdir()
    if case == "pixels":  # 60,000 x 60,000 = 3.6e9 px per plane > 2^31
        src_ds.Rows = src_ds.Columns = 60000
    elif case == "frames":  # 64 x 64 x 2 B x 1e7 frames = 82 GB > 64 GiB
        src_ds.NumberOfFrames = 10_000_000
    else:  # 2 files of 40,000 x 40,000 x 2 B = 3.2 GB each; cap 5 GB
        src_ds.Rows = src_ds.Columns = 40000
        monkeypatch.setenv("SR_MAX_DECODED_BYTES", str(5 * 10**9))
    if case == "series":
        src = tmp_path / "series"
        src.mkdir()
        for i in (1, 2):
            src_ds.InstanceNumber = i
            src_ds.save_as(src / f"mr{i}.dcm")
        dst = out / "series_x2"
    else:
        src = tmp_path / "huge.dcm"
        src_ds.save_as(src)
        dst = out / "x.dcm"
    code, _, err = run_main(["upscale", str(src), str(dst), "--model", "bicubic",
                             "--no-progress"], capsys)
    cap = "SR_MAX_PIXELS" if case == "pixels" else "SR_MAX_DECODED_BYTES"
    assert_one_line_error(code, err, str(src), "header says", cap, "refused before reading")
    assert decodes == [], "pixel data was decoded before the caps were checked"
    assert list(out.iterdir()) == []
    from sr_core.formats import open_input

    info = open_input(str(pydicom_file("MR_small_RLE.dcm")), "mr")  # the file as it is
    assert (info.height, info.width) == (64, 64) and decodes == ["MR_small_RLE.dcm"]
