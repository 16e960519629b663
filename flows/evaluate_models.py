"""Prefect flow ``evaluate_models``: PSNR / SSIM of models and bicubic on benchmark images or
georeferenced scenes (:mod:`sr_core.quality.evaluate`), published as a table artifact
(``evaluation-summary``), a markdown artifact (``evaluation-report``) and ``evaluation.md`` /
``evaluation.csv`` in the output folder. Two tasks: ``evaluate`` and ``publish``; the CLI's
``sr-pipeline evaluate`` runs the same :mod:`sr_core.quality.evaluate` code without Prefect.

    from flows.evaluate_models import evaluate_models
    evaluate_models(out_dir="eval", scale=2, models=["edsr-x2"], hr_dir="Set5/HR")
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from sr_core.quality import evaluate as ev


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: ev.EvalConfig) -> ev.EvalResult:
    return ev.evaluate(cfg)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(result: ev.EvalResult, out_dir: str) -> dict[str, str]:
    paths = ev.write_outputs(result, out_dir)
    create_table_artifact(table=[{k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in r.items()} for r in result.summary],
                          key="evaluation-summary",
                          description=f"mean PSNR / SSIM, {result.conventions['images']}")
    create_markdown_artifact(markdown=ev.to_markdown(result), key="evaluation-report")
    return paths


@flow(name="evaluate_models")
def evaluate_models(out_dir: str, scale: int, models: list[str] | None = None,
                    hr_dir: str | None = None, lr_dir: str | None = None,
                    scenes: list[str] | None = None, channel: str = "y",
                    crop_border_px: int | None = None, device: str = "cpu") -> dict:
    """Evaluate ``models`` (and bicubic); returns the paths written and the summary rows."""
    cfg = ev.EvalConfig(models=tuple(models or ()), scale=scale, hr_dir=hr_dir, lr_dir=lr_dir,
                        scenes=tuple(scenes or ()), channel=channel,
                        crop_border_px=crop_border_px, device=device)
    result = evaluate_task(cfg)
    paths = publish_task(result, out_dir)
    return {**paths, "summary": result.summary}

