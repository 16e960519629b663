"""Medical images through the one pipeline, on real files: DICOM (pydicom's CT_small / MR_small, a
NEMA CT, a 12-bit MR, a JPEG 2000 CR, a five-instance CT series), NIfTI (the MNI152 template,
nibabel's example4d) and the Aperio CMU-1-Small-Region slide.

For each: geometry scaled exactly (spacing / affine / MPP), values in the original units, metadata
kept, the output re-opened with the same library, tiled equal to whole-image; bad and truncated
inputs fail with one line and nothing at DST; patient data stays out of reports and logs.
Every run goes through ``run_upscale`` (the CLI's code path) or the CLI on a real Dask cluster.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from conftest import EX4D, MED, SERIES, SVS, pydicom_file, run_main
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian
from tifffile.tifffile import svs_description_metadata as svs_meta

from sr_core.formats import (
    FORMATS,
    REGISTRY,
    Format,
    detect,
    detect_format,
    format_for_head,
    format_named,
    iter_blocks,
    open_input,
)
from sr_core.formats.dicom import SPACING_TAGS
from sr_core.formats.nifti import in_plane_matrix
from sr_core.pipeline import UpscaleConfig, run_upscale

CT_SMALL = pydicom_file("CT_small.dcm")
MR_SMALL = pydicom_file("MR_small.dcm")
MNI = MED / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
#: Attributes that identify a patient (DICOM PS3.15 Basic Profile, the ones these files carry).
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                "OtherPatientIDs", "ReferringPhysicianName", "InstitutionName", "StudyID")


def upscale(src, dst, dask_address, **kw):
    cfg = UpscaleConfig(src=str(src), dst=str(dst), dask_address=dask_address, progress=False, **kw)
    return run_upscale(cfg)


def downsample_mean(y: np.ndarray, s: int = 2) -> np.ndarray:
    """2-D (or (..., H, W)) block mean: the SR output brought back to the input grid."""
    h, w = y.shape[-2] // s, y.shape[-1] // s
    return y[..., : h * s, : w * s].reshape(*y.shape[:-2], h, s, w, s).mean(axis=(-3, -1))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(data_range**2 / mse) if mse else float("inf")


# --------------------------------------------------------------------------------------- DICOM

DICOM_CASES = {
    "CT_small": CT_SMALL,                       # int16, rescale -1024 (HU)
    "MR_small": MR_SMALL,                       # int16
    "CT_693": MED / "693_UNCI.dcm",             # int16, 14 bits stored, HU
    "MR2_12bit": MED / "MR2_UNCI.dcm",          # uint16, 12 bits stored, oblique, slope 3.77
    "CR_jpeg2000": MED / "RG1_J2KI.dcm",        # uint16, 15 bits, JPEG 2000, MONOCHROME1
}


def test_format_detected_from_content(tmp_path):
    """Names lie: the content decides."""
    for src, fmt in ((CT_SMALL, "dicom"), (EX4D, "nifti"), (SVS, "wsi"), (SERIES, "dicom")):
        assert detect_format(str(src)) == fmt
        if src.is_file():
            renamed = tmp_path / f"renamed_{fmt}.tif"
            shutil.copy(src, renamed)
            assert detect_format(str(renamed)) == fmt


def test_one_format_contract_for_every_format(repo_data, tmp_path):
    """One registry list; each format sniffs, opens and names its own inputs, and a lookup by
    name or by first bytes gives the same format object (as zarr's StoreTests run per store)."""
    assert FORMATS == tuple(f.name for f in REGISTRY) and len(set(FORMATS)) == len(REGISTRY)
    assert REGISTRY[-1].name == "geotiff"  # the fallback sniffs last
    samples = {"geotiff": repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), "dicom": CT_SMALL,
               "nifti": EX4D, "wsi": SVS}
    for fmt in REGISTRY:
        assert isinstance(fmt, Format) and format_named(fmt.name) is fmt
        src = str(samples[fmt.name])
        assert detect(src) is fmt
        scene = fmt.open(src, src)
        assert scene.format == fmt.name and scene.count >= 1
        with open(src, "rb") as f:
            head = f.read(1024)
        by_head = format_for_head(head)
        assert by_head is None or by_head is fmt
        assert fmt.output_name(str(tmp_path / "x"), head).startswith(str(tmp_path / "x."))
        rep = {"input": scene.to_dict(), "output": {}, "scale": 2}
        planes, label = fmt.display_planes(rep)
        assert planes and all(0 <= p < scene.count for p in planes) and label
        assert fmt.value_units(rep)[0] > 0
    assert format_named(None).name == "geotiff"
    with pytest.raises(KeyError):
        format_named("jpeg")


@pytest.mark.parametrize("case", list(DICOM_CASES))
def test_dicom_geometry_units_and_metadata(case, dask_address, tmp_path):
    src = DICOM_CASES[case]
    dst = tmp_path / "out.dcm"
    run = upscale(src, dst, dask_address, model="bicubic", tile_size_px=1024)
    a, b = pydicom.dcmread(src), pydicom.dcmread(dst)
    assert (b.Rows, b.Columns) == (2 * a.Rows, 2 * a.Columns)
    spacing = [t for t in SPACING_TAGS if a.get(t)]
    assert spacing, "every case carries a spacing"
    for tag in spacing:
        assert np.allclose([float(v) for v in b.get(tag)], [float(v) / 2 for v in a.get(tag)],
                           rtol=1e-12, atol=0)
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "BitsStored", "HighBit",
                "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "RescaleType",
                "PhotometricInterpretation", "Modality", "StudyInstanceUID", "FrameOfReferenceUID",
                "PatientID", "SliceThickness", "WindowCenter", "WindowWidth"):
        assert b.get(tag) == a.get(tag), tag
    assert b.SeriesInstanceUID != a.SeriesInstanceUID and b.SOPInstanceUID != a.SOPInstanceUID
    assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
    assert b.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert b.ImageType[0] == "DERIVED" and "bicubic" in b.DerivationDescription
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    # values: stored values in range, modality units (HU for CT) through the output's own rescale
    x, y = a.pixel_array, b.pixel_array
    assert y.dtype == x.dtype
    lo, hi = ((-(1 << (a.BitsStored - 1)), (1 << (a.BitsStored - 1)) - 1)
              if a.PixelRepresentation else (0, (1 << a.BitsStored) - 1))
    assert lo <= y.min() and y.max() <= hi
    hx = np.asarray(apply_modality_lut(x, a), dtype=np.float64)
    hy = np.asarray(apply_modality_lut(y, b), dtype=np.float64)
    span = float(hx.max() - hx.min())
    assert abs(hy.mean() - hx.mean()) <= 0.002 * span
    assert psnr(downsample_mean(hy), hx, span) > 30
    pad = a.get("PixelPaddingValue")
    if pad is not None:  # padding (outside the field of view) stays padding, nothing else is
        is_pad = np.repeat(np.repeat(x == pad, 2, axis=0), 2, axis=1)
        assert ((y == pad) == is_pad).all()
        assert is_pad.any() == (case == "CT_693"), "693_UNCI has 494 padding pixels"
    rep = json.loads((tmp_path / "out.report.json").read_text())
    assert rep["input"]["format"] == "dicom" and rep["output"]["format"] == "dicom"
    assert rep["output"]["width"] == 2 * a.Columns
    assert run.published["output"] == str(dst)


def test_dicom_tiled_equals_whole_image(dask_address, tmp_path):
    src = MED / "693_UNCI.dcm"
    small = upscale(src, tmp_path / "small.dcm", dask_address, model="espcn-x2", tile_size_px=64)
    whole = upscale(src, tmp_path / "whole.dcm", dask_address, model="espcn-x2",
                    tile_size_px=1024)
    assert len(small.grid) == 64 and len(whole.grid) == 1
    a = pydicom.dcmread(tmp_path / "small.dcm").pixel_array.astype(np.int64)
    b = pydicom.dcmread(tmp_path / "whole.dcm").pixel_array.astype(np.int64)
    assert a.shape == b.shape == (1024, 1024)
    assert np.abs(a - b).max() <= 1


def test_dicom_series_folder(dask_address, tmp_path):
    dst = tmp_path / "series_x2"
    upscale(SERIES, dst, dask_address, model="bicubic")
    inputs = sorted((pydicom.dcmread(f) for f in SERIES.iterdir()), key=lambda d: d.InstanceNumber)
    outputs = [pydicom.dcmread(f) for f in sorted(dst.iterdir())]
    assert len(outputs) == len(inputs) == 5
    assert len({d.SeriesInstanceUID for d in outputs}) == 1
    assert outputs[0].SeriesInstanceUID != inputs[0].SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in outputs}) == 5
    for a, b in zip(inputs, outputs, strict=True):
        assert b.InstanceNumber == a.InstanceNumber
        assert b.ImagePositionPatient == a.ImagePositionPatient
        assert (b.Rows, b.Columns) == (32, 32)
        assert [float(v) for v in b.PixelSpacing] == [float(v) / 2 for v in a.PixelSpacing]
        assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
        hx = apply_modality_lut(a.pixel_array, a).astype(np.float64)
        hy = apply_modality_lut(b.pixel_array, b).astype(np.float64)
        assert abs(hy.mean() - hx.mean()) <= 0.01 * float(np.ptp(hx))


@pytest.mark.parametrize("name", ["SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"],
                         ids=["rgb-rle-2frame", "ybr422-jpeg"])
def test_dicom_multiframe_and_colour(name, dask_address, tmp_path):
    """Frames and colour samples are planes: RLE 16-bit RGB with 2 frames, JPEG YBR_FULL_422
    (pydicom decodes it to RGB, so the output says RGB)."""
    src = pydicom_file(name)
    upscale(src, tmp_path / "out.dcm", dask_address, model="bicubic")
    a, b = pydicom.dcmread(src), pydicom.dcmread(tmp_path / "out.dcm")
    assert b.get("NumberOfFrames", 1) == a.get("NumberOfFrames", 1)
    assert (b.Rows, b.Columns, b.SamplesPerPixel) == (2 * a.Rows, 2 * a.Columns, 3)
    assert b.PhotometricInterpretation == "RGB" and b.PlanarConfiguration == 0
    assert [float(v) for v in b.PixelSpacing] == [float(v) / 2 for v in a.PixelSpacing]
    x = a.pixel_array.astype(np.float64)
    y = b.pixel_array.astype(np.float64)
    assert y.shape == (*x.shape[:-3], 2 * a.Rows, 2 * a.Columns, 3)
    span = float(x.max() - x.min())
    back = downsample_mean(np.moveaxis(y, -1, -3))
    assert psnr(back, np.moveaxis(x, -1, -3), span) > 25


# --------------------------------------------------------------------------------------- NIfTI

@pytest.fixture(scope="module")
def mni_slab(tmp_path_factory) -> Path:
    """24 axial slices of the MNI152 template (nibabel's slicer keeps the header and moves the
    affine's origin to the slab), to keep the test quick."""
    path = tmp_path_factory.mktemp("mni") / "mni_slab.nii.gz"
    nib.save(nib.load(MNI).slicer[:, :, 80:104], path)
    return path


@pytest.mark.parametrize("src,dst_name", [(EX4D, "ex4d_x2.nii.gz"), ("mni", "mni_x2.nii")],
                         ids=["example4d", "mni152"])
def test_nifti_affine_units_and_values(src, dst_name, mni_slab, dask_address, tmp_path):
    src = mni_slab if src == "mni" else src
    dst = tmp_path / dst_name
    upscale(src, dst, dask_address, model="bicubic", tile_size_px=512)
    a, b = nib.load(src), nib.load(dst)
    assert (open(dst, "rb").read(2) == b"\x1f\x8b") == dst_name.endswith(".gz")
    assert b.shape == (2 * a.shape[0], 2 * a.shape[1], *a.shape[2:])
    za, zb = a.header.get_zooms(), b.header.get_zooms()
    assert np.allclose(zb, (za[0] / 2, za[1] / 2, *za[2:]), rtol=1e-6)
    assert b.get_data_dtype() == a.get_data_dtype()
    assert b.header.get_xyzt_units() == a.header.get_xyzt_units()
    assert (b.dataobj.slope, b.dataobj.inter) == (a.dataobj.slope, a.dataobj.inter)
    for code in ("sform_code", "qform_code", "intent_code", "xyzt_units"):
        assert b.header[code] == a.header[code], code
    m = in_plane_matrix(2)
    assert np.allclose(b.affine, a.affine @ m, atol=1e-4)
    # the volume's outer corners stay put: the output covers exactly the input's extent
    nx, ny = a.shape[:2]
    for corner_in, corner_out in (((-0.5, -0.5), (-0.5, -0.5)),
                                  ((nx - 0.5, ny - 0.5), (2 * nx - 0.5, 2 * ny - 0.5))):
        pa = a.affine @ [*corner_in, 0, 1]
        pb = b.affine @ [*corner_out, 0, 1]
        assert np.allclose(pa, pb, atol=1e-4)
    x = np.asarray(a.dataobj, dtype=np.float64)
    y = np.asarray(b.dataobj, dtype=np.float64)
    span = float(x.max() - x.min())
    xs = np.moveaxis(x, (0, 1), (-1, -2))
    ys = np.moveaxis(y, (0, 1), (-1, -2))
    assert abs(y.mean() - x.mean()) <= 0.002 * span
    assert psnr(downsample_mean(ys), xs, span) > 30
    page = (tmp_path / (dst_name.split(".")[0] + ".report.html")).read_text()
    assert "voxel size" in page and page.count('data-figure="') >= 4


def test_nifti_scaling_kept(dask_address, tmp_path):
    """scl_slope / scl_inter are kept and the stored values stay stored values: example4d with
    its header's scaling set to 0.5 x - 100 (header bytes 112 and 116, NIfTI-1)."""
    raw = bytearray(gzip.decompress(EX4D.read_bytes()))
    raw[112:120] = np.array([0.5, -100.0], dtype="<f4").tobytes()
    src = tmp_path / "ex4d_scaled.nii"
    src.write_bytes(bytes(raw))
    upscale(src, tmp_path / "out.nii", dask_address, model="bicubic")
    a, b = nib.load(src), nib.load(tmp_path / "out.nii")
    # nibabel moves the scaling from the loaded header into the array proxy
    assert (b.dataobj.slope, b.dataobj.inter) == (a.dataobj.slope, a.dataobj.inter) == (0.5, -100)
    stored_a = np.asarray(a.dataobj.get_unscaled(), dtype=np.float64)
    stored_b = np.asarray(b.dataobj.get_unscaled(), dtype=np.float64)
    assert b.dataobj.get_unscaled().dtype == np.int16
    assert abs(stored_b.mean() - stored_a.mean()) <= 0.002 * float(np.ptp(stored_a))
    assert abs(b.get_fdata().mean() - a.get_fdata().mean()) <= 0.002 * float(np.ptp(a.get_fdata()))


def test_nifti_tiled_equals_whole_image(dask_address, tmp_path):
    small = upscale(EX4D, tmp_path / "small.nii.gz", dask_address, model="espcn-x2",
                    tile_size_px=32)
    upscale(EX4D, tmp_path / "whole.nii.gz", dask_address, model="espcn-x2", tile_size_px=512)
    assert len(small.grid) == 12
    a = np.asarray(nib.load(tmp_path / "small.nii.gz").dataobj, dtype=np.int64)
    b = np.asarray(nib.load(tmp_path / "whole.nii.gz").dataobj, dtype=np.int64)
    assert a.shape == b.shape == (256, 192, 24, 2)
    assert np.abs(a - b).max() <= 1


# -------------------------------------------------------------------------- whole-slide images

def test_svs_pyramid_mpp_and_values(dask_address, tmp_path):
    dst = tmp_path / "cmu_x2.svs"
    upscale(SVS, dst, dask_address, model="bicubic", tile_size_px=1024)
    with tifffile.TiffFile(SVS) as ta, tifffile.TiffFile(dst) as tb:
        assert tb.is_svs
        base = tb.series[0]
        assert base.shape == (2 * 2967, 2 * 2220, 3) and base.dtype == np.uint8
        assert len(base.levels) >= 3
        for upper, lower in zip(base.levels, base.levels[1:], strict=False):
            assert lower.shape[:2] == tuple(-(-n // 2) for n in upper.shape[:2])
        page = tb.pages.first
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        meta_a = svs_meta(ta.pages.first.description)
        meta_b = svs_meta(page.description)
        assert meta_b["MPP"] == pytest.approx(meta_a["MPP"] / 2, rel=1e-6)
        assert meta_b["AppMag"] == meta_a["AppMag"] * 2
        assert meta_b["ScanScope ID"] == meta_a["ScanScope ID"]
        xres = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        assert xres[0] / xres[1] == pytest.approx(1e4 / (meta_a["MPP"] / 2), rel=1e-6)
        # level 1 of the output is its 2 x 2 mean: back on the input's grid
        x = ta.series[0].asarray()
        lvl1 = base.levels[1].asarray()
    assert lvl1.shape == x.shape
    assert psnr(lvl1, x, 255) > 30
    assert abs(float(lvl1.mean()) - float(x.mean())) < 1.0
    page = (tmp_path / "cmu_x2.report.html").read_text()
    assert "microns per pixel" in page and "0.2495" in page
    assert {"thumbnail", "crops-A", "heatmap", "histograms", "bands"} <= set(
        re.findall(r'data-figure="([^"]+)"', page))


def test_wsi_read_lazily_in_chunks():
    scene = open_input(SVS)
    assert scene.format == "wsi" and scene.geometry["mpp"] == [0.499, 0.499]
    blocks = iter_blocks(scene, 512)
    planes, window, data, valid = next(blocks)
    assert data.shape == (3, 512, 512) and valid.all() and planes == slice(0, 3)
    with tifffile.TiffFile(SVS) as tif:
        assert np.array_equal(data.transpose(1, 2, 0), tif.series[0].asarray()[:512, :512])


def test_ome_tiff_tiled_equals_whole_image(dask_address, tmp_path):
    """An OME-TIFF made of a real crop of the CMU slide: the OME writer keeps PhysicalSize/2."""
    with tifffile.TiffFile(SVS) as tif:
        crop = tif.series[0].asarray()[1000:1200, 800:1030]
    src = tmp_path / "crop.ome.tif"
    tifffile.imwrite(src, crop, tile=(64, 64), photometric="rgb",
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.499, "PhysicalSizeXUnit": "µm",
                               "PhysicalSizeY": 0.499, "PhysicalSizeYUnit": "µm"})
    assert detect_format(str(src)) == "wsi"
    small = upscale(src, tmp_path / "small.tif", dask_address, model="espcn-x2", tile_size_px=32)
    upscale(src, tmp_path / "whole.tif", dask_address, model="espcn-x2", tile_size_px=512)
    assert len(small.grid) == 56
    with tifffile.TiffFile(tmp_path / "small.tif") as ta, \
            tifffile.TiffFile(tmp_path / "whole.tif") as tb:
        assert ta.is_ome
        a, b = ta.series[0].asarray(), tb.series[0].asarray()
        pixels = tifffile.xml2dict(tb.ome_metadata)["OME"]["Image"]["Pixels"]
        assert len(tb.series[0].levels) == 1  # 400 x 460 fits one level
    assert a.shape == b.shape == (400, 460, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert pixels["PhysicalSizeX"] == pytest.approx(0.2495)


# --------------------------------------------------------------------- bad input and patient data

# Truncated, corrupt and mismatched medical inputs are rows of test_bad_inputs.py.


def _phi_values(paths) -> set[str]:
    values = set()
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for kw in PHI_KEYWORDS:
            v = ds.get(kw)
            for item in (v if isinstance(v, pydicom.multival.MultiValue) else [v]):
                text = str(item or "").strip()
                if len(text) >= 4:
                    values.add(text)
                    values.update(part for part in text.split("^") if len(part) >= 4)
    return values


@pytest.mark.parametrize("src,dst_name", [(SERIES, "series_x2"), (MED / "RG1_J2KI.dcm", "cr.dcm")],
                         ids=["ct-series", "cr-jpeg2000"])
def test_no_patient_data_in_report_or_log(src, dst_name, dask_address, tmp_path, capsys, caplog,
                                          recwarn):
    files = sorted(src.iterdir()) if src.is_dir() else [src]
    values = _phi_values(files)
    assert len(values) >= 3, values  # the inputs do carry patient data
    dst = tmp_path / dst_name
    caplog.set_level(logging.DEBUG)
    code, out, err = run_main(["upscale", str(src), str(dst), "--model", "bicubic",
                               "--dask-address", dask_address, "--no-progress"], capsys)
    assert code == 0, err
    texts = {"report.json": (tmp_path / f"{Path(dst_name).stem}.report.json").read_text(),
             "report.md": (tmp_path / f"{Path(dst_name).stem}.report.md").read_text(),
             # the page's text; its embedded PNGs are pixels, and their base64 text holds any
             # four-letter string by chance (a 4-letter name part matched one once)
             "report.html": re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:",
                                   (tmp_path / f"{Path(dst_name).stem}.report.html").read_text()),
             "stdout": out, "stderr": err, "log": caplog.text,
             "warnings": "\n".join(str(w.message) for w in recwarn)}
    assert "dicom" in texts["report.json"]
    # the HTML page is the full one (pictures, physical geometry), not an empty shell
    assert texts["report.html"].count('data-figure="') >= 4
    assert ("Pixel Spacing" in texts["report.html"]
            and "report_html_error" not in texts["report.json"])
    for where, text in texts.items():
        leaked = sorted(v for v in values if v.lower() in text.lower())
        assert not leaked, f"{where} contains patient data {leaked}"
    # the scan bites: the output DICOM keeps the patient's attributes, and the scan finds them
    written = b"".join(p.read_bytes() for p in ([dst] if dst.is_file() else dst.iterdir()))
    assert all(v.encode() in written for v in values if v.isascii())


# ------------------------------------------------------------------------------------------ S3

def test_s3_series_folder_and_nifti(moto_s3, dask_address, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="med")
    for f in SERIES.iterdir():
        s3.upload_file(str(f), "med", f"in/ct5n/{f.name}")
    s3.upload_file(str(EX4D), "med", "in/example4d.nii.gz")
    upscale("s3://med/in/ct5n/", "s3://med/out/ct5n_x2/", dask_address, model="bicubic")
    upscale("s3://med/in/example4d.nii.gz", "s3://med/out/ex4d_x2.nii.gz", dask_address,
            model="bicubic")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="med", Prefix="out/")["Contents"]}
    assert keys == {*(f"out/ct5n_x2/IM{i:05d}.dcm" for i in range(1, 6)),
                    "out/ct5n_x2.report.json", "out/ct5n_x2.report.md", "out/ct5n_x2.report.html",
                    "out/ct5n_x2.manifest.json", "out/ex4d_x2.manifest.json",
                    "out/ex4d_x2.nii.gz", "out/ex4d_x2.report.json", "out/ex4d_x2.report.md",
                    "out/ex4d_x2.report.html"}
    s3.download_file("med", "out/ct5n_x2/IM00001.dcm", str(tmp_path / "im1.dcm"))
    assert pydicom.dcmread(tmp_path / "im1.dcm").Rows == 32
    s3.download_file("med", "out/ex4d_x2.nii.gz", str(tmp_path / "ex4d.nii.gz"))
    assert nib.load(tmp_path / "ex4d.nii.gz").shape == (256, 192, 24, 2)


# ------------------------------------------------------------- enhanced multi-frame DICOM

ENHANCED_CT = MED / "eCT_Supplemental.dcm"


def _measures(ds, seq: str) -> list:
    return [m for g in ds.get(seq, []) for m in g.get("PixelMeasuresSequence", [])]


@pytest.mark.parametrize("where", ["shared", "per-frame"])
def test_enhanced_multiframe_spacing(where, dask_address, tmp_path):
    """Enhanced CT (2 frames, 512 x 512, from the pydicom-data wheel): Pixel Spacing lives only in
    the functional groups' Pixel Measures macro; it is divided by the scale there. ``per-frame``:
    the same file with the macro moved from the shared item into every per-frame item."""
    src = ENHANCED_CT
    if where == "per-frame":
        ds = pydicom.dcmread(ENHANCED_CT)
        shared = ds.SharedFunctionalGroupsSequence[0]
        macro = shared.PixelMeasuresSequence
        del shared.PixelMeasuresSequence
        for item in ds.PerFrameFunctionalGroupsSequence:
            item.PixelMeasuresSequence = pydicom.sequence.Sequence([pydicom.Dataset(macro[0])])
        src = tmp_path / "ect_per_frame.dcm"
        ds.save_as(src)
    run = upscale(src, tmp_path / "out.dcm", dask_address, model="bicubic")
    a, b = pydicom.dcmread(src), pydicom.dcmread(tmp_path / "out.dcm")
    assert "PixelSpacing" not in a and "PixelSpacing" not in b
    seq = "SharedFunctionalGroupsSequence" if where == "shared" else \
        "PerFrameFunctionalGroupsSequence"
    ma, mb = _measures(a, seq), _measures(b, seq)
    assert len(ma) == len(mb) == (1 if where == "shared" else 2)
    for x, y in zip(ma, mb, strict=True):
        assert [float(v) for v in y.PixelSpacing] == [float(v) / 2 for v in x.PixelSpacing]
        assert y.SliceThickness == x.SliceThickness
    other = "PerFrameFunctionalGroupsSequence" if where == "shared" else \
        "SharedFunctionalGroupsSequence"
    assert _measures(a, other) == _measures(b, other) == []
    assert (b.NumberOfFrames, b.Rows, b.Columns) == (2, 1024, 1024)
    assert b.SOPClassUID == a.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    geo_in = run.published["report"]["input"]["geometry"]
    assert geo_in["pixel_spacing_mm"] == [float(v) for v in ma[0].PixelSpacing]
    assert run.published["report"]["output"]["pixel_spacing_mm"] == \
        [float(v) / 2 for v in ma[0].PixelSpacing]
    x, y = a.pixel_array.astype(np.float64), b.pixel_array.astype(np.float64)
    assert y.shape == (2, 1024, 1024)
    span = float(x.max() - x.min())
    assert psnr(downsample_mean(y), x, span) > 30
