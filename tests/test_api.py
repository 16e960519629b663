"""The public Python API (``sr_core.upscale``, ``sr_core.upscale_archive``): its docstring example
runs as written, on the bundled real scene; an archive runs and a second run skips it; a wrong
option is one InputError line."""

from __future__ import annotations

import doctest
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

import sr_core
from sr_core import api
from sr_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "landsat7_RGB.byte.tif"


def test_upscale_docstring_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example names the sample relative to the repository
    finder = doctest.DocTestFinder()
    [test] = [t for t in finder.find(api.upscale, "upscale", globs={}) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=6)


def test_upscale_result_is_the_published_cog(tmp_path):
    out = tmp_path / "x2.tif"
    result = sr_core.upscale(SAMPLE, out, model="bicubic", tile_size_px=256)
    assert not result.up_to_date
    assert Path(result.files["manifest"]).exists()
    assert json.loads(Path(result.files["report_json"]).read_text()) == result.report
    with rasterio.open(SAMPLE) as src, rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (2 * src.width, 2 * src.height)
        assert dst.crs == src.crs
        assert dst.transform.a == pytest.approx(src.transform.a / 2)
    again = sr_core.upscale(SAMPLE, out, model="bicubic", tile_size_px=256)
    assert again.up_to_date and again.output == str(out) and again.format == "cog"
    assert again.report["output"] == result.report["output"]  # the published report, read back
    assert again.files["report_html"] == result.files["report_html"]


def test_upscale_archive_runs_then_skips(tmp_path):
    source = tmp_path / "archive"
    (source / "2024").mkdir(parents=True)
    shutil.copy(SAMPLE, source / "2024" / "scene_a.tif")
    first = sr_core.upscale_archive(source, tmp_path / "out", model="bicubic", workers=1)
    assert (first["done"], first["skipped"], first["failed"]) == (1, 0, 0), first["message"]
    [row] = first["results"]
    assert row["scene_id"] == "2024/scene_a" and Path(row["cog"]).exists()
    assert Path(first["written"]["archive-summary.json"]).exists()
    second = sr_core.upscale_archive(source, tmp_path / "out", model="bicubic")
    assert (second["done"], second["skipped"]) == (0, 1), second["message"]


def test_unknown_option_is_one_input_error_line(tmp_path):
    with pytest.raises(InputError, match=r"^upscale: unknown option\(s\) tile_size; known: "):
        sr_core.upscale(SAMPLE, tmp_path / "x.tif", tile_size=256)
    with pytest.raises(InputError, match=r"unknown option\(s\) colour"):
        sr_core.upscale_archive(tmp_path, tmp_path / "out", colour="red")
    assert not list(tmp_path.iterdir())


def test_importing_a_low_level_module_loads_no_pipeline():
    code = ("import sys, sr_core.geometry.tiling; "
            "print(any(m.startswith(('sr_core.pipeline', 'torch', 'distributed')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
