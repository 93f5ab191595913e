"""Errors of the spatial core.

One root, :class:`GridmapError`; the service maps each subclass to an HTTP code in one place and the CLI
prints ``str(error)`` as a one-line message. Messages name the problem and, where it helps, the fix.
"""


class GridmapError(Exception):
    """Root of every error the spatial core raises on purpose."""


class InputError(GridmapError):
    """Input that cannot be used as given: malformed file, bad value, missing field."""


class CRSError(InputError):
    """Unknown, missing or contradictory coordinate reference system."""


class CodeError(InputError):
    """A unit code that is malformed, duplicated or inconsistent with its parent."""


class GeometryError(InputError):
    """A geometry that is invalid, empty, of the wrong type or has impossible coordinates."""


class TooLargeError(InputError):
    """Input over a configured size limit (bytes, features or vertices)."""
