"""Archive fan-out on medical inputs, through the ``upscale_archive`` flow (Prefect test harness,
real Dask cluster): one archive, as a local folder and as an S3 prefix on ``moto_server``, that
mixes a GeoTIFF, a NIfTI (.nii.gz), a single DICOM file, a DICOM series folder and an Aperio SVS.
Each output keeps its format's natural name, only the georeferenced one gets a STAC item, the
archive page links every scene's HTML report, and a second run skips them all (manifests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from conftest import crop_scene
from pydicom.data import get_testdata_file

MED = Path(__file__).resolve().parent / "data" / "medical"

#: scene id -> output name under <scene id>/bicubic_x2/ (a trailing "/" marks a folder)
OUTPUTS = {"geo/s2": "s2.tif", "nifti/ex4d_slab": "ex4d_slab.nii.gz",
           "dicom/ct_small": "ct_small.dcm", "dicom/ct5n": "ct5n/", "wsi/cmu_crop": "cmu_crop.tif"}


@pytest.fixture(scope="module")
def medical_archive(repo_data, tmp_path_factory) -> Path:
    """The mixed archive folder. The NIfTI is 3 slices of the first volume of nibabel's
    example4d; the SVS is a 140 x 120 crop of the CMU slide written with the slide's own Aperio
    description (the pipeline reads it as SVS: MPP 0.499)."""
    root = tmp_path_factory.mktemp("med-archive") / "archive"
    for sub in ("geo", "nifti", "dicom/ct5n", "wsi"):
        (root / sub).mkdir(parents=True)
    crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), root / "geo" / "s2.tif",
               row=300, col=300, height=40, width=48)
    nib.save(nib.load(MED / "example4d.nii.gz").slicer[:, :, 10:13, 0:1],
             root / "nifti" / "ex4d_slab.nii.gz")
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "dicom" / "ct_small.dcm")
    for f in (MED / "CT5N").iterdir():
        shutil.copy(f, root / "dicom" / "ct5n" / f.name)
    with tifffile.TiffFile(MED / "CMU-1-Small-Region.svs") as tif:
        desc = tif.pages.first.description
        crop = tif.series[0].asarray()[1000:1120, 800:940]
    desc = desc.partition("\n")[0] + "\n140x120 (64x64) JPEG/RGB|" + desc.split("|", 1)[1]
    tifffile.imwrite(root / "wsi" / "cmu_crop.svs", crop, tile=(64, 64), photometric="rgb",
                     description=desc, compression="jpeg")
    return root


def run_archive(source: str, output: str, dask_address: str) -> dict:
    from flows.upscale_archive import Cluster, Processing, upscale_archive

    state = upscale_archive(source=source, output_prefix=output,
                            processing=Processing(model="bicubic", tile_size=64, wald_window=48),
                            cluster=Cluster(dask_address=dask_address),
                            max_scenes_in_flight=2, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def expected_files() -> set[str]:
    names = {"archive-summary.json", "archive-report.html"}
    for sid, out in OUTPUTS.items():
        folder, stem = f"{sid}/bicubic_x2", sid.rsplit("/", 1)[-1]
        names |= {f"{folder}/{stem}.{ext}" for ext in ("report.json", "report.md",
                                                        "report.html", "manifest.json")}
        names |= ({f"{folder}/{out}IM{i:05d}.dcm" for i in range(1, 6)} if out.endswith("/")
                  else {f"{folder}/{out}"})
    names.add("geo/s2/bicubic_x2/s2.stac.json")  # the only georeferenced output
    return names


def check_outputs(local: Path, summary: dict, prefix: str) -> None:
    """Re-open every output (downloaded to ``local`` for S3) with its own library."""
    rows = {r["scene_id"]: r for r in summary["results"]}
    assert set(rows) == set(OUTPUTS)
    for sid, out in OUTPUTS.items():
        assert rows[sid]["status"] == "done", rows[sid]
        assert rows[sid]["output"] == f"{prefix}/{sid}/bicubic_x2/{out}".rstrip(
            "/" if not prefix.startswith("s3://") else "")
        assert (rows[sid]["stac"] is not None) == (sid == "geo/s2")
    base = {sid: local / sid / "bicubic_x2" for sid in OUTPUTS}
    img = nib.load(base["nifti/ex4d_slab"] / "ex4d_slab.nii.gz")
    assert img.shape == (256, 192, 3, 1)
    assert np.allclose(img.header.get_zooms()[:2], (1.0, 1.0))
    one = pydicom.dcmread(base["dicom/ct_small"] / "ct_small.dcm")
    assert (one.Rows, one.Columns) == (256, 256)
    series = [pydicom.dcmread(f) for f in sorted((base["dicom/ct5n"] / "ct5n").iterdir())]
    assert len(series) == 5 and len({d.SeriesInstanceUID for d in series}) == 1
    assert all(d.Rows == 32 for d in series)
    with tifffile.TiffFile(base["wsi/cmu_crop"] / "cmu_crop.tif") as tif:
        assert tif.is_svs and tif.series[0].shape == (240, 280, 3)
    item = json.loads((base["geo/s2"] / "s2.stac.json").read_text())
    assert item["properties"]["proj:shape"] == [80, 96]
    manifest = json.loads((base["dicom/ct5n"] / "ct5n.manifest.json").read_text())
    assert manifest["input"]["files"] == 5 and "stac" not in manifest["outputs"]
    assert manifest["outputs"]["output"]["uri"].rstrip("/").endswith("dicom/ct5n/bicubic_x2/ct5n")
    assert len(manifest["outputs"]["output"]["files"]) == 5
    page = (local / "archive-report.html").read_text()
    for sid in OUTPUTS:
        assert f'{sid}/bicubic_x2/{sid.rsplit("/", 1)[-1]}.report.html' in page, sid


def test_medical_archive_local(medical_archive, prefect_harness, dask_address,  # noqa: F811
                               tmp_path):
    out = tmp_path / "out"
    first = run_archive(f"{medical_archive}/**/*", str(out), dask_address)
    assert (first["done"], first["skipped"], first["failed"]) == (5, 0, 0), first
    got = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
           and not str(p.relative_to(out)).startswith("_runs/")}
    assert got == expected_files()
    check_outputs(out, json.loads((out / "archive-summary.json").read_text()), str(out))

    again = run_archive(f"{medical_archive}/**/*", str(out), dask_address)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 5, 0)
    summary = json.loads((out / "archive-summary.json").read_text())
    rows = {r["scene_id"]: r for r in summary["results"]}
    assert rows["dicom/ct5n"]["output"] == str(out / "dicom/ct5n/bicubic_x2/ct5n")
    # a missing output (not a missing COG) is noticed and redone
    (out / "nifti/ex4d_slab/bicubic_x2/ex4d_slab.nii.gz").unlink()
    third = run_archive(f"{medical_archive}/**/*", str(out), dask_address)
    assert (third["done"], third["skipped"]) == (1, 4)
    rows = {r["scene_id"]: r for r in
            json.loads((out / "archive-summary.json").read_text())["results"]}
    assert rows["nifti/ex4d_slab"]["processed_because"] == "output missing"


def test_medical_archive_s3(medical_archive, moto_s3, prefect_harness,  # noqa: F811
                            dask_address, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="medarch")
    for f in medical_archive.rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), "medarch", f"in/{f.relative_to(medical_archive)}")
    first = run_archive("s3://medarch/in/**/*", "s3://medarch/out", dask_address)
    assert (first["done"], first["skipped"], first["failed"]) == (5, 0, 0), first
    keys = {o["Key"][len("out/"):] for page in
            s3.get_paginator("list_objects_v2").paginate(Bucket="medarch", Prefix="out/")
            for o in page.get("Contents", [])}
    assert {k for k in keys if not k.startswith("_runs/")} == expected_files()
    local = tmp_path / "dl"
    for k in keys:
        (local / k).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file("medarch", f"out/{k}", str(local / k))
    check_outputs(local, json.loads((local / "archive-summary.json").read_text()),
                  "s3://medarch/out")
    again = run_archive("s3://medarch/in/**/*", "s3://medarch/out", dask_address)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 5, 0)
