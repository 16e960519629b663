"""Page rendering for the HTML reports: the Jinja2 environment over ``sr_core/reports/templates``,
its ``num`` filter, and the small text helpers the pages share.

May import: jinja2 and the standard library.
"""

from __future__ import annotations

import json
import math

import jinja2


def env() -> jinja2.Environment:
    """The templates' environment: autoescaped, strict about undefined names, with ``num``."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("sr_core.reports", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters["num"] = num
    return environment


def render(template: str, **context) -> str:
    """The HTML text of ``template`` (a file of ``sr_core/reports/templates``) with ``context``."""
    return env().get_template(template).render(**context)


def num(v, nd: int = 2) -> str:
    """A number for the page: ``n/a`` for ``None``, strings as they are, integers with thousands
    separators, floats with ``nd`` decimals (``inf``/``nan`` as words)."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.{nd}f}"
    return str(v)


def to_json(obj) -> str:
    """``obj`` as indented JSON (anything JSON cannot hold written with ``str``)."""
    return json.dumps(obj, indent=2, default=str)


def link_for(uri: str) -> str:
    """A link a browser (or the Prefect UI) can follow: ``file://`` URI for a local path, the
    URL itself otherwise (``s3://``, ``https://``)."""
    from pathlib import Path

    if "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()
