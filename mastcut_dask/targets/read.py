"""Whole target lists: CSV/Parquet files, astropy Tables, DataFrames or dicts → `Target`
records, each bad row → an `InvalidRow` with a reason that names the row and what to fix."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping

import fsspec
import numpy as np
import pandas as pd
from astropy import units as u
from astropy.table import Table

from ..exceptions import InputWarning, InvalidQueryError
from .position import parse_coordinates
from .size import CutoutSize, is_plain_number, parse_size
from .target import Target, check_survey_name, is_safe_name, make_target_id

__all__ = ["TARGET_COLUMNS", "InvalidRow", "TargetList", "read_targets"]

log = logging.getLogger(__name__)

#: Column names a target list may have (case-insensitive; surrounding spaces ignored).
TARGET_COLUMNS = ("id", "name", "ra", "dec", "size", "sector", "survey", "moving", "mt_type")
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n", ""}
_MT_TYPES = {"majorbody": "majorbody", "smallbody": "smallbody"}
_SIZE_PAIR = re.compile(r"^\s*\(?\s*([-+]?[\d.eE+-]+)\s*[,x×\s]\s*([-+]?[\d.eE+-]+)\s*\)?\s*$")


@dataclass(frozen=True)
class InvalidRow:
    """A row of a target list that cannot be used, and why.

    Attributes
    ----------
    row : int
        1-based position among the data rows (for a CSV file the reason also names the line).
    target_id : str
        The row's id when one could be made, else ``"row_<n>"``; goes into the manifest.
    reason : str
        What is wrong and what to fix, naming the row.
    """

    row: int
    target_id: str
    reason: str


@dataclass(frozen=True)
class TargetList:
    """What `read_targets` returns: the usable targets and the rows that are not.

    Attributes
    ----------
    targets : tuple of Target
        Valid, de-duplicated targets in input order.
    invalid : tuple of InvalidRow
        One entry per bad row; each becomes a manifest row with status ``invalid``.
    given : tuple of frozenset of str
        For each target, the optional fields its row set (``size``, ``sector``, ``survey``),
        so that `with_defaults` fills in only the others.
    """

    targets: tuple[Target, ...] = ()
    invalid: tuple[InvalidRow, ...] = ()
    given: tuple[frozenset, ...] = ()

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self):
        return iter(self.targets)

    def with_defaults(self, *, size: Any = None, sector: int | None = None,
                      survey: str | None = None, units: str | None = None) -> "TargetList":
        """The call's values for every field a row left empty (per-row values win).

        Parameters
        ----------
        size : optional
            Any size `parse_size` accepts; None keeps the rows' (default 5 × 5 pixels).
        sector : int, optional
        survey : str, optional
        units : str, optional
            Unit of a plain-number ``size``.

        Raises
        ------
        InvalidQueryError
            A bad call-level value: it would make every row bad, so fail before any request.
        """
        changes: dict[str, Any] = {}
        if size is not None:
            # No pixel limit here: it depends on the service (`services.check_size`).
            changes["size"] = parse_size(size, units=units, pixel_arcsec=None, max_pixels=math.inf)
        if sector is not None:
            changes["sector"] = _parse_sector(sector)
        if survey is not None:
            changes["survey"] = _parse_survey(survey)
        if not changes:
            return self
        given = self.given or tuple(frozenset() for _ in self.targets)
        targets = tuple(
            replace(t, **{k: v for k, v in changes.items() if k not in g}) for t, g in zip(self.targets, given)
        )
        return TargetList(targets, self.invalid, given)


def _missing(value: Any) -> bool:
    if value is None or value is np.ma.masked:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def _parse_sector(value: Any) -> int:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number) or int(number) < 1:
        raise InvalidQueryError(f"sector {value!r} must be a positive whole number (leave it empty for all sectors)")
    return int(number)


def _parse_survey(value: Any) -> str:
    text = str(value).strip()
    if not check_survey_name(text):
        raise InvalidQueryError(f"survey {value!r} is not a survey name such as 'candels_gn_30mas'")
    return text


def _parse_bool(value: Any, column: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _missing(value):
        return False
    text = str(value).strip().lower()
    if text in ("1.0", "0.0"):
        text = text[0]
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidQueryError(f"{column} {value!r} must be true or false")


def _parse_mt_type(value: Any) -> str:
    key = re.sub(r"[\s_\-]", "", str(value).strip().lower())
    if key not in _MT_TYPES:
        raise InvalidQueryError(f"mt_type {value!r} must be 'majorbody' or 'smallbody' (or empty)")
    return _MT_TYPES[key]


def _parse_row_size(value: Any) -> CutoutSize:
    if isinstance(value, str):
        text = value.strip()
        m = _SIZE_PAIR.match(text)
        try:
            if m:  # "ny,nx" or "ny x nx", in pixels, astroquery's order
                value = [_number(m.group(1)), _number(m.group(2))]
            else:
                try:
                    value = _number(text)
                except ValueError:
                    value = u.Quantity(text)
        except (ValueError, TypeError):
            raise InvalidQueryError(
                f"size {text!r} is not a number of pixels, a pair 'ny,nx' or a quantity such as '30 arcsec'"
            ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # a 3-element size in a file is a typo, not a wish
        try:
            return parse_size(value, pixel_arcsec=None, max_pixels=math.inf)  # limit: per service
        except InputWarning as warn:
            raise InvalidQueryError(f"size {value!r}: {warn}") from None


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a numeric TIC ID read as float by a table library
    return str(value).strip()


def _coordinate(value: Any, column: str) -> float:
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise InvalidQueryError(f"{column} {value!r} is not a number of degrees") from None
    if is_plain_number(value):
        return float(value)
    raise InvalidQueryError(f"{column} {value!r} is not a number of degrees")


def _row_to_target(record: Mapping[str, Any]) -> tuple[Target, frozenset]:
    """One normalised record → Target, or InvalidQueryError with what is wrong (no row number)."""
    get = {k: (None if _missing(v) else v) for k, v in record.items()}
    name = _text(get["name"]) if get.get("name") is not None else None
    moving = _parse_bool(get.get("moving"), "moving")
    mt_type = _parse_mt_type(get["mt_type"]) if get.get("mt_type") is not None else None
    ra_raw, dec_raw = get.get("ra"), get.get("dec")
    ra = dec = None
    if moving:
        if not name:
            raise InvalidQueryError("a moving target needs its name (e.g. 'Eleonora') in the name column")
        if ra_raw is not None or dec_raw is not None:
            raise InvalidQueryError("a moving target takes a name only: clear ra and dec")
    else:
        if mt_type is not None:
            raise InvalidQueryError("mt_type applies to moving targets only: set moving to true or clear mt_type")
        if (ra_raw is None) != (dec_raw is None):
            raise InvalidQueryError("give both ra and dec, or neither (then the name is resolved)")
        if ra_raw is not None:
            ra, dec = parse_coordinates((_coordinate(ra_raw, "ra"), _coordinate(dec_raw, "dec")), warn=False)
        elif not name:
            raise InvalidQueryError("no target: give a name (or 'TIC n') or both ra and dec in degrees")
    given = set()
    fields_: dict[str, Any] = {}
    if get.get("size") is not None:
        fields_["size"] = _parse_row_size(get["size"])
        given.add("size")
    if get.get("sector") is not None:
        fields_["sector"] = _parse_sector(get["sector"])
        given.add("sector")
    if get.get("survey") is not None:
        fields_["survey"] = _parse_survey(get["survey"])
        given.add("survey")
    if get.get("id") is not None:
        target_id = _text(get["id"])
        if not is_safe_name(target_id):
            raise InvalidQueryError(
                f"id {target_id!r} cannot name files and zarr groups: use letters, digits, '.', '_', '+', '-', "
                "starting with a letter or digit"
            )
    else:
        try:
            target_id = make_target_id(name, ra, dec)
        except InvalidQueryError:  # a name of punctuation only, and no position
            target_id = ""
        if not is_safe_name(target_id):
            raise InvalidQueryError(f"cannot make an id from name {name!r}: add an id column")
    target = Target(target_id=target_id, name=name or None, ra=ra, dec=dec, moving=moving,
                    mt_type=mt_type, **fields_)
    return target, frozenset(given)


@dataclass(frozen=True)
class _BadRecord:
    """A record that could not even be split into columns (e.g. a CSV line with extra fields)."""

    reason: str


def _records(src: Any, storage_options: Mapping[str, Any] | None) -> tuple[list[Any], list[int | None]]:
    """The input as a list of plain dicts (or `_BadRecord`), and each one's file line (or None)."""
    if isinstance(src, (str, os.PathLike)):
        return _read_file(os.fspath(src), storage_options)
    if isinstance(src, pd.DataFrame):
        rows = [dict(r) for r in src.to_dict(orient="records")]
        return rows, [None] * len(rows)
    if isinstance(src, Table):
        rows = []
        for row in src:
            rows.append({name: (None if np.ma.is_masked(row[name]) else _scalar(row[name])) for name in src.colnames})
        return rows, [None] * len(rows)
    if isinstance(src, Mapping):
        raise InvalidQueryError("read_targets takes a list of dicts (one per target), not a single dict")
    try:
        items = list(src)
    except TypeError:
        raise InvalidQueryError(
            f"read_targets cannot read a {type(src).__name__}: give a CSV or Parquet path/URL, an astropy Table, "
            "a pandas DataFrame or a list of dicts"
        ) from None
    return items, [None] * len(items)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _read_file(path: str, storage_options: Mapping[str, Any] | None) -> tuple[list[Any], list[int | None]]:
    lower = re.sub(r"\.(gz|bz2|xz|zst)$", "", path.lower())  # targets.csv.gz reads as targets.csv
    is_parquet = lower.endswith((".parquet", ".pq", ".parq"))
    try:
        with fsspec.open(path, "rb", compression=None if is_parquet else "infer",
                         **dict(storage_options or {})) as fh:
            if is_parquet:
                rows = [dict(r) for r in pd.read_parquet(fh).to_dict(orient="records")]
                return rows, [None] * len(rows)
            raw = fh.read()
    except FileNotFoundError:
        raise InvalidQueryError(f"target list {path!r} does not exist") from None
    except (ValueError, OSError, ImportError) as err:
        kind = "Parquet" if is_parquet else "CSV"
        raise InvalidQueryError(f"cannot read {path!r} as a {kind} target list: {err}") from None
    return _parse_csv(raw, lower)


def _parse_csv(raw: bytes, path: str) -> tuple[list[Any], list[int | None]]:
    """CSV text → records, all values as text (ids like "007" and TIC numbers must not become
    floats); a line with the wrong number of fields is one bad record, not a failed file."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidQueryError(f"cannot read {path!r} as a CSV target list: not UTF-8 text ({err})") from None
    dialect = "excel-tab" if path.lower().endswith(".tsv") else "excel"
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect, skipinitialspace=True)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as err:
        raise InvalidQueryError(f"cannot read {path!r} as a CSV target list: {err}") from None
    header = [h.strip() for h in header]
    records: list[Any] = []
    lines: list[int | None] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            records.append(_BadRecord(f"is not valid CSV ({err})"))
            lines.append(reader.line_num)
            continue
        if not fields:  # a blank line is not a row
            continue
        if len(fields) != len(header):
            records.append(_BadRecord(f"has {len(fields)} fields but the header has {len(header)}; "
                                      "quote values that contain commas"))
        else:
            records.append(dict(zip(header, fields)))
        lines.append(reader.line_num)
    return records, lines


def read_targets(src: Any, *, storage_options: Mapping[str, Any] | None = None) -> TargetList:
    """Read a target list; bad rows are reported, never fatal to the others.

    Parameters
    ----------
    src : str, path, astropy Table, pandas DataFrame, list of dict, or TargetList
        A CSV or Parquet file (local path or fsspec URL; Parquet by its ``.parquet``/``.pq``
        suffix), or the rows themselves. Columns (case-insensitive):

        - ``name``: object name or ``"TIC n"`` (resolved later), or a moving target's name;
        - ``ra``, ``dec``: ICRS degrees (instead of, or as well as, a name);
        - optional ``id`` (else made from the name, or from ra/dec), ``size`` (pixels,
          ``"ny,nx"``, or a quantity such as ``"30 arcsec"``), ``sector``, ``survey``,
          ``moving`` (true/false) and ``mt_type`` (``majorbody``/``smallbody``).

        Other columns are ignored (logged). A TargetList is returned as it is.
    storage_options : dict, optional
        fsspec options when ``src`` is a URL.

    Returns
    -------
    TargetList
        ``.targets`` (Target records) and ``.invalid`` (InvalidRow: row number, id, reason).
        Use `TargetList.with_defaults` to apply a call's size/sector/survey to rows without them.

    Raises
    ------
    InvalidQueryError
        When the input as a whole is unusable: unreadable file, unknown type, or no ``name``
        and no ``ra``/``dec`` columns at all.

    Notes
    -----
    Duplicate ids: a row that repeats an earlier one exactly is dropped (logged); a row
    whose id is already used by a *different* target is invalid, with a reason that names
    the first row, because two targets cannot share files and zarr groups.
    """
    if isinstance(src, TargetList):
        return src
    records, lines = _records(src, storage_options)
    columns: set[str] = set()
    normalised: list[Any] = []
    for record in records:
        if isinstance(record, (Target, _BadRecord)):
            normalised.append(record)
            continue
        if not isinstance(record, Mapping):
            normalised.append(None)
            continue
        row = {}
        for key, value in record.items():
            column = str(key).strip().lower()
            if column in TARGET_COLUMNS:
                row[column] = value
            columns.add(column)
        normalised.append(row)
    if records and columns and "name" not in columns and not {"ra", "dec"} <= columns:
        raise InvalidQueryError(
            f"the target list has neither a 'name' column nor 'ra' and 'dec' columns (it has: "
            f"{', '.join(sorted(columns))})"
        )
    unknown = sorted(columns - set(TARGET_COLUMNS))
    if unknown:
        log.info("target list: ignoring columns %s", ", ".join(unknown))

    targets: list[Target] = []
    given: list[frozenset] = []
    invalid: list[InvalidRow] = []
    first_row: dict[str, tuple[int, Target]] = {}
    for index, record in enumerate(normalised, start=1):
        where = f"row {index}" + (f" (line {lines[index - 1]})" if lines[index - 1] else "")
        try:
            if record is None:
                raise InvalidQueryError("is not a mapping of column names to values")
            if isinstance(record, _BadRecord):
                raise InvalidQueryError(record.reason)
            if isinstance(record, Target):
                target, row_given = record, frozenset({"size", "sector", "survey"})
            else:
                for column in TARGET_COLUMNS:
                    record.setdefault(column, None)
                target, row_given = _row_to_target(record)
        except InvalidQueryError as err:
            fallback = _fallback_id(record, index)
            invalid.append(InvalidRow(index, fallback, f"{where}: {err.message or err}"))
            continue
        previous = first_row.get(target.target_id)
        if previous is not None:
            if previous[1] == target:
                log.info("target list %s repeats row %d (%s); dropped", where, previous[0], target.target_id)
                continue
            invalid.append(InvalidRow(index, f"row_{index}", (
                f"{where}: id {target.target_id!r} is already used by row {previous[0]} for a different "
                "request; give this row its own id (id column) or merge the two rows")))
            continue
        first_row[target.target_id] = (index, target)
        targets.append(target)
        given.append(row_given)
    # An invalid row must not share a manifest id with a valid target (its row would shadow it),
    # nor with an earlier invalid row (only the later of the two would stay on record).
    taken = set(first_row)
    unique = []
    for bad in invalid:
        if bad.target_id in taken:
            bad = replace(bad, target_id=f"row_{bad.row}")
        taken.add(bad.target_id)
        unique.append(bad)
    invalid = unique
    if invalid:
        log.warning("target list: %d of %d rows are invalid", len(invalid), len(normalised))
    return TargetList(tuple(targets), tuple(invalid), tuple(given))


def _fallback_id(record: Any, index: int) -> str:
    """An id for an invalid row's manifest entry: its own id or name when usable, else ``row_<n>``."""
    if isinstance(record, Mapping):
        for column in ("id", "name"):
            value = record.get(column)
            if value is not None and not _missing(value):
                text = _text(value)
                try:
                    candidate = text if column == "id" else make_target_id(text)
                except InvalidQueryError:
                    continue
                if is_safe_name(candidate):
                    return candidate
    return f"row_{index}"
