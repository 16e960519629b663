"""``--self-ensemble``: the mean over the eight flips / rotations of the input and the uncertainty
layer (their per-pixel standard deviation), on real scenes through the real pipeline and a real
Dask cluster (``dask_address``), and ``sr-pipeline evaluate --self-ensemble``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import crop_scene, pydicom_file, run_main
from test_models import rand01, randomized

from sr_core.formats.cog import validate_cog
from sr_core.models import ensemble
from sr_core.models.registry import build_module, load_model
from sr_core.models.weights import save_model
from sr_core.pipeline import UpscaleConfig, run_upscale

# The eight transforms written out independently of sr_core.models.ensemble: (forward, inverse)
# on the last two axes.
EIGHT = [
    (lambda a: a, lambda a: a),
    (lambda a: np.rot90(a, 1, (-2, -1)), lambda a: np.rot90(a, -1, (-2, -1))),
    (lambda a: a[..., ::-1, ::-1], lambda a: a[..., ::-1, ::-1]),
    (lambda a: np.rot90(a, -1, (-2, -1)), lambda a: np.rot90(a, 1, (-2, -1))),
    (lambda a: a[..., :, ::-1], lambda a: a[..., :, ::-1]),
    (lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, :]),
    (lambda a: np.swapaxes(a, -1, -2), lambda a: np.swapaxes(a, -1, -2)),
    (lambda a: np.swapaxes(a, -1, -2)[..., ::-1, ::-1],
     lambda a: np.swapaxes(a[..., ::-1, ::-1], -1, -2)),
]


def eight_outputs(model, x: np.ndarray) -> np.ndarray:
    """``(8, bands, h*s, w*s)`` float64: the model on each transform of ``x``, mapped back."""
    return np.stack([inv(model.upscale(np.ascontiguousarray(fwd(x))))
                     for fwd, inv in EIGHT]).astype(np.float64)


def _model(architecture: str, arguments: dict, folder: Path, seed: int = 3):
    module = randomized(build_module(architecture, **arguments), seed=seed)
    if architecture == "srcnn":  # a reference checkpoint without card: the Y-channel model
        path = folder / "srcnn_t.pth"
        torch.save({"state_dict": module.state_dict()}, path)
        return str(path)
    card = {"name": f"{architecture}-t", "architecture": architecture, "arguments": arguments,
            "scale": arguments["scale"], "training": {}, "metrics": {}}
    return str(save_model(module, card, folder / f"{architecture}_t"))


# --- the ensemble itself --------------------------------------------------------------------

def test_dihedral_transforms_are_the_eight_and_invert() -> None:
    x = rand01(2, 5, 7)
    images = {ensemble.apply(x, t).tobytes() + bytes(ensemble.apply(x, t).shape)
              for t in ensemble.DIHEDRAL}
    assert len(ensemble.DIHEDRAL) == 8 and len(images) == 8
    for t in ensemble.DIHEDRAL:
        np.testing.assert_array_equal(ensemble.invert(ensemble.apply(x, t), t), x)
    assert {img.tobytes() for img in (fwd(x) for fwd, _ in EIGHT)} == \
        {ensemble.apply(x, t).tobytes() for t in ensemble.DIHEDRAL}


@pytest.mark.parametrize(("architecture", "arguments", "bands"), [
    ("srresnet", {"scale": 2, "n_blocks": 1, "n_feats": 8, "in_channels": 3}, 4),  # band groups
    ("srcnn", {"scale": 3, "n_feats": [8, 4]}, 3),  # the Y-channel path on RGB
    ("fsrcnn", {"scale": 2, "d": 8, "s": 4, "m": 1}, 2),  # band by band
], ids=["srresnet-groups", "srcnn-luma", "fsrcnn-bands"])
def test_self_ensemble_is_the_mean_of_the_eight_outputs(architecture, arguments, bands,
                                                        tmp_path) -> None:
    path = _model(architecture, arguments, tmp_path)
    model = load_model(path, scale=arguments["scale"])
    if architecture == "srcnn":
        assert model.descriptor.colour == "y"
    x = rand01(bands, 11, 14, seed=7)  # not square: the rotations change the shape
    outs = eight_outputs(model, x)
    assert np.abs(outs - outs[0]).max() > 1e-3, "a random network is not equivariant"
    (mean, std), = model.upscale_many_with_std([x])
    assert mean.shape == std.shape == (bands, 11 * model.scale, 14 * model.scale)
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean, outs.mean(axis=0), atol=2e-6)
    np.testing.assert_allclose(std, outs.std(axis=0), atol=2e-6)  # population std, ddof = 0
    model.self_ensemble = True  # upscale / upscale_many return the mean (Wald check, evaluate)
    np.testing.assert_array_equal(model.upscale(x), mean)
    other = rand01(bands, 11, 14, seed=8)
    batch = model.upscale_many_with_std([x, other])
    np.testing.assert_allclose(batch[0][0], mean, atol=1e-6)
    np.testing.assert_allclose(batch[1][0], eight_outputs(model, other).mean(axis=0), atol=2e-6)


def test_size_multiple_model_is_padded_before_the_transforms(tmp_path) -> None:
    """RRDBNet x2 pixel-unshuffles (size multiple 2): an odd-sized image is padded (reflect,
    bottom/right) to the multiple first, then transformed, so each transform sees the same 2 px
    grid; the mean is cropped back."""
    arguments = {"scale": 2, "num_block": 1, "num_feat": 8, "num_grow_ch": 4, "in_channels": 1}
    model = load_model(_model("rrdbnet", arguments, tmp_path))
    assert model.descriptor.size_multiple == 2
    x = rand01(1, 9, 13, seed=2)
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1)), mode="reflect")
    outs = eight_outputs(model, padded)[..., :18, :26]
    (mean, std), = model.upscale_many_with_std([x])
    np.testing.assert_allclose(mean, outs.mean(axis=0), atol=2e-6)
    np.testing.assert_allclose(std, outs.std(axis=0), atol=2e-6)


def test_bicubic_is_equivariant() -> None:
    model = load_model("bicubic", scale=3)
    x = rand01(3, 17, 12, seed=4)
    (mean, std), = model.upscale_many_with_std([x])
    assert std.max() <= 1e-6  # float rounding only
    np.testing.assert_allclose(mean, model.upscale(x), atol=1e-6)


# --- through the pipeline ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def crops(repo_data, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("se-crops")
    return {
        # nodata corner inside: the layer must be NaN exactly where the output is nodata
        "landsat": crop_scene(repo_data.path("landsat7_RGB.byte.tif"), folder / "landsat.tif",
                              row=150, col=60, height=70, width=84),
        "s2": crop_scene(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif"), folder / "s2.tif",
                         row=400, col=380, height=64, width=72),
        "dem": crop_scene(repo_data.path("Copernicus_DSM_COG_10_N00_00_E006_00_DEM.tif"),
                          folder / "dem.tif", row=2700, col=1800, height=45, width=39),
    }


def upscale(src, dst, dask_address, **kw):
    return run_upscale(UpscaleConfig(src=str(src), dst=str(dst), dask_address=dask_address,
                                     progress=False, **kw))


def layer_of(path: Path) -> Path:
    return path.with_name(path.stem + ".uncertainty.tif")


def test_uncertainty_cog_beside_the_output(crops, dask_address, tmp_path) -> None:
    dst = tmp_path / "landsat_x2.tif"
    run = upscale(crops["landsat"], dst, dask_address, model="bicubic", tile_size_px=32,
                  self_ensemble=True)
    layer = layer_of(dst)
    assert validate_cog(layer) == []
    with rasterio.open(dst) as out, rasterio.open(layer) as unc:
        assert (unc.width, unc.height, unc.count) == (out.width, out.height, out.count)
        assert unc.crs == out.crs and unc.crs is not None
        assert unc.transform == out.transform
        assert unc.dtypes == ("float32",) * 3 and np.isnan(unc.nodata)
        std, valid = unc.read(), out.read_masks() > 0
    assert (~valid).any() and valid.any()
    assert np.array_equal(np.isnan(std), ~valid)
    assert np.nanmax(std) <= 1e-3  # bicubic is equivariant: 0 up to float rounding (DN)
    doc = json.loads((tmp_path / "landsat_x2.manifest.json").read_text())
    entry = doc["outputs"]["uncertainty"]
    assert entry["uri"] == str(layer) and entry["bytes"] == layer.stat().st_size
    assert doc["parameters"]["self_ensemble"] is True
    rep = json.loads((tmp_path / "landsat_x2.report.json").read_text())
    se = rep["self_ensemble"]
    assert se["enabled"] and se["transforms"] == 8 and se["uncertainty_uri"] == str(layer)
    assert [b["band"] for b in se["bands"]] == [1, 2, 3]
    assert all(b["max"] <= 1e-3 and b["valid_px"] == int(valid[i].sum())
               for i, b in enumerate(se["bands"]))
    md = (tmp_path / "landsat_x2.report.md").read_text()
    assert "Self-ensemble: mean of 8 flips/rotations" in md and layer.name in md
    html = (tmp_path / "landsat_x2.report.html").read_text()
    assert 'data-figure="uncertainty"' in html and "Self-ensemble std, band 3" in html
    assert run.published["report_html"] and not list(tmp_path.glob(".*partial*"))


def test_manifest_tells_ensemble_runs_apart(crops, dask_address, tmp_path) -> None:
    """A plain publication is not up to date for a self-ensemble run (and vice versa): the
    manifest's parameters name it, so the work key differs too."""
    dst = tmp_path / "s2.tif"
    upscale(crops["s2"], dst, dask_address, model="bicubic", tile_size_px=32)
    assert not layer_of(dst).exists()
    run = upscale(crops["s2"], dst, dask_address, model="bicubic", tile_size_px=32,
                  self_ensemble=True)
    assert run.up_to_date is None and layer_of(dst).exists()
    again = upscale(crops["s2"], dst, dask_address, model="bicubic", tile_size_px=32,
                    self_ensemble=True)
    assert again.up_to_date is not None
    # back to a plain run: the replaced publication's layer goes with it
    upscale(crops["s2"], dst, dask_address, model="bicubic", tile_size_px=32)
    assert not layer_of(dst).exists()
    assert "uncertainty" not in json.loads((tmp_path / "s2.manifest.json").read_text())["outputs"]


@pytest.mark.parametrize("kind", ["s2", "dem"])
def test_tiled_equals_whole_image_with_self_ensemble(kind, crops, dask_address, tmp_path):
    """uint16 with the shipped EDSR x2; float32 with an RRDBNet x2 (size multiple 2, an odd
    45 x 39 px scene): tiles of 16 px equal one whole-image tile, output and layer."""
    if kind == "s2":
        model = "edsr-x2"
    else:
        model = _model("rrdbnet", {"scale": 2, "num_block": 1, "num_feat": 8, "num_grow_ch": 4,
                                   "in_channels": 1}, tmp_path)
    runs = {label: upscale(crops[kind], tmp_path / f"{label}.tif", dask_address, model=model,
                           tile_size_px=tile, self_ensemble=True)
            for label, tile in (("tiled", 16), ("whole", 512))}
    assert len(runs["tiled"].grid) > 4 and len(runs["whole"].grid) == 1
    with rasterio.open(tmp_path / "tiled.tif") as a, rasterio.open(tmp_path / "whole.tif") as b:
        x, y = a.read().astype(np.float64), b.read().astype(np.float64)
    with rasterio.open(layer_of(tmp_path / "tiled.tif")) as a, \
            rasterio.open(layer_of(tmp_path / "whole.tif")) as b:
        ux, uy = a.read(), b.read()
    span = float(np.nanmax(y) - np.nanmin(y))
    assert span > 0
    tol = 1.0 if kind == "s2" else 1e-5 * span  # 1 DN for integers, 1e-5 of the range else
    assert np.nanmax(np.abs(x - y)) <= tol
    assert np.array_equal(np.isnan(ux), np.isnan(uy))
    assert np.nanmax(uy) > 0, "a real network is not equivariant: the layer is not zero"
    assert np.nanmax(np.abs(ux - uy)) <= 1e-5 * span
    if kind == "s2":  # the workers' output is the ensemble mean, the layer its std x span
        with rasterio.open(crops[kind]) as ds:
            lr = ds.read()
        assert lr.min() > ds.nodata, "every pixel valid: no nodata to fill"
        norm = runs["whole"].normalization
        (mean, std), = load_model("edsr-x2").upscale_many_with_std([norm.to_model(lr)])
        assert np.abs(norm.from_model(mean).astype(np.float64) - y).max() <= 1
        assert np.abs(std * norm.span[0] - uy).max() <= 1e-3
        plain = norm.from_model(load_model("edsr-x2").upscale(norm.to_model(lr)))
        assert np.abs(plain.astype(np.float64) - y).max() >= 2, "the ensemble changes the output"


def test_resumed_run_reuses_the_tiles_layer_included(crops, dask_address, tmp_path) -> None:
    """The CLI dies (``os._exit``) after stitching, every tile journaled; the rerun reuses every
    tile (their ``uncertainty`` chunks are in the tile markers) and publishes the same layer."""
    import subprocess
    import sys

    src, scratch = crops["s2"], tmp_path / "scratch"
    reference = tmp_path / "reference.tif"
    upscale(src, reference, dask_address, model="edsr-x2", tile_size_px=32, self_ensemble=True)
    dst = tmp_path / "out.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "sr_core.cli", "upscale", str(src), str(dst), "--model",
         "edsr-x2", "--tile-size", "32", "--self-ensemble", "--no-progress", "--dask-address",
         dask_address, "--scratch-dir", str(scratch)],
        env={**__import__("os").environ, "SR_CRASH_AT": "stitched"}, capture_output=True,
        timeout=300)
    assert proc.returncode != 0 and not dst.exists() and not layer_of(dst).exists()
    run = upscale(src, dst, dask_address, model="edsr-x2", tile_size_px=32, self_ensemble=True,
                  scratch_dir=str(scratch))
    assert run.resume["tiles_reused"] == run.resume["tiles"] == 6
    for a, b in ((dst, reference), (layer_of(dst), layer_of(reference))):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            np.testing.assert_array_equal(x.read(), y.read())


def test_medical_output_has_the_summary_but_no_layer(dask_address, tmp_path) -> None:
    dst = tmp_path / "ct_x2.dcm"
    upscale(pydicom_file("CT_small.dcm"), dst, dask_address, model="bicubic",
            self_ensemble=True)
    assert dst.is_file() and not list(tmp_path.glob("*uncertainty*"))
    doc = json.loads((tmp_path / "ct_x2.manifest.json").read_text())
    assert "uncertainty" not in doc["outputs"]
    rep = json.loads((tmp_path / "ct_x2.report.json").read_text())
    se = rep["self_ensemble"]
    assert se["enabled"] and se["uncertainty_uri"] is None and "report_html_error" not in rep
    assert "Self-ensemble std, band 1, maximum" in (tmp_path / "ct_x2.report.html").read_text()
    assert se["bands"][0]["valid_px"] == 256 * 256 and se["bands"][0]["max"] <= 1e-2


# --- the CLI ---------------------------------------------------------------------------------

def _square_sr_architectures() -> list[str]:
    """spandrel architectures that declare square inputs and are not fixed at scale 1 (read
    from the installed package's source)."""
    import spandrel

    found = []
    for init in Path(spandrel.__file__).parent.glob("architectures/*/__init__.py"):
        text = init.read_text()
        if "square=True" in text and not re.search(r"\bscale=1,", text):
            found.append(init.parent.name)
    return found


def test_square_input_model_is_refused_in_one_line() -> None:
    import spandrel

    found = _square_sr_architectures()
    if not found:
        pytest.skip(f"spandrel {spandrel.__version__} has no super-resolution architecture that "
                    "needs square inputs (its only square one, Uformer, is a scale-1 restoration "
                    "model: see test_square_input_uformer_is_refused_in_one_line)")
    pytest.fail(f"spandrel now has square-input SR architectures {found}: build one here")


def test_square_input_uformer_is_refused_in_one_line(repo_data, tmp_path) -> None:
    """Uformer, spandrel's square-input architecture, with small random weights: refused at
    load, exit 2, stderr one line naming the file (the CLI in a subprocess, so that library
    warnings would show as a user sees them), nothing written."""
    import subprocess
    import sys

    from safetensors.torch import save_file
    from spandrel.architectures.Uformer.__arch.Uformer import Uformer

    torch.manual_seed(0)
    net = Uformer(embed_dim=8)
    weights = tmp_path / "uformer.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    proc = subprocess.run(
        [sys.executable, "-m", "sr_core.cli", "upscale",
         str(repo_data.path("landsat7_RGB.byte.tif")), str(tmp_path / "out.tif"), "--model",
         str(weights), "--self-ensemble", "--no-progress"],
        capture_output=True, text=True, timeout=120)
    code, out, err = proc.returncode, proc.stdout, proc.stderr
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sr-pipeline: error: ")
    assert str(weights) in err and "Uformer" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uformer.safetensors"]


def test_evaluate_self_ensemble(crops, tmp_path, capsys) -> None:
    path = _model("edsr", {"scale": 2, "n_resblocks": 1, "n_feats": 8, "in_channels": 1},
                  tmp_path)
    code, out, _ = run_main(["evaluate", "--model", path, "--scale", "2", "--scene",
                             str(crops["s2"]), "--window", "64", "--degradation", "bicubic",
                             "--self-ensemble", "--out", str(tmp_path / "ev")], capsys)
    assert code == 0
    assert f"| {path}+ |" in out and "model time ratio" in out
    csv = (tmp_path / "ev" / "evaluation.csv").read_text()
    assert f",{path}+," in csv and f",{path}," in csv
    from sr_core.training.evaluate import EvalConfig, evaluate

    result = evaluate(EvalConfig(models=(path,), scale=2, scenes=(str(crops["s2"]),),
                                 window_px=64, degradations=("bicubic",), self_ensemble=True))
    (cmp,) = result.self_ensemble
    rows = {r["model"]: r for r in result.rows}
    assert cmp["psnr_gain_db"] == pytest.approx(rows[path + "+"]["psnr_db"]
                                                - rows[path]["psnr_db"])
    assert rows[path + "+"]["psnr_db"] != rows[path]["psnr_db"]
    # the ratio itself is measured by benchmarks/bench_quality.py: on a 32 px window of a tiny
    # network, beside other processes on 2 cores, it is too noisy to hold to a bound here
    assert np.isfinite(cmp["time_ratio"]) and cmp["time_ratio"] > 0
    assert set(result.model_seconds) == {"bicubic", path, path + "+"}
