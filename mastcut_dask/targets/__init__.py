"""User input → `Target` records: sizes, sky positions, names and whole target lists.

Nothing here touches the network; names are resolved later, by the services.
"""

from .position import parse_coordinates, parse_radius
from .read import TARGET_COLUMNS, InvalidRow, TargetList, read_targets
from .size import MAX_CUTOUT_PIXELS, TESS_PIXEL_ARCSEC, CutoutSize, check_pixels, parse_size
from .target import Target, check_name, check_survey_name, is_safe_name, make_target_id

__all__ = [
    "CutoutSize", "parse_size", "check_pixels", "TESS_PIXEL_ARCSEC", "MAX_CUTOUT_PIXELS",
    "parse_coordinates", "parse_radius",
    "Target", "make_target_id", "check_name", "is_safe_name", "check_survey_name",
    "TARGET_COLUMNS", "InvalidRow", "TargetList", "read_targets",
]
