"""The HTML quality reports: a real scene's report renders in headless Chromium (Debian's package,
driven by playwright) with no console errors and no failed requests, the screenshot is not blank
and the embedded pictures have the expected sizes; the archive page sorts; the seam metric tells
our stitched output from tiles run without a halo; the streaming statistics equal whole-array
numpy."""

from __future__ import annotations

import base64
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from conftest import crop_scene
from rasterio.transform import from_origin

from sr_core import pipeline
from sr_core.pipeline import UpscaleConfig, run_upscale
from sr_core.quality.metrics import seam_metric
from sr_core.quality.scan import scan_raster
from sr_core.reports import html as hr

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through playwright (no browser download)."""
    if shutil.which("chromium") is None and not shutil.os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: run scripts/setup.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, path):
    """Load a local HTML file; return (page, console messages, page errors, failed requests,
    requested URLs)."""
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    console, errors, failed, urls = [], [], [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(f"{r.url[:80]} {r.failure}"))
    page.on("request", lambda r: urls.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, console, errors, failed, urls


def embedded_pngs(html: str) -> dict[str, tuple[int, int, int, int]]:
    """figure id -> (PNG width, PNG height, width attribute, height attribute)."""
    out = {}
    for m in re.finditer(r'<img src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"'
                         r' alt="[^"]*" data-figure="([^"]+)">', html):
        w, h = hr.png_size(base64.b64decode(m.group(1)))
        out[m.group(4)] = (w, h, int(m.group(2)), int(m.group(3)))
    return out


@pytest.fixture(scope="module")
def landsat_run(repo_data, dask_address, tmp_path_factory):
    """The bundled Landsat 7 scene (791 x 718 px, RGB uint8, nodata corners) upscaled x2 by ESPCN
    in 256 px tiles (3 x 4 tiles), through the CLI's code path."""
    out = tmp_path_factory.mktemp("landsat") / "landsat_x2.tif"
    run = run_upscale(UpscaleConfig(src=str(repo_data.path("landsat7_RGB.byte.tif")), dst=str(out),
                                    model="espcn-x2", tile_size_px=256, dask_address=dask_address,
                                    progress=False))
    return run, out


def test_scene_report_renders_in_chromium(landsat_run, browser, tmp_path):
    run, out = landsat_run
    html_path = out.with_name("landsat_x2.report.html")
    assert run.published["report_html"] == str(html_path)
    html = html_path.read_text(encoding="utf-8")
    rep = json.loads(out.with_name("landsat_x2.report.json").read_text())

    # self-contained: every picture is a data URI, no link or script leaves the file
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    figs = embedded_pngs(html)
    expected = {"thumbnail", "crops-A", "crops-B", "heatmap", "tile-grid", "seam-profile",
                "histograms", "bands"}
    assert set(figs) == expected
    for fid, (w, h, aw, ah) in figs.items():
        assert (w, h) == (aw, ah), fid
    # the thumbnail is the 1582 x 1436 output decimated to 800 px wide; others have fixed sizes
    assert figs["thumbnail"][:2] == (800, round(1436 / (1582 / 800)))
    assert figs["crops-A"][:2] == hr.CROPS_PX and figs["crops-B"][:2] == hr.CROPS_PX
    assert figs["heatmap"][:2] == hr.HEATMAP_PX and figs["tile-grid"][:2] == hr.GRID_PX
    assert figs["histograms"][:2] == hr.HIST_ROW_PX  # 3 bands: one row
    # stated conventions and numbers
    assert "RGB composite: R = band 1 (red), G = band 2 (green), B = band 3 (blue)" in html
    assert "2-98 % percentiles" in html
    assert f"{rep['quality']['seam']['ratio']:,.3f}" in html
    assert html.count('class="better"') == len(figs)

    page, console, errors, failed, urls = open_page(browser, html_path)
    try:
        natural = page.evaluate("""() => Array.from(document.images).map(i =>
            [i.dataset.figure, i.complete, i.naturalWidth, i.naturalHeight])""")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert console == [] and errors == [] and failed == []
    assert all(u.startswith(("file://", "data:")) for u in urls), urls
    assert {f: (w, h) for f, ok, w, h in natural if ok} == {f: v[:2] for f, v in figs.items()}

    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape[0] > 3000, "full page: header, eight figures, tables"
    assert img.std() > 30, f"screenshot looks blank (grey-level std {img.std():.1f})"
    assert (img < 128).mean() > 0.1, "less than 10 % dark pixels: pictures missing"


def test_report_json_has_seam_and_band_stats(landsat_run, repo_data):
    run, out = landsat_run
    rep = run.published["report"]
    seam = rep["quality"]["seam"]
    assert seam["boundaries"] == {"columns": 3, "rows": 2}
    assert 0.9 <= seam["ratio"] <= 1.1, seam
    with rasterio.open(repo_data.path("landsat7_RGB.byte.tif")) as ds:
        x, valid = ds.read(), ds.read_masks() > 0
    for b, st in enumerate(rep["band_stats"]["input"]):
        vals = x[b][valid[b]].astype(np.float64)
        assert st["valid_px"] == vals.size and st["min"] == vals.min() and st["max"] == vals.max()
        assert st["mean"] == pytest.approx(vals.mean(), rel=1e-9)
        assert st["std"] == pytest.approx(vals.std(), rel=1e-6)
    for b, st in enumerate(rep["band_stats"]["output"]):
        assert abs(st["mean"] - rep["band_stats"]["input"][b]["mean"]) < 2.0, "radiometry kept"
    assert "report_html" in rep["timings_s"] and "report_measure" in rep["timings_s"]
    md = out.with_name("landsat_x2.report.md").read_text()
    assert "[landsat_x2.report.html](landsat_x2.report.html)" in md and "Seam ratio" in md
    # the Wald check under bicubic (headline) and area, each recomputable from the model
    wald = rep["quality"]["wald"]
    assert wald["degradation"] == "bicubic" and set(wald["by_degradation"]) == {"bicubic", "area"}
    assert wald["by_degradation"]["bicubic"]["gain_db"] == wald["gain_db"]
    area = wald["by_degradation"]["area"]
    assert area["gain_db"] == pytest.approx(area["model"]["psnr_db"] - area["bicubic"]["psnr_db"])
    assert area["bicubic"]["psnr_db"] != wald["bicubic"]["psnr_db"]
    assert "Wald PSNR, area degradation (dB)" in md
    assert "area integration" in rep["quality"]["conventions"]["wald"]
    assert rep["quality"]["conventions"]["data_range"] == "8-bit depth (255)"
    html = out.with_name("landsat_x2.report.html").read_text()
    assert "Wald PSNR gain over bicubic (area degradation)" in html


@pytest.mark.parametrize("name,window,statement", [
    ("S2A_29RKH_20200219_L2A_B04.tif", (300, 300, 200, 220), "Band 1 in grey levels"),
    ("naip_m_4709963_se_14_1_20200831_5m.tif", (200, 300, 160, 150),
     "RGB composite: R = band 1, G = band 2, B = band 3 (the file does not label"),
])
def test_scene_report_16bit_and_multiband(name, window, statement, repo_data, dask_address,
                                          tmp_path):
    """uint16 single band (percentile stretch, grey levels) and 4-band NAIP (composite of bands
    1-3 plus per-band panels for all four)."""
    src = crop_scene(repo_data.path(name), tmp_path / "crop.tif", row=window[0], col=window[1],
                     height=window[2], width=window[3])
    run = run_upscale(UpscaleConfig(src=str(src), dst=str(tmp_path / "out.tif"), model="bicubic",
                                    tile_size_px=64, dask_address=dask_address, progress=False))
    html = (tmp_path / "out.report.html").read_text()
    assert statement in html
    figs = embedded_pngs(html)
    assert all((w, h) == (aw, ah) for w, h, aw, ah in figs.values())
    if run.scene.count == 1:
        assert "bands" not in figs and figs["histograms"][:2] == hr.HIST_ROW_PX
    else:
        assert figs["bands"][0] == 4 * hr.BANDS_PANEL_PX
        assert figs["histograms"][:2] == (hr.HIST_ROW_PX[0], 2 * hr.HIST_ROW_PX[1])


def test_seam_metric_stitched_vs_no_halo(repo_data, dask_address, tmp_path):
    """EDSR x2 on a 250 x 250 px window of the Landsat scene in 32 px tiles (7 column and 7 row
    tile edges): our stitched output (the effective halo, 10 px of the analytic 24) gives a
    seam ratio of about 1.0 and the same tiles run with no halo clearly more: every tile then
    sees zero padding at its core's edge instead of its neighbours' pixels. (Measured with the
    previous shipped EDSR x2, halo 20 px: 1.014 vs 1.254; with 48 px tiles, 5 + 5 edges, 0.964
    vs 1.183.)"""
    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "crop.tif",
                     row=150, col=150, height=250, width=250)
    ratios = {}
    for halo in ("receptive field", "none"):
        cfg = UpscaleConfig(src=str(src), dst=str(tmp_path / f"out-{halo[:4]}.tif"),
                            model="edsr-x2", tile_size_px=32, dask_address=dask_address,
                            progress=False)
        run = pipeline.start(cfg)
        if halo == "none":  # the same model with its halo forced to 0
            run.model = replace(run.model, descriptor=replace(run.model.descriptor,
                                                              receptive_field_px=0))
        try:
            from distributed import Client

            with Client(dask_address) as client:
                for stage in (pipeline.ingest, pipeline.tile):
                    stage(run)
                pipeline.infer(run, client)
            for stage in (pipeline.stitch, pipeline.publish, pipeline.report):
                stage(run)
        finally:
            pipeline.cleanup(run)
        if halo == "none":
            assert run.grid.halo_px == 0
        else:  # the measured effective halo (uint8: within half a DN), below the analytic 24
            assert run.halo.rule == "effective" and 0 < run.grid.halo_px < 24
        seam = run.published["report"]["quality"]["seam"]
        assert seam["boundaries"] == {"columns": 7, "rows": 7}
        ratios[halo] = seam["ratio"]
    msg = f"seam ratio stitched {ratios['receptive field']:.3f}, no halo {ratios['none']:.3f}"
    assert 0.95 <= ratios["receptive field"] <= 1.05, msg
    assert ratios["none"] >= 1.15, msg
    assert ratios["none"] - ratios["receptive field"] >= 0.15, msg


def _write(path, data, nodata=None):
    bands, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands,
                       dtype=data.dtype, nodata=nodata, tiled=True, blockxsize=64, blockysize=64,
                       crs="EPSG:32618", transform=from_origin(500000, 4000000, 10, 10)) as ds:
        ds.write(data)


def test_scan_equals_whole_array_and_seam_sees_offset_tiles(repo_data, tmp_path):
    """Streamed in 100 px windows (boundaries at and between window edges), the statistics,
    histograms and neighbour profiles equal numpy on the whole array; adding a constant to
    every other 64 px tile of a real image (twice its mean neighbour difference) raises the seam
    ratio well above the original's (which is near 1; only 4 + 4 short edges here)."""
    with rasterio.open(repo_data.path("S2A_29RKH_20200219_L2A_B04.tif")) as ds:
        x = ds.read(window=rasterio.windows.Window(100, 200, 300, 260))
    x[0, :5, :7] = 0  # some nodata
    _write(tmp_path / "a.tif", x, nodata=0)
    ranges = [(float(x.min()), float(x.max()))]
    scan = scan_raster(tmp_path / "a.tif", ranges, bins=32, window_px=100)
    valid = x[0] != 0
    vals = x[0][valid].astype(np.float64)
    st = scan.band_stats()[0]
    assert (st["valid_px"], st["min"], st["max"]) == (vals.size, vals.min(), vals.max())
    assert st["mean"] == pytest.approx(vals.mean()) and st["std"] == pytest.approx(vals.std())
    hist, _ = np.histogram(vals, bins=32, range=ranges[0])
    assert scan.hist[0].tolist() == hist.tolist()
    f = x[0].astype(np.float64)
    pv = valid[:, 1:] & valid[:, :-1]
    assert np.allclose(scan.col_pair_sum[1:], np.where(pv, np.abs(np.diff(f, axis=1)), 0).sum(0))
    assert scan.col_pair_n[1:].tolist() == pv.sum(0).tolist()
    pv = valid[1:] & valid[:-1]
    assert np.allclose(scan.row_pair_sum[1:], np.where(pv, np.abs(np.diff(f, axis=0)), 0).sum(1))

    def ratio(path):
        s = scan_raster(path, ranges, window_px=100)
        return seam_metric(s.col_pair_sum, s.col_pair_n, s.row_pair_sum, s.row_pair_n,
                           tile_px=64, scale=2)

    plain = ratio(tmp_path / "a.tif")
    tiles = (np.arange(260)[:, None] // 64 + np.arange(300)[None, :] // 64) % 2
    mad = float(np.abs(np.diff(f, axis=1))[valid[:, 1:] & valid[:, :-1]].mean())
    step = np.where(valid, x[0].astype(np.int64) + round(2 * mad) * tiles, 0).astype(x.dtype)
    _write(tmp_path / "b.tif", step[None], nodata=0)
    seamed = ratio(tmp_path / "b.tif")
    assert plain["boundaries"] == {"columns": 4, "rows": 4}
    assert 0.8 <= plain["ratio"] <= 1.2 and seamed["ratio"] > plain["ratio"] + 0.5, \
        (plain["ratio"], seamed["ratio"])
    assert seamed["profile"]["relative"][len(seamed["profile"]["offset_px"]) // 2] > 1.2


def test_typed_report_round_trips(landsat_run):
    """The typed report reads a run's JSON report back and writes the same document (keys,
    order, values), and the writers read it as they read the dict."""
    from sr_core.reports.document import SceneReport
    from sr_core.reports.report import to_markdown, write_json

    run, _ = landsat_run
    text = open(run.published["report_json"], encoding="utf-8").read()
    rep = json.loads(text)
    typed = SceneReport.from_dict(rep)
    assert json.dumps(typed.to_dict()) == json.dumps(rep)
    assert write_json(typed) == write_json(rep)
    assert to_markdown(typed, "x.html") == to_markdown(rep, "x.html")
    assert typed.tiling.tile_size_px == 256 and typed.input.bands == 3
    assert typed.throughput.output_mp_per_s == rep["throughput"]["output_mp_per_s"]


def test_archive_report_sorts_and_links(landsat_run, browser, tmp_path):
    run, out = landsat_run
    rep = run.published["report"]
    other = json.loads(json.dumps(rep))
    other["input"]["name"] = "s3://scenes/other.tif"
    other["throughput"]["output_mp_per_s"] = rep["throughput"]["output_mp_per_s"] * 3
    other["quality"]["seam"]["ratio"] = 1.4
    failed = {"status": "failed", "input": {"name": "broken.tif"},
              "error": "broken.tif: truncated TIFF"}
    with pytest.raises(ValueError):
        hr.build_archive_html([rep], [])
    page_html = hr.build_archive_html([rep, other, failed],
                                      ["a/landsat_x2.report.html", "b/other.report.html", None])
    figs = embedded_pngs(page_html)
    assert {k: v[:2] for k, v in figs.items()} == {"archive-plots": hr.ARCHIVE_PLOT_PX}
    assert "2 ok, 1 failed" in page_html and "broken.tif: truncated TIFF" in page_html
    path = tmp_path / "archive.html"
    path.write_text(page_html)

    page, console, errors, failed_req, _ = open_page(browser, path)
    try:
        def column(i):
            return page.eval_on_selector_all(
                "#scenes tbody tr", f"rows => rows.map(r => r.cells[{i}].innerText.trim())")

        assert column(1)[0].startswith(rep["input"]["name"])
        page.click("th[data-col='8']")  # seam ratio, ascending; n/a last
        assert column(8) == [f"{rep['quality']['seam']['ratio']:.3f}", "1.400", "n/a"]
        page.click("th[data-col='8']")
        assert column(8) == ["1.400", f"{rep['quality']['seam']['ratio']:.3f}", "n/a"]
        page.click("th[data-col='4']")  # output MP/s ascending
        assert column(1)[0].startswith(rep["input"]["name"])
        hrefs = page.eval_on_selector_all("#scenes a", "as => as.map(a => a.getAttribute('href'))")
    finally:
        page.close()
    assert console == [] and errors == [] and failed_req == []
    assert sorted(hrefs) == ["a/landsat_x2.report.html", "b/other.report.html"]


def test_cli_report_archive(landsat_run, tmp_path):
    from sr_core.cli import main

    run, out = landsat_run
    dst = tmp_path / "archive.html"
    with pytest.raises(SystemExit) as exc:
        main(["report-archive", str(dst), run.published["report_json"]])
    assert exc.value.code == 0
    html = dst.read_text()
    assert 'href="' in html and "landsat_x2.report.html" in html
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        main(["report-archive", str(tmp_path / "x.html"), str(bad)])
    assert exc.value.code == 2 and not (tmp_path / "x.html").exists()


def test_html_failure_keeps_json_and_markdown(repo_data, dask_address, tmp_path, monkeypatch):
    """Should the page fail, the run still publishes the JSON and markdown reports, says why, and
    leaves no HTML file."""
    import sr_core.reports.html

    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(sr_core.reports.html, "build_scene_html", broken)
    src = crop_scene(repo_data.path("landsat7_RGB.byte.tif"), tmp_path / "crop.tif",
                     row=300, col=300, height=90, width=100)
    run = run_upscale(UpscaleConfig(src=str(src), dst=str(tmp_path / "out.tif"), model="bicubic",
                                    dask_address=dask_address, progress=False))
    assert run.published["report_html"] is None
    assert not (tmp_path / "out.report.html").exists()
    rep = json.loads((tmp_path / "out.report.json").read_text())
    assert rep["report_html_error"] == "RuntimeError: figure failed"
    assert "HTML report" not in (tmp_path / "out.report.md").read_text()
