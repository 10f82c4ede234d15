"""read_targets: every input form, per-row values, bad rows reported without stopping the others."""

from __future__ import annotations

import pandas as pd
import pytest
from astropy.table import MaskedColumn, Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mastcut_dask as mc
from mastcut_dask.exceptions import InvalidQueryError
from mastcut_dask.targets.read import InvalidRow, TargetList, read_targets
from mastcut_dask.targets.size import CutoutSize
from mastcut_dask.targets.target import Target

# A mixed list: names, TIC IDs, coordinates, a moving target, per-row options, and bad rows.
CSV_TEXT = """\
id,name,ra,dec,size,sector,survey,moving,mt_type,comment
,TIC 307210830,,,,,,,,a TIC ID
,NGC 1234,,,10,8,,,,a name with per-row size and sector
,,135.1408,-5.1915,"3,7",,,,,coordinates; size as ny and nx
m31_core,M31,10.6847,41.2690,,,goods_north,,,explicit id and survey
,Eleonora,,,,6,,true,smallbody,moving target
,,200.0,95.0,,,,,,dec out of range
,Nothing,,,abc,,,,,bad size
,,,,,,,,,empty row
,TIC 1,,,,0,,,,sector zero
007,TIC 2,,,,,,,,id that looks like a number
"""


def check_mixed(tl: TargetList, *, line_numbers: bool):
    ids = [t.target_id for t in tl.targets]
    assert ids == ["tic_307210830", "ngc_1234", "ra135.140800_dec-5.191500", "m31_core", "eleonora", "007"]
    by_id = {t.target_id: t for t in tl.targets}
    assert by_id["tic_307210830"] == Target("tic_307210830", name="TIC 307210830")
    assert by_id["ngc_1234"].size == CutoutSize(10, 10, "px") and by_id["ngc_1234"].sector == 8
    pos = by_id["ra135.140800_dec-5.191500"]
    assert (pos.ra, pos.dec, pos.name) == (135.1408, -5.1915, None)
    assert (pos.size.y, pos.size.x) == (3, 7)
    assert by_id["m31_core"].survey == "goods_north" and by_id["m31_core"].ra == pytest.approx(10.6847)
    mover = by_id["eleonora"]
    assert mover.moving and mover.mt_type == "smallbody" and mover.sector == 6 and mover.ra is None
    assert [bad.row for bad in tl.invalid] == [6, 7, 8, 9]
    reasons = [bad.reason for bad in tl.invalid]
    assert "Declination" in reasons[0]
    assert "size 'abc'" in reasons[1] and "30 arcsec" in reasons[1]
    assert "give a name" in reasons[2]
    assert "sector" in reasons[3] and "positive" in reasons[3]
    if line_numbers:
        assert reasons[0].startswith("row 6 (line 7):")
    else:
        assert reasons[0].startswith("row 6:")
    assert [bad.target_id for bad in tl.invalid] == ["row_6", "nothing", "row_8", "tic_1"]


def test_csv_file(tmp_path):
    path = tmp_path / "targets.csv"
    path.write_text(CSV_TEXT)
    check_mixed(read_targets(str(path)), line_numbers=True)
    check_mixed(mc.read_targets(path), line_numbers=True)  # PathLike, through the public name


def test_compressed_csv_and_tsv(tmp_path):
    import gzip

    (tmp_path / "targets.csv.gz").write_bytes(gzip.compress(CSV_TEXT.encode()))
    check_mixed(read_targets(str(tmp_path / "targets.csv.gz")), line_numbers=True)
    (tmp_path / "targets.tsv").write_text("name\tra\tdec\tsize\nTIC 9\t\t\t3,4\n\t10\t20\t\n")
    tl = read_targets(str(tmp_path / "targets.tsv"))
    assert [t.target_id for t in tl.targets] == ["tic_9", "ra010.000000_dec+20.000000"]
    assert (tl.targets[0].size.y, tl.targets[0].size.x) == (3, 4)


def test_a_malformed_csv_line_is_one_invalid_row(tmp_path):
    path = tmp_path / "targets.csv"
    path.write_text('name,ra,dec\nTIC 1,,\n\nNGC 1, 2,3,4,5\n,"10.5",-3\n')
    tl = read_targets(str(path))
    assert [t.target_id for t in tl.targets] == ["tic_1", "ra010.500000_dec-3.000000"]
    (bad,) = tl.invalid
    assert bad.row == 2 and bad.reason.startswith("row 2 (line 4): has 5 fields but the header has 3")


def test_parquet_file(tmp_path):
    frame = pd.read_csv(pd.io.common.StringIO(CSV_TEXT), dtype={"id": str})
    frame["id"] = frame["id"].where(frame["id"].notna(), None)
    path = tmp_path / "targets.parquet"
    frame.to_parquet(path)
    tl = read_targets(str(path))
    # Parquet keeps types: numbers arrive as floats/NaN, which must read the same way.
    check_mixed(tl, line_numbers=False)


def test_dataframe_and_list_of_dicts():
    frame = pd.read_csv(pd.io.common.StringIO(CSV_TEXT), dtype=str, keep_default_na=False)
    check_mixed(read_targets(frame), line_numbers=False)
    check_mixed(read_targets(frame.to_dict(orient="records")), line_numbers=False)


def test_astropy_table_with_masked_values():
    table = Table()
    table["name"] = MaskedColumn(["TIC 307210830", "", "Eleonora"], mask=[False, True, False])
    table["ra"] = MaskedColumn([0.0, 135.1408, 0.0], mask=[True, False, True])
    table["dec"] = MaskedColumn([0.0, -5.1915, 0.0], mask=[True, False, True])
    table["moving"] = [False, False, True]
    table["SIZE"] = MaskedColumn([0, 9, 0], mask=[True, False, True])  # column names are case-insensitive
    tl = read_targets(table)
    assert [t.target_id for t in tl.targets] == ["tic_307210830", "ra135.140800_dec-5.191500", "eleonora"]
    assert tl.targets[1].size == CutoutSize(9, 9, "px")
    assert tl.targets[2].moving and tl.invalid == ()


def test_duplicates_are_merged_when_equal_and_refused_when_not():
    tl = read_targets([{"name": "TIC 5"}, {"name": "TIC 5"}, {"name": "tic 5", "sector": 3},
                       {"id": "tic_5", "ra": 1, "dec": 2}])
    assert [t.target_id for t in tl.targets] == ["tic_5"]
    assert [bad.row for bad in tl.invalid] == [3, 4]
    assert all("already used by row 1" in bad.reason for bad in tl.invalid)
    # an invalid row never takes the id of a valid target: its manifest row would shadow it
    assert [bad.target_id for bad in tl.invalid] == ["row_3", "row_4"]


@pytest.mark.parametrize("row, fragment", [
    ({"name": "Ceres", "moving": True, "ra": 1.0, "dec": 2.0}, "clear ra and dec"),
    ({"moving": "yes"}, "needs its name"),
    ({"name": "x", "mt_type": "smallbody"}, "moving targets only"),
    ({"name": "x", "moving": "maybe"}, "true or false"),
    ({"name": "Ceres", "moving": 1, "mt_type": "planet"}, "majorbody"),
    ({"ra": 10.0}, "both ra and dec"),
    ({"ra": "ten", "dec": 5}, "ra 'ten'"),
    ({"id": "../etc", "name": "x"}, "cannot name files"),
    ({"id": "a/b", "ra": 1, "dec": 2}, "cannot name files"),
    ({"name": "x", "survey": "../x"}, "survey"),
    ({"name": "x", "sector": "8.5"}, "whole number"),
    ({"name": "x", "size": "1,2,3"}, "size"),
    ({"name": "x", "size": -4}, "positive"),
    ({"name": "x", "size": "3 kg"}, "pixels or angular"),
    ({"name": "***"}, "add an id column"),
])
def test_each_bad_row_gets_a_reason_and_the_others_go_on(row, fragment):
    tl = read_targets([{"name": "TIC 1"}, row, {"ra": 5, "dec": 5}])
    assert len(tl.targets) == 2
    (bad,) = tl.invalid
    assert isinstance(bad, InvalidRow) and bad.row == 2
    assert bad.reason.startswith("row 2: ") and fragment in bad.reason


def test_angular_sizes_and_flags():
    tl = read_targets([{"name": "a", "size": "30 arcsec"}, {"name": "b", "size": 0.01},
                       {"name": "c", "moving": "1.0"}, {"name": "d", "moving": "False"}])
    a, b, c, d = tl.targets
    assert a.size.units == "d" and a.size.x == pytest.approx(30 / 3600)
    assert b.size == CutoutSize(0.01, 0.01, "px")
    assert c.moving and not d.moving


def test_with_defaults_fills_only_what_rows_left_empty():
    tl = read_targets([{"name": "a"}, {"name": "b", "size": 3, "sector": 2}, {"name": "c", "survey": "goods_north"}])
    filled = tl.with_defaults(size=10, sector=8, survey="candels_gn_30mas")
    a, b, c = filled.targets
    assert (a.size, a.sector, a.survey) == (CutoutSize(10, 10, "px"), 8, "candels_gn_30mas")
    assert (b.size, b.sector) == (CutoutSize(3, 3, "px"), 2)
    assert c.survey == "goods_north" and c.sector == 8
    assert tl.with_defaults() is tl
    with pytest.raises(InvalidQueryError):
        tl.with_defaults(size=0)
    assert read_targets(filled) is filled


def test_whole_input_problems_raise(tmp_path):
    with pytest.raises(InvalidQueryError, match="neither a 'name' column"):
        read_targets([{"target": "x", "ra": 1}])
    with pytest.raises(InvalidQueryError, match="does not exist"):
        read_targets(str(tmp_path / "missing.csv"))
    with pytest.raises(InvalidQueryError, match="cannot read"):
        read_targets(42)
    with pytest.raises(InvalidQueryError, match="list of dicts"):
        read_targets({"name": "x"})
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidQueryError, match="Parquet"):
        read_targets(str(bad))


def test_a_non_mapping_item_is_one_bad_row():
    tl = read_targets([{"name": "a"}, "b", {"name": "c"}])
    assert [t.name for t in tl.targets] == ["a", "c"]
    assert tl.invalid[0].row == 2 and "mapping" in tl.invalid[0].reason


def test_empty_inputs(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("name,ra,dec\n")
    assert len(read_targets(str(path))) == 0
    assert read_targets([]).targets == ()


_VALUES = st.one_of(st.none(), st.text(max_size=12), st.integers(-10, 10**10),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"name": _VALUES}, optional={
    "ra": _VALUES, "dec": _VALUES, "id": _VALUES, "size": _VALUES, "sector": _VALUES,
    "survey": _VALUES, "moving": _VALUES, "mt_type": _VALUES}), max_size=8))
def test_any_rows_end_as_targets_or_reasons(rows):
    """Whatever the rows hold, each one ends as a target, a reason, or a dropped exact repeat."""
    import re

    tl = read_targets(rows)
    assert len(tl.targets) + len(tl.invalid) <= len(rows)
    accounted = {bad.row for bad in tl.invalid}
    assert len(accounted) == len(tl.invalid)
    ids = [t.target_id for t in tl.targets]
    assert len(set(ids)) == len(ids)
    for target_id in ids + [bad.target_id for bad in tl.invalid]:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+\-]*", target_id) and ".." not in target_id
    for bad in tl.invalid:
        assert bad.reason.startswith(f"row {bad.row}: ")


def test_bad_rows_never_share_an_id():
    """Each invalid row is one manifest row, keyed by its id: two bad rows with one id would
    leave only the second on record."""
    tl = read_targets([{"name": "M31", "size": "abc"}, {"name": "M31", "size": "xyz"},
                       {"id": "q", "ra": "x", "dec": 1}, {"id": "q", "ra": "y", "dec": 1}])
    ids = [bad.target_id for bad in tl.invalid]
    assert len(set(ids)) == 4, ids
    assert ids[0] == "m31" and ids[2] == "q"
