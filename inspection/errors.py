"""Errors of the inspection package (imagery, change detection, candidates).

One root, :class:`InspectionError`; the CLI and service map it to one-line messages and HTTP codes.
A rejected photo in a batch is not an exception: quality checks return a reason per photo, so one bad
frame never stops the others.
"""


class InspectionError(Exception):
    """Root of every error the inspection package raises on purpose."""


class ImageError(InspectionError):
    """Not a readable image: truncated, not an image at all, too many pixels (decompression bomb)."""


class MetadataError(InspectionError):
    """Image metadata (EXIF GPS, DJI XMP) that is missing or impossible."""


class RasterError(InspectionError):
    """An orthomosaic that cannot be used: unreadable, no CRS, no overlap with the other survey."""


class DetectorError(InspectionError):
    """Unknown detector name or inputs a detector cannot compare (different sizes, not RGB)."""


class WorkflowError(InspectionError):
    """A case transition that the case's state or the actor's role does not allow."""


class TaxonomyError(InspectionError):
    """A category file that is malformed, or an unknown category code."""
