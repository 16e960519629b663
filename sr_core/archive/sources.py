"""Archive sources: list an archive's scenes (:func:`list_scenes`) from an S3 prefix with a glob, a
local folder or glob, or a STAC ItemCollection / Catalog / Collection / Item, and group DICOM
series folders into one scene each (:func:`group_series`). Nothing here writes.

Owns :class:`SceneRef`, the glob helpers (:func:`split_glob`, :func:`glob_regex`), the listing
of each kind of source and the refusal of locations nothing may be fetched from. May import
:mod:`sr_core.errors`, :mod:`sr_core.storage`, :mod:`sr_core.formats` and
:mod:`sr_core.publication` (the fingerprints); nothing above them, nor the archive's other modules.
"""

from __future__ import annotations

import glob
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sr_core import storage
from sr_core.errors import InputError
from sr_core.publication import manifest
from sr_core.storage.security import check_source

#: Glob used for a local folder given without one.
DEFAULT_GLOB = "**/*.tif"
_GLOB_CHARS = re.compile(r"[*?\[]")


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
    """The first ``n`` bytes of a local file or S3 object (a ranged read of its store).

    Raises:
        StorageError: S3 unreachable or access denied, or the file cannot be read.
    """
    return storage.store_for(uri).read(uri, max_bytes=n).data


def _is_dicom(scene: SceneRef) -> bool:
    uri = scene.uri
    if uri.lower().endswith(NOT_DICOM_EXTS) or scene.fingerprint.get("size", 1) < 132:
        return False  # (an empty object would answer a ranged GET with an error)
    from sr_core.formats import format_for_head

    fmt = format_for_head(_head_bytes(uri, 132))
    return fmt is not None and fmt.folder_is_series


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
        raise InputError(f"{source}: give a glob after the prefix, "
                         f"e.g. {source.rstrip('/')}/**/*.tif")
    rx = glob_regex(pattern)
    storage.parse_s3(root + "x")  # a valid bucket name
    scenes = []
    for obj in storage.store_for(root).list(root):
        rel = obj.uri[len(root):]
        if rx.match(rel):
            scenes.append(SceneRef(uri=obj.uri, scene_id=_scene_id(rel),
                                   fingerprint={"etag": obj.version.strip('"'), "size": obj.size}))
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
            if not isinstance(cat, pystac.Catalog):  # a Collection is a Catalog
                raise InputError(f"{source}: not a STAC Catalog or Collection")
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
