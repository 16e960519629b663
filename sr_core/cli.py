"""``sr-pipeline``: the command-line interface.

Exit status: 0 on success (or when DST already holds this result: its manifest matches); 2 with
one line ``sr-pipeline: error: <file>: <problem>`` for bad input or options (nothing is created at
the destination); 1 for other failures (a worker crash, S3 unreachable); 75 (``EX_TEMPFAIL``) with
one line ``sr-pipeline: busy: ...`` when another run holds the same job or published DST first
(nothing done; its result stands); 130 when interrupted; 3 from ``stack status`` when the stack
does not run (LSB's "program is not running").
"""

from __future__ import annotations

import sys
import time
import warnings

import click

from sr_core.errors import USER_ERRORS, BusyError, InputError, SRError

#: Exit status when another run holds the job (sysexits.h EX_TEMPFAIL: try again later).
EXIT_BUSY = 75


def _fail(message: str, code: int) -> None:
    click.echo(f"sr-pipeline: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sr-pipeline")
def cli() -> None:
    """Batch super-resolution of satellite and medical images: seam-free, geometry kept,
    reported."""


def _upscale_config(src: str, dst: str, options: dict):
    """The :class:`~sr_core.pipeline.UpscaleConfig` of ``sr-pipeline upscale``'s arguments:
    ``options`` are its fields by name (click's destinations)."""
    from sr_core.pipeline import UpscaleConfig

    return UpscaleConfig(src=src, dst=dst, **options)


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option("--model", "model", default=None, metavar="NAME_OR_WEIGHTS",
              help="Registry name (see `sr-pipeline models`) or a .safetensors path. "
                   "Default: the shipped EDSR for --scale (x2 without --scale, x4 with "
                   "--scale 4).")
@click.option("--scale", type=int, default=None, help="Upscaling factor (default: the model's).")
@click.option("--tile-size", "tile_size_px", type=int, default=1024, show_default=True,
              help="Tile core edge in input pixels.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto = CUDA when the worker has it.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True, help="auto = bf16 autocast on CUDA, fp32 on a CPU.")
@click.option("--compile/--no-compile", "compile", default=False, show_default=True,
              help="Run the model through torch.compile on the workers.")
@click.option("--dask-address", default=None, help="Scheduler of an existing Dask cluster "
              "(default: a local cluster of worker processes).")
@click.option("--workers", type=int, default=None, help="Worker processes of the local cluster.")
@click.option("--report", default=None, help="Report JSON path/URL (default: beside DST).")
@click.option("--scratch-dir", default=None,
              help="Where Zarr tiles are staged (default: $SR_SCRATCH or the system temp "
                   "directory).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--self-ensemble", "self_ensemble", is_flag=True, default=False,
              help="Average over the 8 flips/rotations of each tile; write their per-pixel "
                   "standard deviation as an uncertainty COG beside DST (8x the model's time).")
@click.option("--consistency", default=None, metavar="DEGRADATION",
              help="Correct the output so that degrading it (bicubic, area, gaussian-0.3, "
                   "gaussian-0.6) reproduces the input: iterative back-projection.")
def upscale(src: str, dst: str, **options) -> None:
    """Super-resolve SRC into DST (local paths or s3:// URLs).

    SRC: GeoTIFF/COG, DICOM file or series folder, NIfTI (.nii/.nii.gz), Aperio SVS or
    OME-TIFF (format read from the content). DST: a COG for GeoTIFF input; else the input's
    format: a folder (or NAME.dcm) for DICOM, NAME.nii[.gz] for NIfTI, NAME.tif/.svs for
    whole-slide images.
    """
    from rasterio.errors import NotGeoreferencedWarning
    from tqdm import tqdm

    from sr_core.compute.cluster import quiet_distributed
    from sr_core.formats import format_named
    from sr_core.pipeline import run_upscale

    # a lost scheduler is reported in one line by run_upscale; not as the client's traceback
    quiet_distributed(client_too=True)
    # a scene without a geotransform: the report and a warning line below say so instead
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    cfg = _upscale_config(src, dst, options)
    bar = None
    t0 = time.perf_counter()

    def on_progress(done: int, total: int, out_px: int) -> None:
        nonlocal bar
        if not cfg.progress:
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
    if run.up_to_date is not None:
        click.echo(f"up to date: {dst} (its manifest lists it for this input, model and "
                   "parameters); nothing to do")
        return
    rep = run.published["report"]
    for warning in rep.get("warnings", []):
        click.echo(f"sr-pipeline: warning: {src}: {warning}", err=True)
    o = rep["output"]
    fmt = format_named(run.scene.format if run.scene is not None else None)
    label = fmt.output_labels.get(run.published["format"], "output")
    if fmt.writes_raster:
        click.echo(f"{label}:    {run.published['output']} ({o['width']} x {o['height']} px, "
                   f"{o['bands']} band(s), {o['dtype']}, CRS {o['crs']})")
    else:
        click.echo(f"{label}: {run.published['output']} "
                   f"({o['width']} x {o['height']} px, {o['bands']} plane(s), {o['dtype']})")
    html = f"{run.published['report_html']} (HTML), " if run.published["report_html"] else ""
    click.echo(f"report: {html}{run.published['report_json']} and {run.published['report_md']}")
    wald = rep["quality"].get("wald")
    if isinstance(wald, dict):
        def db(v, nd: int = 2) -> str:  # "inf" / "nan" (JSON has neither): exact / no pixel
            return f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v)

        for d, r in (wald.get("by_degradation") or {"bicubic": wald}).items():
            click.echo(f"Wald check ({d} degradation): model {db(r['model']['psnr_db'])} dB / "
                       f"SSIM {db(r['model']['ssim'], 4)}; bicubic "
                       f"{db(r['bicubic']['psnr_db'])} dB / SSIM {db(r['bicubic']['ssim'], 4)}")
    if isinstance(rep["quality"].get("consistency"), dict):
        from sr_core.quality.consistency import summary_line

        click.echo(summary_line(rep["quality"]["consistency"]))
    r = rep["resume"]
    click.echo(f"tiles:  {r['tiles']} ({r['tiles_run']} run, {r['tiles_reused']} reused from an "
               f"interrupted run, {r['tiles_all_nodata']} all nodata)")
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
    click.echo(f"default: {DEFAULT_MODEL} (its shipped weights for --scale; "
               "x2 when no scale is given)")
    from sr_core.models.registry import ARCHITECTURES, describe

    click.echo("\narchitectures (train with --arch, or load their checkpoints by path):")
    for key, arch in ARCHITECTURES.items():
        if key == "bicubic":
            continue
        d = describe(key, key)
        sc = arch.scales
        scales = ("any" if not sc else f"{sc[0]}-{sc[-1]}" if len(sc) > 3
                  and list(sc) == list(range(sc[0], sc[-1] + 1)) else ", ".join(map(str, sc)))
        halo = ("global context" if d.global_context else "analytic halo" if d.tileable
                else "measured halo")
        click.echo(f"  {key:<10} {arch.paper:<36} scales {scales:<14} {halo}")


@cli.command("report-archive")
@click.argument("out")
@click.argument("reports", nargs=-1, required=True)
@click.option("--title", default="sr-pipeline archive run", show_default=True)
def report_archive(out, reports, title) -> None:
    """Write OUT (one HTML page) from per-scene JSON REPORTS: a sortable table of scenes that
    links each scene's HTML report, and plots of throughput and quality across scenes."""
    from sr_core.reports.html import write_archive_report

    write_archive_report(list(reports), out, title=title)
    click.echo(f"archive report: {out} ({len(reports)} scene(s))")


def _train_config(scale: int, args: tuple[str, ...], fields: dict):
    """The :class:`~sr_core.training.config.TrainConfig` of ``sr-pipeline train``'s options:
    ``fields`` are its fields by name (click's destinations); the constructor arguments are the
    shipped x2 model's of the architecture, with ``scale`` and each ``--arg KEY=VALUE`` (JSON
    values, else text) over them; the name defaults to ``ARCH-xSCALE``.

    Raises:
        InputError: an ``--arg`` without ``=``.
    """
    import json

    from sr_core.models.catalog import SHIPPED_ARGUMENTS
    from sr_core.training.config import TrainConfig

    architecture = fields["architecture"]
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
    return TrainConfig(**{**fields, "arguments": arguments,
                          "name": fields["name"] or f"{architecture}-x{scale}"})


@cli.command()
@click.option("--arch", "architecture", default="edsr", show_default=True,
              help="Architecture to train (see `sr-pipeline models`: edsr, espcn, srcnn, fsrcnn, "
                   "vdsr, srresnet, msrresnet, imdn, rrdbnet).")
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
@click.option("--steps", "steps_per_epoch", type=int, default=100, show_default=True,
              help="Steps per epoch.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--patch", "patch_px", type=int, default=48, show_default=True,
              help="LR patch edge (px).")
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT's checkpoint.")
@click.option("--loss", type=click.Choice(["l1", "mse", "perceptual"]), default="l1",
              show_default=True, help="perceptual = L1 + VGG-19 feature MSE (needs --vgg-weights).")
@click.option("--vgg-weights", default=None, help="torchvision VGG-19 weights file for the "
              "perceptual loss (never downloaded).")
@click.option("--vgg-layer", default="relu5_4", show_default=True)
@click.option("--perceptual-weight", type=float, default=1.0, show_default=True)
@click.option("--gan-epochs", type=int, default=0, show_default=True,
              help="SRGAN adversarial epochs after the pixel pre-training epochs.")
@click.option("--adversarial-weight", type=float, default=1e-3, show_default=True)
@click.option("--degradation", default="random", show_default=True,
              help="How HR patches become LR inputs: 'random' (one drawn per pair: bicubic, "
                   "area, Gaussian optics + area, shifts, noise) or a fixed one: bicubic, area, "
                   "gaussian-0.3, gaussian-0.6.")
@click.option("--init", "init_weights", default=None, metavar="SAFETENSORS",
              help="Initialise from these weights (tensors of the same name and shape).")
@click.option("--val-window", "val_window_px", type=int, default=1024, show_default=True,
              help="Edge (HR px) of the centred validation window of each held-out scene.")
@click.option("--pool", "pool_size", type=int, default=2048, show_default=True,
              help="HR patches sampled once from the training scenes.")
@click.option("--checkpoint", default=None, help="Checkpoint path (default OUT with .ckpt).")
def train(scale, args, **fields) -> None:
    """Train a model on your scenes by the Wald protocol and write it with its model card.

    --scene and --val-scene take GeoTIFF files or folders of them; the card lists the scenes,
    their licences (from a PROVENANCE.md beside them) and the validation table.
    """
    from sr_core.training.train import train_model
    from sr_core.training.train_card import validation_markdown

    card = train_model(_train_config(scale, args, fields))
    click.echo(f"weights: {card['weights']} (card beside it)")
    click.echo(validation_markdown(card), nl=False)


@cli.command()
@click.option("--model", "models", multiple=True, metavar="NAME_OR_WEIGHTS",
              help="Model to evaluate (repeat for several); bicubic is always included.")
@click.option("--scale", type=int, required=True, help="Upscaling factor.")
@click.option("--hr", "hr_dir", default=None, help="Folder of HR images (NAME_HR.png or any "
              "images); LR images NAME_LR*.png beside them are used when present.")
@click.option("--lr", "lr_dir", default=None, help="Folder of provided LR images.")
@click.option("--scene", "scenes", multiple=True, help="Georeferenced scene evaluated by the "
              "Wald protocol; repeat for several.")
@click.option("--channel", type=click.Choice(["y", "rgb"]), default="y", show_default=True,
              help="y = BT.601 luma (the SR literature's convention), rgb = all channels.")
@click.option("--crop-border", "crop_border_px", type=int, default=None,
              help="Pixels cropped from each side before measuring (default: the scale).")
@click.option("--out", "out_dir", required=True, help="Folder for evaluation.md and .csv.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu",
              show_default=True)
@click.option("--degradation", "degradations", multiple=True, metavar="NAME",
              help="How scenes are degraded for the Wald check (repeat; default all of "
                   "bicubic, area, gaussian-0.3, gaussian-0.6).")
@click.option("--window", "window_px", type=int, default=512, show_default=True,
              help="Edge (HR px) of the centred Wald window of each scene.")
@click.option("--self-ensemble", "self_ensemble", is_flag=True, default=False,
              help="Also score each model averaged over the 8 flips/rotations (as NAME+), "
                   "with its PSNR gain and time ratio over the plain model.")
def evaluate(out_dir, **fields) -> None:
    """PSNR / SSIM of models and bicubic on benchmark images or georeferenced scenes.

    --scene takes GeoTIFFs or folders of them; each scene is scored by the Wald protocol under
    every degradation, model beside bicubic with the gain. --self-ensemble adds each model's
    self-ensemble (NAME+) beside it.
    """
    from sr_core.imaging.degradations import EVALUATION
    from sr_core.training import evaluate as ev

    # no --degradation: every one of EVALUATION
    cfg = ev.EvalConfig(**{**fields, "degradations": fields["degradations"] or EVALUATION})
    result = ev.evaluate(cfg)
    paths = ev.write_outputs(result, out_dir)
    click.echo(ev.to_markdown(result), nl=False)
    click.echo(f"written: {paths['markdown']} and {paths['csv']}")


@cli.group("stack")
def stack_group() -> None:
    """A Prefect server + process worker on this machine (state, logs and PIDs in HOME/stack)."""


_home_option = click.option("--home", default=".prefect", show_default=True,
                            type=click.Path(file_okay=False),
                            help="PREFECT_HOME (relative to the current directory).")


def _stack_options(fn):
    return click.option("--port", type=click.IntRange(1, 65535), default=4200, show_default=True,
                        help="Server port on 127.0.0.1.")(_home_option(fn))


def _stack_paths(port: int, home: str):
    from pathlib import Path

    from sr_core.deploy.stack import StackPaths

    return StackPaths(root=Path.cwd(), home=(Path.cwd() / home).resolve(), port=port)


@stack_group.command("up")
@_stack_options
@click.option("--env-file", default=None, type=click.Path(dir_okay=False),
              help="KEY=VALUE file for the worker's environment (S3 endpoint and credentials; "
                   "see deployments/stack.env.example). Default: HOME/stack.env when it exists.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=180, show_default=True,
              help="Seconds to wait for the server's health endpoint.")
def stack_up_cmd(port, home, env_file, timeout_s) -> None:
    """Start the server, create the work pool `sr-process` and the limit `sr-gpu`, deploy
    deployments/prefect.yaml and start a worker; what already runs is reused. Run it from the
    repository root."""
    from pathlib import Path

    from sr_core.deploy.stack import stack_up

    paths = _stack_paths(port, home)
    path = Path(env_file) if env_file else paths.home / "stack.env"
    stack_up(paths, path, env_file_required=env_file is not None, timeout_s=timeout_s,
             echo=click.echo)


@stack_group.command("down")
@_home_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(0), default=30, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def stack_down_cmd(home, timeout_s) -> None:
    """Stop the worker and the server that `stack up` started (and their child processes)."""
    from sr_core.deploy.stack import stack_down

    for line in stack_down(_stack_paths(4200, home), timeout_s):
        click.echo(line)


@stack_group.command("status")
@_stack_options
def stack_status_cmd(port, home) -> None:
    """Print what runs (the server's port is the one `stack up` used; --port only when that is
    not recorded). Exit status 0 when the server answers and the worker runs, else 3."""
    from sr_core.deploy.stack import status_lines

    lines, ok = status_lines(_stack_paths(port, home))
    for line in lines:
        click.echo(line)
    if not ok:
        sys.exit(3)  # click's non-standalone main would turn click's Exit into a return value


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
    except BusyError as exc:
        click.echo(f"sr-pipeline: busy: {exc}", err=True)
        sys.exit(EXIT_BUSY)
    except SRError as exc:
        _fail(str(exc), 1)
    sys.exit(0)


if __name__ == "__main__":
    main()
