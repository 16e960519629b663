"""Exception hierarchy.

One root, :class:`SRError`; each subclass also inherits the matching built-in so callers can catch
either (the rasterio pattern: ``class RasterioIOError(RasterioError, OSError)``).

Every message is one line that names the file (or option) and says what is wrong, so the CLI can
print it as it is and exit with status 2.
"""

from __future__ import annotations

import os


class SRError(Exception):
    """Root of every error sr_core raises on purpose."""


class InputError(SRError, ValueError):
    """The input scene (or a user-given option) is unusable: empty, truncated, not a raster,
    unsupported dtype, nonsensical scale or tile size."""


class ModelError(SRError, ValueError):
    """A model name, weights file or model card is unknown, malformed or unsafe to load."""


#: A user's mistake (an unusable input, option or model): reported in one line that names the
#: file and the problem, never with a traceback (CLI exit status 2; a failed scene in a flow).
USER_ERRORS = (InputError, ModelError)


class StorageError(SRError, OSError):
    """Reading from or writing to local disk or S3 failed (missing object, no permission,
    endpoint unreachable)."""


class BusyError(SRError):
    """Another run holds this job (same input, model and parameters) or published the same
    destination first; this run did nothing at the destination (CLI exit status 75)."""


class NoSpaceError(StorageError):
    """The scratch file system is full (ENOSPC while staging the scene or writing tiles). The
    run's work directory is deleted rather than kept for a resume, which would keep the disk full;
    free space or choose another ``--scratch-dir`` / ``SR_SCRATCH``."""

    @classmethod
    def for_scratch(cls, scratch: str) -> NoSpaceError:
        """The one-line error of a full scratch file system under ``scratch`` (the run's scratch
        directory: the message names its parent)."""
        return cls(f"{os.path.dirname(scratch) or scratch}: no space left on device for the "
                   "run's scratch files (free space or choose another --scratch-dir / "
                   "SR_SCRATCH)")


class SchedulerLostError(SRError):
    """The client lost its connection to the Dask scheduler while tiles ran (the scheduler died
    or the network failed); completed tiles are recorded, so running again resumes."""
