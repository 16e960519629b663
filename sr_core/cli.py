"""``sr-pipeline``: the command-line interface.

Exit status: 0 on success; 2 with one line ``sr-pipeline: error: <file>: <problem>`` for bad input
or options (nothing is created at the destination); 1 for other failures (a worker crash, S3
unreachable); 130 when interrupted.
"""

from __future__ import annotations

import logging
import sys
import time

import click

from sr_core.errors import InputError, ModelError, SRError

USER_ERRORS = (InputError, ModelError)


def _fail(message: str, code: int) -> None:
    click.echo(f"sr-pipeline: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sr-pipeline")
def cli() -> None:
    """Batch super-resolution of georeferenced scenes: seam-free, georeferenced, reported."""


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--model", "model", default=None, metavar="NAME_OR_WEIGHTS",
              help="Registry name (see `sr-pipeline models`) or a .safetensors path. "
                   "Default: the shipped EDSR x2.")
@click.option("--scale", type=int, default=None, help="Upscaling factor (default: the model's).")
@click.option("--tile-size", "tile_size", type=int, default=1024, show_default=True,
              help="Tile core edge in input pixels.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto = CUDA when the worker has it.")
@click.option("--dask-address", default=None, help="Scheduler of an existing Dask cluster "
              "(default: a local cluster of worker processes).")
@click.option("--workers", type=int, default=None, help="Worker processes of the local cluster.")
@click.option("--report", default=None, help="Report JSON path/URL (default: beside DST).")
@click.option("--scratch-dir", default=None, help="Where Zarr tiles are staged (default: $SR_SCRATCH "
              "or the system temp directory).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def upscale(src, dst, model, scale, tile_size, device, dask_address, workers, report, scratch_dir,
            progress) -> None:
    """Super-resolve SRC (GeoTIFF/COG, local or s3://) into the COG DST (local or s3://)."""
    from tqdm import tqdm

    from sr_core.pipeline import UpscaleConfig, run_upscale

    import distributed  # noqa: F401 - its import sets its loggers to INFO; quiet them after

    logging.getLogger("distributed").setLevel(logging.ERROR)
    cfg = UpscaleConfig(src=src, dst=dst, model=model, scale=scale, tile_size_px=tile_size,
                        device=device, dask_address=dask_address, workers=workers, report=report,
                        scratch_dir=scratch_dir, progress=progress)
    bar = None
    t0 = time.perf_counter()

    def on_progress(done: int, total: int, out_px: int) -> None:
        nonlocal bar
        if not progress:
            return
        if bar is None:
            bar = tqdm(total=total, unit="tile", desc="upscale", dynamic_ncols=True)
        bar.update(done - bar.n)
        bar.set_postfix_str(f"{out_px / max(time.perf_counter() - t0, 1e-9) / 1e6:.2f} MP/s")

    try:
        run = run_upscale(cfg, on_progress)
    finally:
        if bar is not None:
            bar.close()
    rep = run.published["report"]
    o = rep["output"]
    click.echo(f"COG:    {run.published['cog']} ({o['width']} x {o['height']} px, {o['bands']} "
               f"band(s), {o['dtype']}, CRS {o['crs']})")
    html = f"{run.published['report_html']} (HTML), " if run.published["report_html"] else ""
    click.echo(f"report: {html}{run.published['report_json']} and {run.published['report_md']}")
    wald = rep["quality"].get("wald")
    if isinstance(wald, dict):
        click.echo(f"Wald check: model {wald['model']['psnr_db']:.2f} dB / SSIM "
                   f"{wald['model']['ssim']:.4f}; bicubic {wald['bicubic']['psnr_db']:.2f} dB / "
                   f"SSIM {wald['bicubic']['ssim']:.4f}")
    click.echo(f"time:   {rep['timings_s']['total']:.1f} s, "
               f"{rep['throughput']['output_mp_per_s']:.2f} output MP/s")


@cli.command("models")
def models_cmd() -> None:
    """List the available models with scale, channels and receptive field."""
    from sr_core.models.registry import DEFAULT_MODEL, list_models

    rows = list_models()
    click.echo(f"{'name':<14} {'architecture':<12} {'scale':>5} {'channels':>8} "
               f"{'receptive field (px)':>20}  weights")
    for r in rows:
        click.echo(f"{r['name']:<14} {r['architecture']:<12} {str(r['scale']):>5} "
                   f"{r['channels']:>8} {r['receptive_field_px']:>20}  {r['weights']}")
    click.echo(f"default: {DEFAULT_MODEL} (its shipped weights for --scale; x2 when no scale is given)")


@cli.command("report-archive")
@click.argument("out")
@click.argument("reports", nargs=-1, required=True)
@click.option("--title", default="sr-pipeline archive run", show_default=True)
def report_archive(out, reports, title) -> None:
    """Write OUT (one HTML page) from per-scene JSON REPORTS: a sortable table of scenes that
    links each scene's HTML report, and plots of throughput and quality across scenes."""
    from sr_core.html_report import write_archive_report

    write_archive_report(list(reports), out, title=title)
    click.echo(f"archive report: {out} ({len(reports)} scene(s))")


@cli.command()
@click.option("--arch", "architecture", default="edsr", show_default=True,
              help="Architecture to train (edsr, espcn).")
@click.option("--scale", type=int, default=2, show_default=True)
@click.option("--name", default=None, help="Model name (default ARCH-xSCALE).")
@click.option("--out", required=True, help="Weights file to write (NAME.safetensors; the model "
              "card NAME.json is written beside it).")
@click.option("--scene", "scenes", multiple=True, required=True,
              help="Training scene (GeoTIFF); repeat for several.")
@click.option("--val-scene", "val_scenes", multiple=True, required=True,
              help="Held-out validation scene; repeat for several.")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE",
              help="Constructor argument, e.g. --arg n_resblocks=16 (JSON values).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True, help="Steps per epoch.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--patch", type=int, default=48, show_default=True, help="LR patch edge (px).")
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT's checkpoint.")
def train(architecture, scale, name, out, scenes, val_scenes, args, epochs, steps, batch_size,
          patch, learning_rate, seed, device, resume) -> None:
    """Train a model on your scenes by the Wald protocol and write it with its model card."""
    import json

    from sr_core.models.registry import SHIPPED_ARGUMENTS
    from sr_core.train import TrainConfig, train_model

    arguments = dict(SHIPPED_ARGUMENTS.get(f"{architecture}-x2", {}))
    arguments["scale"] = scale
    for item in args:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--arg {item}: expected KEY=VALUE")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    cfg = TrainConfig(architecture=architecture, arguments=arguments,
                      name=name or f"{architecture}-x{scale}", out=out, scenes=tuple(scenes),
                      val_scenes=tuple(val_scenes), epochs=epochs, steps_per_epoch=steps,
                      batch_size=batch_size, patch_px=patch, learning_rate=learning_rate,
                      seed=seed, device=device, resume=resume)
    card = train_model(cfg)
    click.echo(f"weights: {card['weights']} (card beside it)")
    for scene, m in card["metrics"]["validation"].items():
        click.echo(f"{scene}: model {m['model']['psnr_db']:.2f} dB / SSIM {m['model']['ssim']:.4f}"
                   f"; bicubic {m['bicubic']['psnr_db']:.2f} dB / SSIM {m['bicubic']['ssim']:.4f}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="sr-pipeline", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.UsageError as exc:
        _fail(exc.format_message().replace("\n", " "), 2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except USER_ERRORS as exc:
        _fail(str(exc), 2)
    except SRError as exc:
        _fail(str(exc), 1)
    sys.exit(0)


if __name__ == "__main__":
    main()
