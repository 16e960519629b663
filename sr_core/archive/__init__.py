"""Archive scale: list an archive's scenes, lay out their outputs, skip what is already done, and
summarise a run. No Prefect here: ``flows/upscale_archive.py`` wraps these functions in tasks.

Sources (:func:`list_scenes`):

* an S3 prefix with a glob, ``s3://bucket/archive/**/*.tif`` (listed with boto3's paginator, so
  any number of keys; each scene's fingerprint is its ETag from the listing);
* a local folder (``/data/archive``, every ``**/*.tif``) or a local glob
  (``/data/archive/2024/*.tif``); fingerprint: SHA-256 of the file (streamed);
* a STAC ItemCollection or Catalog / Collection JSON, local or on S3 (read with pystac); the asset
  to upscale is chosen by key; fingerprint: the asset's ETag (S3) or SHA-256 (local).

Output layout (:func:`output_paths`), under an output prefix (local folder or ``s3://``)::

    OUTPUT_PREFIX/<scene id>/<model>_x<scale>/<stem>.tif           COG (WSI: pyramidal TIFF)
                                              <stem>.nii.gz / .nii NIfTI output
                                              <stem>.dcm           single DICOM file output
                                              <stem>/IM00001.dcm   DICOM series output (folder)
                                              <stem>.report.json   quality report (+ .md, .html)
                                              <stem>.stac.json     STAC item (georeferenced only)
                                              <stem>.manifest.json publication manifest
    OUTPUT_PREFIX/archive-summary.json                             last run's summary
    OUTPUT_PREFIX/archive-report.html                              last run's HTML page
    OUTPUT_PREFIX/_runs/<UTC time>-<run id>.summary.json           every run's summary

The scene id is the scene's path relative to the listing root without its extension
(``2024/05/scene_a``), or the STAC item id; ``<stem>`` is its last part; ``<model>`` is the model's
name without its ``-xN`` suffix (``edsr``, ``espcn``, ``bicubic``, or a custom card's name).

The output's name follows its format, read from the input's first bytes (:func:`output_for`).
Medical archives: a folder where two or more listed files are DICOM is one scene, the series
folder (:func:`group_series`). Medical outputs get no STAC item: their manifest holds the lineage
and their report the physical geometry.

Idempotency: each scene's manifest is the pipeline's publication manifest
(:mod:`sr_core.publication.manifest`), written last and conditionally by :func:`sr_core.pipeline.publish`
after the COG, reports and STAC item are in place. It records the input fingerprint (ETag or
SHA-256 and size), the model weights' SHA-256, the parameters that change the output (model,
scale, Wald window) and every output's size and SHA-256. A scene is skipped when its manifest
matches and every output it lists is present with its size; otherwise it is processed again (a
run that died half-way left no manifest, the previous one, or one still listing the previous
outputs under their side names, and its tiles are resumed from the work directory:
:mod:`sr_core.publication.journal`). Tile size, device and the Dask cluster do not change the
output (tiled output equals whole-image output), so they do not invalidate a manifest.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import sr_core
from sr_core import storage
from sr_core.publication import manifest
from sr_core.errors import BusyError, InputError, SRError
from sr_core.pipeline import ModelInfo, Run, UpscaleConfig, dask_client, run_upscale
from sr_core.storage.security import check_relative_id, check_source

log = logging.getLogger(__name__)

MANIFEST_VERSION = manifest.MANIFEST_VERSION
#: Glob used for a local folder given without one.
DEFAULT_GLOB = "**/*.tif"
_GLOB_CHARS = re.compile(r"[*?\[]")
#: STAC extensions the output items declare.
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
PROCESSING_EXT = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


@dataclass(frozen=True)
class SceneRef:
    """One scene of an archive, as listed (nothing is read from it yet).

    Attributes:
        uri: where it is read from (local path or ``s3://bucket/key``).
        scene_id: its id in the output layout (relative path without extension, or STAC item id).
        fingerprint: ``{"etag": str, "size": int}`` (S3) or ``{"sha256": str, "size": int}``
            (local files).
        stac_href: the STAC item it came from (lineage), or ``None``.
        datetime: acquisition time from its STAC item (ISO 8601), or ``None``.
    """

    uri: str
    scene_id: str
    fingerprint: dict
    stac_href: str | None = None
    datetime: str | None = None


@dataclass(frozen=True)
class OutputPaths:
    """Where one scene's outputs go (see the module docstring)."""

    folder: str
    cog: str
    report_json: str
    report_md: str
    stac: str
    manifest: str


@dataclass
class ScenePlan:
    """A scene with its outputs and whether it needs processing.

    Attributes:
        paths: its outputs; ``None`` when ``status`` is ``"failed"``.
        status: ``"todo"``, ``"skipped"`` (its manifest matches and its output exists) or
            ``"failed"`` (its location or id is refused: nothing is read or written for it).
        reason: why (``"no manifest"``, ``"input changed"``, ``"up to date"``, the refusal's
            one-line message, ...).
        outputs: a skipped scene's outputs, as its manifest records them.
    """

    scene: SceneRef
    paths: OutputPaths | None
    status: str
    reason: str
    outputs: dict = field(default_factory=dict)


@dataclass
class SceneResult:
    """The outcome of one scene in an archive run (one row of the summary).

    Attributes:
        status: ``"done"``, ``"skipped"`` or ``"failed"``.
        reason: skipped and failed scenes only: the skip reason or the failure's one-line
            message (``None`` for a processed scene, and absent from :meth:`to_dict`).
        processed_because: processed (``done``) scenes only: why the plan processed it (``"no
            manifest"``, ``"input changed"``, ``"output COG missing"``, ...).
        seconds: wall time of the scene, failed ones included (0 when skipped); started /
            finished: UNIX times.
        output_mp_per_s: output megapixels per second of wall time; quality: Wald PSNR/SSIM of
            model and bicubic and the LR-consistency PSNR (dB), from the report.
    """

    scene_id: str
    uri: str
    status: str
    reason: str | None = None
    processed_because: str | None = None
    cog: str | None = None
    report: str | None = None
    stac: str | None = None
    seconds: float = 0.0
    started: float | None = None
    finished: float | None = None
    output_mp_per_s: float | None = None
    quality: dict = field(default_factory=dict)

    output: str | None = None
    format: str | None = None

    def to_dict(self) -> dict:
        """The summary row: every field, less ``reason`` and ``processed_because`` where they
        do not apply (``None``)."""
        row = asdict(self)
        for key in ("reason", "processed_because"):
            if row[key] is None:
                del row[key]
        return row


# ---------------------------------------------------------------------------------- listing


def split_glob(source: str) -> tuple[str, str]:
    """Split ``root/with/no/glob/PATTERN`` at the first path part holding a glob character.

    Returns:
        ``(root, pattern)``: ``root`` ends with ``/`` (or is empty); ``pattern`` is relative to it
        and empty when ``source`` holds no glob.
    """
    m = _GLOB_CHARS.search(source)
    if m is None:
        return source, ""
    cut = source.rfind("/", 0, m.start()) + 1
    return source[:cut], source[cut:]


def glob_regex(pattern: str) -> re.Pattern:
    """A regex for a path glob: ``**/`` matches any number of folders (none included), ``*`` and
    ``?`` never cross a ``/``, ``[...]`` is a character class (fsspec's translation)."""
    from fsspec.utils import glob_translate

    return re.compile(glob_translate(pattern))


def _scene_id(relative: str) -> str:
    rel = relative.strip("/")
    if rel.lower().endswith(".nii.gz"):
        return rel[:-len(".nii.gz")]
    stem, dot, ext = rel.rpartition(".")
    return stem if dot and "/" not in ext else rel


fingerprint = manifest.fingerprint


#: Names never sniffed for DICOM content when listing (their format is another one).
NOT_DICOM_EXTS = (".tif", ".tiff", ".svs", ".nii", ".nii.gz", ".json", ".xml")


def _head_bytes(uri: str, n: int = 1024) -> bytes:
    """The first ``n`` bytes of a local file or S3 object (a ranged GET).

    Raises:
        StorageError: S3 unreachable or access denied.
    """
    if storage.is_s3(uri):
        bucket, key = storage.parse_s3(uri)
        try:
            return storage.s3_client().get_object(Bucket=bucket, Key=key,
                                                  Range=f"bytes=0-{n - 1}")["Body"].read()
        except Exception as exc:  # noqa: BLE001
            raise storage._s3_error(uri, exc) from None
    with open(uri, "rb") as f:
        return f.read(n)


def _is_dicom(scene: SceneRef) -> bool:
    uri = scene.uri
    if uri.lower().endswith(NOT_DICOM_EXTS) or scene.fingerprint.get("size", 1) < 132:
        return False  # (an empty object would answer a ranged GET with an error)
    from sr_core.formats import format_of_head

    return format_of_head(_head_bytes(uri, 132)) == "dicom"


def group_series(scenes: list[SceneRef], root: str) -> list[SceneRef]:
    """Turn DICOM series folders into one scene each.

    A folder in which two or more of the listed files are DICOM (``DICM`` at byte 128; names
    ending in :data:`NOT_DICOM_EXTS` are not read) is one scene: id the folder's path relative
    to the listing root, URI the folder (``s3://bucket/prefix/folder/`` on S3), fingerprint the
    SHA-256 of its files' names and fingerprints. Its DICOM files are no scenes of their own; a
    DICOM file alone in its folder stays a single-file scene. The pipeline then validates the
    folder as ``sr-pipeline upscale FOLDER`` does: every file in it one series of one size and
    pixel format, so a folder that mixes series (or holds other files) fails as one scene.
    """
    import hashlib

    with ThreadPoolExecutor(max_workers=8) as pool:
        dicom = list(pool.map(_is_dicom, scenes))
    folders: dict[str, list[SceneRef]] = {}
    for sc, is_dcm in zip(scenes, dicom, strict=True):
        if is_dcm:
            folders.setdefault(sc.uri.rsplit("/", 1)[0], []).append(sc)
    out = [sc for sc, is_dcm in zip(scenes, dicom, strict=True)
           if not is_dcm or len(folders[sc.uri.rsplit("/", 1)[0]]) < 2]
    for folder, members in folders.items():
        if len(members) < 2:
            continue
        lines = sorted(f"{m.uri.rsplit('/', 1)[-1]}\t{json.dumps(m.fingerprint, sort_keys=True)}"
                       for m in members)
        rel = folder[len(root.rstrip("/")):].strip("/") if folder.startswith(root.rstrip("/")) \
            else folder.rsplit("/", 1)[-1]
        out.append(SceneRef(
            uri=folder + "/" if storage.is_s3(folder) else folder,
            scene_id=rel or folder.rsplit("/", 1)[-1],
            fingerprint={"series_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
                         "files": len(members),
                         "size": sum(int(m.fingerprint.get("size", 0)) for m in members)}))
    return out


def _list_s3(source: str) -> list[SceneRef]:
    root, pattern = split_glob(source)
    if not pattern:
        raise InputError(f"{source}: give a glob after the prefix, e.g. {source.rstrip('/')}/**/*.tif")
    rx = glob_regex(pattern)
    bucket, _ = storage.parse_s3(root + "x")
    prefix_key = root[len(f"s3://{bucket}/"):]
    scenes = []
    for key, etag, size in storage.list_s3(root):
        rel = key[len(prefix_key):]
        if rx.match(rel):
            scenes.append(SceneRef(uri=f"s3://{bucket}/{key}", scene_id=_scene_id(rel),
                                   fingerprint={"etag": etag, "size": size}))
    return group_series(scenes, root)


def _list_local(source: str) -> list[SceneRef]:
    if os.path.isdir(source):
        root, pattern = source.rstrip("/") + "/", DEFAULT_GLOB
    else:
        root, pattern = split_glob(source)
        if not pattern:
            raise InputError(f"{source}: no such folder")
        if root and not os.path.isdir(root):
            raise InputError(f"{root}: no such folder")
    rels = sorted(glob.glob(pattern, root_dir=root or None, recursive=True))
    scenes = []
    for rel in rels:
        path = os.path.join(root, rel)
        if os.path.isfile(path) and not os.path.basename(rel).startswith("."):
            scenes.append(SceneRef(uri=path, scene_id=_scene_id(rel.replace(os.sep, "/")),
                                   fingerprint={}))
    # hashing reads every file: do it on a few threads (I/O bound)
    with ThreadPoolExecutor(max_workers=4) as pool:
        prints = list(pool.map(lambda s: fingerprint(s.uri), scenes))
    return group_series([SceneRef(s.uri, s.scene_id, fp)
                         for s, fp in zip(scenes, prints, strict=True)], root or "")


def _stac_io():
    """A pystac StacIO that also reads ``s3://`` hrefs (through :mod:`sr_core.storage`)."""
    from pystac.stac_io import DefaultStacIO

    class S3StacIO(DefaultStacIO):
        def read_text(self, source, *args, **kwargs) -> str:
            href = str(source)
            check_source(href, "STAC link")
            if storage.is_s3(href):
                text = storage.read_text(href)
                if text is None:
                    raise InputError(f"{href}: no such STAC file")
                return text
            return super().read_text(source, *args, **kwargs)

    return S3StacIO()


def _list_stac(source: str, asset_key: str) -> list[SceneRef]:
    import pystac

    stac_io = _stac_io()
    text = storage.read_text(source)
    if text is None:
        raise InputError(f"{source}: no such STAC file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        if doc.get("type") == "FeatureCollection":
            # relative asset hrefs are taken relative to the ItemCollection file (below)
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False).items)
        elif doc.get("type") in ("Catalog", "Collection"):
            cat = pystac.read_file(source, stac_io=stac_io)
            items = list(cat.get_items(recursive=True))
        elif doc.get("type") == "Feature":
            items = [pystac.Item.from_dict(doc)]
        else:
            raise InputError(f"{source}: not a STAC ItemCollection, Catalog, Collection or Item")
    except pystac.STACError as exc:
        raise InputError(f"{source}: invalid STAC ({exc})") from None
    base = source.rsplit("/", 1)[0] + "/"
    scenes = []
    for item in items:
        asset = item.assets.get(asset_key)
        if asset is None:
            raise InputError(f"{source}: item {item.id} has no asset {asset_key!r} "
                             f"(it has: {', '.join(item.assets) or 'none'})")
        href = asset.get_absolute_href() or asset.href
        if not (storage.is_s3(href) or os.path.isabs(href)):
            href = base + href.removeprefix("./")
        if href.startswith("file://"):
            href = href[len("file://"):]
        scenes.append(SceneRef(uri=href, scene_id=item.id, fingerprint={},
                               stac_href=item.get_self_href() or source,
                               datetime=item.datetime.isoformat() if item.datetime else None))
    with ThreadPoolExecutor(max_workers=8) as pool:
        # a refused href (http://, /vsicurl/, an S3 key with ../) is never touched: the scene
        # keeps no fingerprint and plan_scene fails it with the reason
        prints = list(pool.map(lambda s: {} if _refused(s.uri) else fingerprint(s.uri), scenes))
    return [SceneRef(s.uri, s.scene_id, fp, s.stac_href, s.datetime)
            for s, fp in zip(scenes, prints, strict=True)]


def _refused(uri: str) -> bool:
    """Whether :func:`plan_scene` will refuse this location (nothing may be fetched from it)."""
    try:
        check_source(uri, "archive scene")
        if storage.is_s3(uri):
            storage.parse_s3(uri)
    except InputError:
        return True
    return False


def list_scenes(source: str, *, asset_key: str = "data") -> list[SceneRef]:
    """Every scene of an archive (see the module docstring for the kinds of source).

    Args:
        source: ``s3://bucket/prefix/GLOB``, a local folder or glob, or a STAC JSON file (a
            ``.json`` path or URL: ItemCollection, Catalog, Collection or a single Item).
        asset_key: STAC only: the key of the asset to upscale in each item.

    Returns:
        Scenes sorted by scene id.

    Raises:
        InputError: no glob after an S3 prefix, missing folder, bad STAC, an item without the
            asset, two scenes with the same id.
        StorageError: S3 unreachable or access denied.
    """
    if source.lower().endswith(".json"):
        scenes = _list_stac(source, asset_key)
    elif storage.is_s3(source):
        scenes = _list_s3(source)
    else:
        scenes = _list_local(source)
    seen: dict[str, str] = {}
    for s in scenes:
        if s.scene_id in seen:
            raise InputError(f"{source}: two scenes share the id {s.scene_id!r} "
                             f"({seen[s.scene_id]} and {s.uri})")
        seen[s.scene_id] = s.uri
    return sorted(scenes, key=lambda s: s.scene_id)


# ---------------------------------------------------------------------------------- layout


def model_label(model: ModelInfo) -> str:
    """``<model>_x<scale>`` for the output layout, e.g. ``edsr_x2``."""
    name, scale = model.descriptor.name, model.descriptor.scale
    name = re.sub(rf"-x{scale}$", "", name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    return f"{name}_x{scale}"


def output_for(paths: OutputPaths, uri: str) -> str:
    """Where a scene's upscaled image goes, named as its format names it (decided from the
    input's content, not its name): ``<stem>.tif`` for a GeoTIFF (the COG, ``paths.cog``) or a
    whole-slide TIFF (pyramidal TIFF); ``<stem>.nii.gz`` / ``<stem>.nii`` for NIfTI (the input's
    compression kept); ``<stem>.dcm`` for a single DICOM file; the folder ``<stem>`` (S3:
    ``<stem>/``) holding ``IM00001.dcm``... for a DICOM series folder.

    Raises:
        StorageError: S3 unreachable or access denied (the first bytes are read).
    """
    from sr_core.formats import format_of_head

    base = paths.cog[:-len(".tif")]
    if uri.endswith("/") or (not storage.is_s3(uri) and os.path.isdir(uri)):
        return base + "/" if storage.is_s3(uri) else base
    try:
        head = _head_bytes(uri, 1024)
    except (OSError, SRError):  # missing, empty (S3: no range to read): the pipeline says why
        head = b""
    fmt = format_of_head(head)
    if fmt == "dicom":
        return base + ".dcm"
    if fmt == "nifti":
        return base + (".nii.gz" if head[:2] == b"\x1f\x8b" else ".nii")
    return paths.cog


def output_paths(output_prefix: str, scene_id: str, model: ModelInfo) -> OutputPaths:
    """The output files of one scene (see the module docstring).

    Raises:
        InputError: a scene id that could leave the output prefix (``..`` or empty segments,
            absolute, control characters: :func:`sr_core.storage.security.check_relative_id`), or whose
            output keys exceed 1,024 bytes (S3) or file names 255 bytes (local).
    """
    check_relative_id(scene_id, output_prefix)
    folder = f"{output_prefix.rstrip('/')}/{scene_id}/{model_label(model)}"
    stem = scene_id.rsplit("/", 1)[-1]
    base = f"{folder}/{stem}"
    longest = f"{base}.manifest.json"
    if storage.is_s3(longest):
        storage.parse_s3(longest)  # S3's 1,024-byte key limit
    elif any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in scene_id.split("/")):
        raise InputError(f"{output_prefix}: scene id {scene_id[:60]}... has a part over 255 bytes, "
                         "too long for a local file name")
    return OutputPaths(folder=folder, cog=f"{base}.tif", report_json=f"{base}.report.json",
                       report_md=f"{base}.report.md", stac=f"{base}.stac.json",
                       manifest=f"{base}.manifest.json")


# ---------------------------------------------------------------------------------- manifest


def output_parameters(cfg: UpscaleConfig, model: ModelInfo) -> dict:
    """The parameters that change a scene's output (what a manifest must match)."""
    return manifest.output_parameters(model.descriptor.name, model.descriptor.scale,
                                      cfg.wald_window_px, self_ensemble=cfg.self_ensemble,
                                      consistency=cfg.consistency)


def weights_sha256(model: ModelInfo) -> str:
    """SHA-256 of the model's weights (from its card, checked at load); models without weights
    (bicubic) give ``"none:<name>"``."""
    return manifest.weights_sha256(model.card, model.descriptor.name)


def expected_manifest(scene: SceneRef, cfg: UpscaleConfig, model: ModelInfo) -> dict:
    """The part of a manifest that must match for a scene to be skipped."""
    return {"manifest_version": MANIFEST_VERSION, "input": scene.fingerprint,
            "weights_sha256": weights_sha256(model), "parameters": output_parameters(cfg, model)}


def plan_scene(scene: SceneRef, output_prefix: str, cfg: UpscaleConfig,
               model: ModelInfo) -> ScenePlan:
    """Whether one scene needs processing: skipped when its manifest matches and every output it
    lists is present (:func:`sr_core.publication.manifest.missing_output`).

    A scene whose location (:func:`sr_core.storage.security.check_source`) or id (a key with ``../``, a
    newline, ...) is refused gets status ``"failed"`` with the reason, and nothing is read or
    written for it; the other scenes go on.

    Raises:
        StorageError: the output location cannot be read.
    """
    try:
        check_source(scene.uri, "archive scene")
        if storage.is_s3(scene.uri):
            storage.parse_s3(scene.uri)
        paths = output_paths(output_prefix, scene.scene_id, model)
    except InputError as exc:
        return ScenePlan(scene, None, "failed", str(exc))
    found = manifest.read(paths.manifest)
    if found is None:
        return ScenePlan(scene, paths, "todo", "no manifest")
    if not found.doc:
        return ScenePlan(scene, paths, "todo", "manifest unreadable")
    why = manifest.mismatch(found.doc, expected_manifest(scene, cfg, model))
    if why:
        return ScenePlan(scene, paths, "todo", why)
    missing = manifest.missing_output(found.doc)
    listed = found.doc.get("outputs") or {}
    output = (listed.get("output") or {}).get("uri") or paths.cog
    if missing:
        return ScenePlan(scene, paths, "todo",
                         ("output COG missing" if output == paths.cog else "output missing")
                         if missing.startswith("output:") else f"output missing ({missing})")
    return ScenePlan(scene, paths, "skipped", "up to date",
                     {"output": output, "cog": output if output == paths.cog else None,
                      "stac": (listed.get("stac") or {}).get("uri")})


def plan_archive(scenes: Iterable[SceneRef], output_prefix: str, cfg: UpscaleConfig,
                 model: ModelInfo, threads: int = 16) -> list[ScenePlan]:
    """:func:`plan_scene` for every scene, ``threads`` manifests read at a time."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda s: plan_scene(s, output_prefix, cfg, model), scenes))


# ---------------------------------------------------------------------------------- one scene


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

    assert run.scene is not None
    s, sc = run.cfg.scale, run.scene
    a, b, c, d, e, f = sc.transform
    out_t = [a / s, b / s, c, d / s, e / s, f]
    out_w, out_h = sc.width * s, sc.height * s
    xs = [c, c + a * sc.width, c + b * sc.height, c + a * sc.width + b * sc.height]
    ys = [f, f + d * sc.width, f + e * sc.height, f + d * sc.width + e * sc.height]
    native_bbox = [min(xs), min(ys), max(xs), max(ys)]
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
        "sr:wald_gain_area_db": _quality(rep).get("gain_area_db"),
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


def _quality(rep: dict) -> dict:
    q = rep.get("quality") or {}
    wald = q.get("wald") or {}
    out = {"wald_psnr_db": (wald.get("model") or {}).get("psnr_db"),
           "wald_ssim": (wald.get("model") or {}).get("ssim"),
           "bicubic_psnr_db": (wald.get("bicubic") or {}).get("psnr_db"),
           "gain_db": wald.get("gain_db"),
           "gain_area_db": ((wald.get("by_degradation") or {}).get("area") or {}).get("gain_db"),
           "lr_consistency_psnr_db": (q.get("lr_consistency") or {}).get("psnr_db")}
    return {k: v for k, v in out.items() if v is not None}


def process_scene(plan: ScenePlan, cfg: UpscaleConfig, model: ModelInfo,
                  scratch_dir: str | None = None,
                  on_progress: Callable[[int, int, int], None] | None = None
                  ) -> tuple[SceneResult, dict]:
    """Upscale one planned scene through every stage of :func:`sr_core.pipeline.run_upscale`,
    publishing its STAC item with the COG and reports, and its manifest last.

    Args:
        plan: the scene and its output paths.
        cfg: archive-wide options; ``src``/``dst``/``report`` are set per scene here. Pass
            ``dask_address`` of the archive's shared cluster.
        model: the resolved model (for the manifest).
        scratch_dir: where temporary files go.
        on_progress: called as ``on_progress(tiles_done, tiles_total, out_px_done)`` while
            the tiles run (:func:`sr_core.pipeline.infer`).

    Returns:
        ``(result, report)``: the summary row and the scene's report dict.

    Raises:
        InputError, ModelError, StorageError, SRError: as the pipeline stages do; no manifest is
            written then, so the scene is tried again by the next run (resuming its tiles).

    A scene that another run holds, or that another run published meanwhile, is a ``skipped``
    row saying so (no report).
    """
    scene, paths = plan.scene, plan.paths
    if not storage.is_s3(paths.folder):
        os.makedirs(paths.folder, exist_ok=True)
    started = time.time()
    output = output_for(paths, scene.uri)
    job = replace(cfg, src=scene.uri, dst=output, report=paths.report_json, progress=False,
                  scratch_dir=scratch_dir or cfg.scratch_dir, input_fingerprint=scene.fingerprint)

    def stac(run: Run) -> dict[str, tuple[str, str]]:
        # STAC items describe georeferenced outputs only; a medical output's lineage is in its
        # manifest and its physical geometry (spacing, affine, MPP) in its report
        if run.written["format"] != "cog" or not run.scene.crs:
            return {}
        return {"stac": (paths.stac, json.dumps(stac_item(run, scene, paths), indent=2) + "\n")}

    try:
        run = run_upscale(job, on_progress, extra=stac,
                          manifest_extra={"scene_id": scene.scene_id})
    except BusyError as exc:
        return SceneResult(scene_id=scene.scene_id, uri=scene.uri, status="skipped",
                           reason=str(exc), cog=paths.cog), {}
    if run.up_to_date is not None:
        return skipped_result(replace(plan, reason="up to date (published by another run)")), {}
    rep = run.published["report"]
    fmt = run.published["format"]
    stac = paths.stac if fmt == "cog" and run.scene.crs else None
    finished = time.time()
    out_px = rep["output"]["width"] * rep["output"]["height"]
    result = SceneResult(
        scene_id=scene.scene_id, uri=scene.uri, status="done", processed_because=plan.reason,
        cog=output if fmt == "cog" else None, report=paths.report_json, stac=stac,
        output=output, format=fmt,
        seconds=round(finished - started, 3), started=started, finished=finished,
        output_mp_per_s=out_px / max(finished - started, 1e-9) / 1e6, quality=_quality(rep))
    return result, rep


def run_scene(plan: ScenePlan, cfg: UpscaleConfig, model: ModelInfo,
              scratch_dir: str | None = None,
              on_progress: Callable[[int, int, int], None] | None = None
              ) -> tuple[SceneResult, dict, Exception | None]:
    """:func:`process_scene`, a failure included: a scene that raises becomes its ``failed`` row
    (:func:`failed_result`, with the seconds it ran), so one scene never stops the others.

    Returns:
        ``(result, report, error)``: ``error`` is what a failed scene raised (``None`` when it
        did not), for the caller to log: one line for a user's mistake
        (:data:`sr_core.errors.USER_ERRORS`), the traceback for anything else.

    Raises:
        Nothing but ``BaseException``s that are not ``Exception``s (an interrupt, a
        cancellation), which stop the run.
    """
    started = time.time()
    try:
        result, rep = process_scene(plan, cfg, model, scratch_dir, on_progress)
    except Exception as exc:  # noqa: BLE001 - the row says why; the caller logs it
        return failed_result(plan, exc, started), {}, exc
    return result, rep, None


def failed_result(plan: ScenePlan, exc: BaseException, started: float | None = None
                  ) -> SceneResult:
    """The summary row of a scene that failed: its reason is the error's first line; its
    seconds run from ``started`` (UNIX time) to now (0 without ``started``: a scene refused at
    planning, on which nothing ran)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, SRError):
        text = f"{type(exc).__name__}: {text}"
    now = time.time()
    return SceneResult(scene_id=plan.scene.scene_id, uri=plan.scene.uri, status="failed",
                       reason=text, started=started, finished=now,
                       seconds=round(now - started, 3) if started else 0.0)


def skipped_result(plan: ScenePlan) -> SceneResult:
    """The summary row of a scene whose output is up to date."""
    return SceneResult(scene_id=plan.scene.scene_id, uri=plan.scene.uri, status="skipped",
                       reason=plan.reason, report=plan.paths.report_json,
                       cog=plan.outputs.get("cog", plan.paths.cog),
                       stac=plan.outputs.get("stac", plan.paths.stac),
                       output=plan.outputs.get("output", plan.paths.cog),
                       format=plan.outputs.get("format", "cog"))


@contextmanager
def shared_cluster(address: str | None, workers: int | None, scratch: str, *, gpu: bool = False,
                   dask_cuda: bool = False) -> Iterator[str]:
    """The one Dask cluster an archive run shares between its scenes.

    Args:
        address: an existing scheduler (checked here once); ``None`` starts a cluster for the run.
        workers: worker processes of a ``LocalCluster`` (default 1).
        scratch: the workers' local directory.
        gpu: declare the Dask resource ``GPU=1`` on every local worker (tile tasks then ask for
            it; see :attr:`sr_core.pipeline.UpscaleConfig.resources`).
        dask_cuda: start ``dask_cuda.LocalCUDACluster`` (one worker per visible GPU, each with
            ``GPU=1``) instead of a ``LocalCluster``.

    Yields:
        The scheduler address.

    Raises:
        SRError: the scheduler cannot be reached, or dask-cuda is asked for but not installed.
    """
    if dask_cuda and not address:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise SRError("dask_cuda: dask-cuda is not installed (pip install "
                          "'sr-pipeline[gpu]')") from None
        from distributed import Client

        with LocalCUDACluster(resources={"GPU": 1}, dashboard_address=":0",
                              local_directory=scratch) as cluster, Client(cluster) as client:
            yield client.scheduler.address
        return
    with dask_client(address, workers, scratch, {"GPU": 1} if gpu else None) as client:
        yield client.scheduler.address


# ---------------------------------------------------------------------------------- summary


def summarize(results: list[SceneResult], *, source: str, output_prefix: str, model: ModelInfo,
              cfg: UpscaleConfig, run_id: str | None = None, seconds: float | None = None
              ) -> dict:
    """The archive run's summary: counts, a one-line message and every scene's row."""
    counts = {k: sum(r.status == k for r in results) for k in ("done", "skipped", "failed")}
    if counts["done"] == 0 and counts["failed"] == 0:
        message = f"nothing to do: all {counts['skipped']} scenes are up to date"
    else:
        message = (f"{counts['done']} processed, {counts['skipped']} up to date (skipped), "
                   f"{counts['failed']} failed")
        if counts["failed"]:
            message += ": " + ", ".join(r.scene_id for r in results if r.status == "failed")
    return {
        "source": source, "output_prefix": output_prefix, "run_id": run_id,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model.descriptor.name, "weights_sha256": weights_sha256(model),
        "parameters": output_parameters(cfg, model), "seconds": seconds,
        "scenes": len(results), **counts, "message": message,
        "results": [r.to_dict() for r in results],
    }


def summary_table(summary: dict) -> list[dict]:
    """The summary as table rows (the Prefect table artifact): scene, status, seconds, output
    MP/s, Wald PSNR/SSIM, gain over bicubic (bicubic and area degradations), LR consistency,
    reason (skipped and failed scenes; empty for processed ones)."""
    rows = []
    for r in summary["results"]:
        q = r.get("quality") or {}
        mps = r.get("output_mp_per_s")
        rows.append({"scene": r["scene_id"], "status": r["status"], "time (s)": r["seconds"],
                     "output MP/s": round(mps, 3) if mps else None,
                     "Wald PSNR (dB)": q.get("wald_psnr_db"), "Wald SSIM": q.get("wald_ssim"),
                     "gain vs bicubic (dB)": q.get("gain_db"),
                     "gain, area degradation (dB)": q.get("gain_area_db"),
                     "LR consistency (dB)": q.get("lr_consistency_psnr_db"),
                     "reason": r.get("reason")})
    return rows


def archive_pages(summary: dict, reports: dict[str, dict]) -> dict[str, str]:
    """The archive-level HTML page (:func:`sr_core.reports.html_report.build_archive_html`) of this run:
    the scenes processed in it (linking to each scene's HTML report beside its JSON report) and
    the ones that failed; up-to-date scenes were not reprocessed and are not on the page.

    Args:
        summary: :func:`summarize`'s result.
        reports: scene id -> report dict of the scenes processed in this run.

    Returns:
        ``{"archive-report.html": HTML}`` (relative name -> text), or ``{}`` when the run
        processed and failed nothing.
    """
    from sr_core.reports.html_report import build_archive_html

    prefix = summary["output_prefix"].rstrip("/") + "/"
    entries, links = [], []
    for r in summary["results"]:
        if r["status"] == "done" and r["scene_id"] in reports:
            rep = reports[r["scene_id"]]
            entries.append(rep)
            html = r["report"][:-len(".json")] + ".html" if r["report"].endswith(".json") else None
            ok = html and "report_html_error" not in rep and html.startswith(prefix)
            links.append(html[len(prefix):] if ok else None)
        elif r["status"] == "failed":
            entries.append({"status": "failed", "input": {"name": r["uri"]}, "error": r["reason"]})
            links.append(None)
    if not entries:
        return {}
    return {"archive-report.html": build_archive_html(
        entries, links, title=f"sr-pipeline archive run: {summary['source']}",
        created=summary["created"])}


def publish_summary(summary: dict, reports: dict[str, dict], output_prefix: str,
                    scratch_dir: str | None = None) -> dict[str, str]:
    """Write the JSON summary next to the outputs (``archive-summary.json``, the latest run, and
    ``_runs/<UTC time>-<run id>.summary.json``) and the archive HTML page of
    :func:`archive_pages` (``archive-report.html``). A page that cannot be made costs only
    itself: ``archive_html_error`` in the summary says why.

    Returns:
        name -> location of every file written.

    Raises:
        StorageError: the output location cannot be written.
    """
    prefix = output_prefix.rstrip("/")
    stamp = summary["created"].replace(":", "").replace("-", "")
    rid = (summary.get("run_id") or "local")[:8]
    try:
        pages = archive_pages(summary, reports)
    except Exception as exc:  # noqa: BLE001 - the JSON summary must not be lost with the page
        log.warning("archive HTML report failed: %s: %s", type(exc).__name__, exc)
        summary = {**summary, "archive_html_error": f"{type(exc).__name__}: {exc}"}
        pages = {}
    files = {"archive-summary.json": json.dumps(summary, indent=2) + "\n"}
    files[f"_runs/{stamp}-{rid}.summary.json"] = files["archive-summary.json"]
    files.update(pages)
    written = {}
    with tempfile.TemporaryDirectory(prefix="sr-archive-", dir=scratch_dir) as tmp:
        for name, text in files.items():
            uri = f"{prefix}/{name}"
            if not storage.is_s3(uri):
                os.makedirs(os.path.dirname(uri), exist_ok=True)
            storage.write_text(uri, text, tmp)
            written[name] = uri
    return written
