"""Exception hierarchy.

One root, :class:`SRError`; each subclass also inherits the matching built-in so callers can catch
either (the rasterio pattern: ``class RasterioIOError(RasterioError, OSError)``).

Every message is one line that names the file (or option) and says what is wrong, so the CLI can
print it as it is and exit with status 2.
"""


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
