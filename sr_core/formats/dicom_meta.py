"""What the DICOM reader and writer share: the writer's metadata (:class:`DicomMeta`, no patient
data), the tags the writer changes, attribute lookup in enhanced multi-frame functional groups,
and the context that keeps pydicom quiet. See :mod:`sr_core.formats.dicom` for the format.

May import: nothing of ``sr_core``; pydicom's logger by name only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Spacing attributes divided by the scale (row spacing \\ column spacing, mm).
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
#: Attributes that describe the input's pixel values and would be wrong for the output.
DROPPED_TAGS = ("SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries")


@dataclass(frozen=True)
class DicomMeta:
    """What the writer needs (no patient data).

    Attributes:
        files: instance files in plane order.
        frames: frames per instance; samples: samples per pixel.
        bits_stored: Bits Stored; signed: Pixel Representation 1.
        photometric: Photometric Interpretation of the decoded pixels.
    """

    files: tuple[str, ...]
    frames: int
    samples: int
    bits_stored: int
    signed: bool
    photometric: str

    @property
    def instances(self) -> int:
        return len(self.files)

    def value_range(self) -> tuple[int, int]:
        """The stored values Bits Stored and Pixel Representation allow."""
        b = self.bits_stored
        return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if self.signed else (0, (1 << b) - 1)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records while it reads or writes: its validation
    messages quote element values (``Invalid value for VR DA: '...'``), which may be patient
    data, and stray warnings would break the CLI's one-line errors."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _attr(ds, group: str, tag: str):
    """``tag`` of the dataset, else of its enhanced multi-frame functional groups: the
    ``group`` macro (e.g. ``PixelMeasuresSequence``) of the Shared Functional Groups Sequence,
    else of the first frame's Per-frame Functional Groups item (DICOM PS3.3 C.7.6.16)."""
    if ds.get(tag) not in (None, ""):
        return ds.get(tag)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(seq) or []
        for item in items[:1]:
            for macro in item.get(group) or []:
                if macro.get(tag) not in (None, ""):
                    return macro.get(tag)
    return None


def _snake(tag: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(tag))
