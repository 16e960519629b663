"""Prefect flow ``train_model``: train a model on the user's scenes by the Wald protocol
(:func:`sr_core.training.train.train_model`) and publish its validation history as a table artifact
(``training-validation``) and the card's summary as markdown (``training-card``).

    from flows.train_model import train_model_flow
    from sr_core.training.config import TrainConfig
    train_model_flow(TrainConfig(architecture="edsr", arguments={"scale": 2, ...},
                                 name="edsr-x2", out="edsr_x2.safetensors", scenes=[...],
                                 val_scenes=[...]))

The flow takes the whole :class:`~sr_core.training.config.TrainConfig` (a pydantic model: the
Prefect UI renders its fields as a form; a deployment passes ``{"cfg": {...}}``).
"""

from __future__ import annotations

import json

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from sr_core.training.config import TrainConfig
from sr_core.training.train import train_model
from sr_core.training.train_card import validation_markdown


@task(name="train", cache_policy=NO_CACHE)
def train_task(cfg: TrainConfig) -> dict:
    return train_model(cfg, progress=False)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(card: dict) -> str:
    rows = [{"epoch": h["epoch"], "phase": h["phase"], "train_loss": round(h["train_loss"], 5),
             **{f"{scene} {d} gain (dB)": round(v["model_psnr_db"] - v["bicubic_psnr_db"], 3)
                for scene, by_deg in h["validation"].items() for d, v in by_deg.items()}}
            for h in card["training"]["history"]]
    create_table_artifact(table=rows, key="training-validation",
                          description=f"{card['name']}: validation gain over bicubic per epoch")
    lines = [f"# {card['name']}", "", f"weights: `{card['weights']}`", "",
             f"degradation: {card['training']['degradation']}", "",
             validation_markdown(card), "```json", json.dumps(card["arguments"]), "```"]
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="training-card")
    return card["weights"]


@flow(name="train_model")
def train_model_flow(cfg: TrainConfig) -> dict:
    """Train and publish; returns the model card (with ``weights``, the file written)."""
    card = train_task(cfg)
    publish_task(card)
    return card
