"""Prefect flow ``evaluate_models``: PSNR / SSIM of models and bicubic on benchmark images or
georeferenced scenes (:mod:`sr_core.training.evaluate`), published as a table artifact
(``evaluation-summary``), a markdown artifact (``evaluation-report``) and ``evaluation.md`` /
``evaluation.csv`` in the output folder. Two tasks: ``evaluate`` and ``publish``; the CLI's
``sr-pipeline evaluate`` runs the same :mod:`sr_core.training.evaluate` code without Prefect.

    from flows.evaluate_models import evaluate_models
    from sr_core.training.evaluate import EvalConfig
    evaluate_models(EvalConfig(models=["edsr-x2"], scale=2, hr_dir="Set5/HR"), out_dir="eval")

The flow takes the whole :class:`~sr_core.training.evaluate.EvalConfig` (a pydantic model: the
Prefect UI renders its fields as a form) and the output folder, which is not part of it.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from sr_core.training import evaluate as ev


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
def evaluate_models(cfg: ev.EvalConfig, out_dir: str) -> dict:
    """Evaluate ``cfg.models`` (and bicubic); returns the paths written and the summary rows."""
    result = evaluate_task(cfg)
    paths = publish_task(result, out_dir)
    return {**paths, "summary": result.summary}

