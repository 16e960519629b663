"""Offline STAC validation: the core Item schema and each extension an item declares, from the
schemas bundled in ``tests/data/stac-schemas`` (provenance in its README), with ``jsonschema``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent / "data" / "stac-schemas"
#: The core Item schema of the STAC version the pipeline writes (pystac's default).
ITEM_SCHEMA = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"


@functools.cache
def _registry():
    """Every bundled schema under the URL its path spells (``https://`` + relative path)."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    resources = [(f"https://{p.relative_to(SCHEMAS).as_posix()}",
                  Resource.from_contents(json.loads(p.read_text()), default_specification=DRAFT7))
                 for p in SCHEMAS.rglob("*.json")]
    return Registry().with_resources(resources)


@functools.cache
def _validator(uri: str):
    from jsonschema import Draft7Validator

    contents = _registry().contents(uri)
    return Draft7Validator(contents, registry=_registry(),
                           format_checker=Draft7Validator.FORMAT_CHECKER)


def stac_item_problems(item: dict) -> list[str]:
    """What is wrong with a STAC item (a dict): one line per violation of the core Item schema
    or of a declared extension's schema; a declared extension without a bundled schema is one.

    Returns:
        ``[]`` when the item is valid.
    """
    if item.get("stac_version") != "1.1.0":
        return [f"stac_version {item.get('stac_version')!r}: only 1.1.0 schemas are bundled"]
    from referencing.exceptions import NoSuchResource

    problems = []
    for uri in (ITEM_SCHEMA, *item.get("stac_extensions", [])):
        try:
            validator = _validator(uri)
        except NoSuchResource:
            problems.append(f"{uri}: no bundled schema (add it to {SCHEMAS})")
            continue
        problems += [f"{uri}: {'/'.join(map(str, e.absolute_path)) or '(item)'}: {e.message}"
                     for e in validator.iter_errors(item)]
    return problems
