"""Archive STAC items: the STAC 1.1 item of a published, georeferenced output COG
(:func:`stac_item`), with the projection extension v2.0.0 (:func:`_crs_fields`) and the
processing extension's lineage. Medical outputs get none.

May import :mod:`sr_core.geometry`, rasterio and pystac, :mod:`sr_core.pipeline` (types only),
:mod:`sr_core.archive.sources`, :mod:`sr_core.archive.layout` and
:mod:`sr_core.archive.summary`.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

import sr_core
from sr_core.archive.layout import OutputPaths, weights_sha256
from sr_core.archive.sources import SceneRef
from sr_core.archive.summary import report_quality
from sr_core.geometry.transforms import grid_bounds, upscaled_transform

if TYPE_CHECKING:
    from sr_core.pipeline import Run

#: STAC extensions the output items declare.
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
PROCESSING_EXT = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


def _crs_fields(crs_text: str | None) -> dict:
    """The CRS fields of the projection extension v2.0.0 (:data:`PROJECTION_EXT`), without their
    ``proj:`` prefix: ``code``, the authority code (``"EPSG:32618"``; ``None`` for a CRS that has
    none, e.g. a custom Albers), and ``wkt2``, the CRS as WKT2:2019 for every CRS (GDAL's plain
    ``to_wkt()`` writes WKT1 for a custom CRS). No CRS: ``{"code": None}``.

    Raises:
        rasterio.errors.CRSError: ``crs_text`` is no CRS (the scene's was validated at ingest).
    """
    from rasterio.crs import CRS
    from rasterio.enums import WktVersion

    if not crs_text:
        return {"code": None}
    crs = CRS.from_user_input(crs_text)
    authority = crs.to_authority()
    return {"code": ":".join(authority) if authority else None,
            "wkt2": crs.to_wkt(version=WktVersion.WKT2_2019)}


def stac_item(run: Run, scene: SceneRef, paths: OutputPaths) -> dict:
    """The STAC item (pystac) of a published output COG: geometry and bbox in WGS 84, the
    projection extension v2.0.0 (``proj:code`` where the CRS has an authority code,
    ``proj:wkt2`` as WKT2:2019 always, shape, transform, native bbox), GSD and the processing
    extension's lineage (source, model, weights hash, software version).

    GSD is the output pixel size in CRS units (metres for projected CRSs; degrees otherwise).

    Returns:
        The item as a JSON-ready dict.
    """
    import pystac
    from rasterio.warp import transform_bounds, transform_geom

    s, sc = run.scale, run.ingested("stac_item")
    a, b, _, d, _, _ = sc.transform[:6]
    out_t = list(upscaled_transform(sc.transform, s))[:6]  # the output COG's transform
    out_w, out_h = sc.width * s, sc.height * s
    native_bbox = grid_bounds(sc.transform, sc.width, sc.height)
    ring = [[native_bbox[0], native_bbox[1]], [native_bbox[2], native_bbox[1]],
            [native_bbox[2], native_bbox[3]], [native_bbox[0], native_bbox[3]],
            [native_bbox[0], native_bbox[1]]]
    geom = {"type": "Polygon", "coordinates": [ring]}
    if sc.crs:
        bbox = list(transform_bounds(sc.crs, "EPSG:4326", *native_bbox, densify_pts=21))
        geom = transform_geom(sc.crs, "EPSG:4326", geom)
    else:
        bbox = native_bbox
    when = scene.datetime or sc.tags.get("TIFFTAG_DATETIME")
    dt = None
    if when:
        try:
            dt = _dt.datetime.fromisoformat(when.replace(":", "-", 2) if when[4:5] == ":" else when)
        except ValueError:
            dt = None
    rep = run.published.get("report", {})
    item = pystac.Item(
        id=f"{scene.scene_id.replace('/', '_')}_{paths.folder.rsplit('/', 1)[-1]}",
        geometry=geom, bbox=bbox, datetime=dt or _dt.datetime.now(_dt.UTC),
        properties={"gsd": abs(a / s) if b == 0 else float((a * a + d * d) ** 0.5) / s})
    item.stac_extensions = [PROJECTION_EXT, PROCESSING_EXT]
    item.properties.update({f"proj:{k}": v for k, v in _crs_fields(sc.crs).items()})
    item.properties.update({"proj:shape": [out_h, out_w], "proj:transform": out_t,
                            "proj:bbox": native_bbox})
    item.properties.update({
        "processing:level": f"SR x{s}",
        "processing:software": {"sr-pipeline": sr_core.__version__},
        "processing:lineage": (
            f"Super-resolved x{s} from {scene.uri} with {run.model.descriptor.name} "
            f"({run.model.descriptor.architecture}; weights SHA-256 "
            f"{weights_sha256(run.model)}), tiles of {run.cfg.tile_size_px} px with a halo of "
            f"{run.halo_px} px ({run.halo.rule if run.halo else 'analytic'} receptive field), "
            f"per-scene normalisation."),
        "sr:source": scene.uri, "sr:model": run.model.descriptor.name,
        "sr:weights_sha256": weights_sha256(run.model), "sr:scale": s,
        "sr:wald_gain_db": ((rep.get("quality") or {}).get("wald") or {}).get("gain_db"),
        "sr:wald_gain_area_db": report_quality(rep).get("gain_area_db"),
    })
    item.add_asset("data", pystac.Asset(href=paths.cog, media_type=pystac.MediaType.COG,
                                        roles=["data"], title=f"{scene.scene_id} x{s}"))
    item.add_asset("report", pystac.Asset(href=paths.report_json, media_type=pystac.MediaType.JSON,
                                          roles=["metadata"], title="sr-pipeline quality report"))
    item.add_asset("report-md", pystac.Asset(href=paths.report_md, media_type="text/markdown",
                                             roles=["metadata"]))
    item.add_link(pystac.Link(rel="derived_from", target=scene.stac_href or scene.uri,
                              media_type=pystac.MediaType.JSON if scene.stac_href
                              else pystac.MediaType.GEOTIFF))
    return item.to_dict(include_self_link=False, transform_hrefs=False)
