"""Archives are hostile until checked: traversal, links, bombs, garbage and truncation."""

from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest

from mastcut_dask.services.archive import ArchiveLimits, extract_zip, no_data_message, parse_json, read_zip_members, sniff_bytes, sniff_file, verify_zip
from mastcut_dask.exceptions import UnexpectedResponseError, UnsafeArchiveError


def make_zip(path, members, *, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            if isinstance(name, zipfile.ZipInfo):
                zf.writestr(name, data)
            else:
                zf.writestr(name, data)
    return str(path)


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_good_zip_extracts_with_temp_then_rename(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("one.fits", b"x" * 1000), ("sub/two.fits", b"y" * 10)])
    dest = tmp_path / "out"
    dest.mkdir()
    names = verify_zip(z)
    assert names == ("one.fits", "sub/two.fits")
    written = extract_zip(z, str(dest), names)
    assert written == [os.path.join(str(dest), "one.fits"), os.path.join(str(dest), "sub/two.fits")]
    assert (dest / "one.fits").read_bytes() == b"x" * 1000
    assert tree(dest) == ["one.fits", os.path.join("sub", "two.fits")]   # no .part left behind


@pytest.mark.parametrize("evil", ["../escape.txt", "a/../../escape.txt", "/abs/escape.txt", "..\\escape.txt",
                                  "C:/escape.txt"])
def test_traversal_refused_and_nothing_written(tmp_path, evil):
    z = make_zip(tmp_path / "evil.zip", [("fine.fits", b"ok"), (evil, b"pwned")])
    dest = tmp_path / "deep" / "out"
    dest.mkdir(parents=True)
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="refused"):
        verify_zip(z)
    with pytest.raises(UnsafeArchiveError):
        extract_zip(z, str(dest))
    assert tree(tmp_path) == before


def test_symlink_member_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = make_zip(tmp_path / "link.zip", [(info, "/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="link"):
        verify_zip(z)


def test_small_members_may_compress_well():
    """A moving target's FFI-sized APERTURE of zeros is not a bomb."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tpf.fits", b"\0" * (2136 * 2078 * 4))
    buf.seek(0)
    assert verify_zip(buf, ArchiveLimits(max_ratio=100)) == ("tpf.fits",)


def test_zip_bomb_refused_by_ratio_and_by_size(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", [("zeros.fits", b"\0" * (40 * 1024 * 1024))])
    with pytest.raises(UnsafeArchiveError, match="compress"):
        verify_zip(z, ArchiveLimits(max_ratio=100))
    with pytest.raises(UnsafeArchiveError, match="bytes"):
        verify_zip(z, ArchiveLimits(max_bytes=1024 * 1024, max_ratio=1e9))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract_zip(z, str(dest), limits=ArchiveLimits(max_ratio=100))
    assert tree(dest) == []


def test_too_many_members_and_duplicates(tmp_path):
    z = make_zip(tmp_path / "many.zip", [(f"f{i}", b"1") for i in range(20)])
    with pytest.raises(UnsafeArchiveError, match="members"):
        verify_zip(z, ArchiveLimits(max_members=10))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("same.fits", b"1")
        with pytest.warns(UserWarning):
            zf.writestr("same.fits", b"2")
    buf.seek(0)
    with pytest.raises(UnsafeArchiveError, match="duplicate"):
        verify_zip(buf)


def test_lying_sizes_caught_when_reading(tmp_path):
    """A member whose header claims fewer bytes than it inflates to."""
    z = make_zip(tmp_path / "liar.zip", [("a.fits", b"A" * 5000)], compression=zipfile.ZIP_STORED)
    raw = bytearray(open(z, "rb").read())
    # Patch the declared size (local header offset 22, central directory) to 10 bytes.
    with zipfile.ZipFile(z) as zf:
        info = zf.infolist()[0]
    cd = raw.rfind(b"PK\x01\x02")
    raw[22:26] = (10).to_bytes(4, "little")
    raw[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    open(z, "wb").write(raw)
    with pytest.raises((UnexpectedResponseError, UnsafeArchiveError)):
        verify_zip(z)
    assert info.file_size == 5000


def test_truncated_and_corrupt_zip_is_unexpected_response(tmp_path):
    good = make_zip(tmp_path / "g.zip", [("a.fits", os.urandom(4000))])
    data = open(good, "rb").read()
    trunc = tmp_path / "t.zip"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnexpectedResponseError, match="zip"):
        verify_zip(str(trunc))
    corrupt = bytearray(data)
    corrupt[60:80] = b"\xff" * 20   # inside the compressed data → CRC/inflate error
    bad = tmp_path / "c.zip"
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(UnexpectedResponseError):
        verify_zip(str(bad))


def test_sniffing():
    assert sniff_bytes(b"PK\x03\x04rest") == "zip"
    assert sniff_bytes(b'  {"msg": "x"}') == "json"
    with pytest.raises(UnexpectedResponseError, match="neither"):
        sniff_bytes(b"<!DOCTYPE html><html><body>Service Unavailable</body></html>", url="http://x/astrocut")
    with pytest.raises(UnexpectedResponseError):
        sniff_bytes(b"")
    assert parse_json(b'{"results": []}')[0] == "results"
    assert parse_json(b'{"surveys": ["a"]}')[0] == "surveys"
    assert parse_json(b'{"msg": "No FFIs", "results": []}')[0] == "nodata"
    with pytest.raises(UnexpectedResponseError, match="truncated"):
        parse_json(b'{"results": [{"sector": "1"')
    with pytest.raises(UnexpectedResponseError):
        parse_json(b'{"something": "else"}')


def test_no_data_message(tmp_path):
    p = tmp_path / "nd.json"
    p.write_bytes(b'{"msg": "Cutout Error: No FFIs found for input target. Cutout not performed."}')
    assert sniff_file(str(p)) == "json"
    nd = no_data_message(str(p), url="http://emu/tesscut")
    assert nd.message.startswith("Cutout Error: No FFIs") and nd.results_empty and nd.url == "http://emu/tesscut"
    hap = no_data_message(b'{"msg": "Missing HAP files", "results": [{"a": 1}]}')
    assert not hap.results_empty


def test_read_zip_members_in_memory():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("b.fits", b"2")
        zf.writestr("a.fits", b"1")
    buf.seek(0)
    assert read_zip_members(buf) == [("b.fits", b"2"), ("a.fits", b"1")]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_segment = st.sampled_from(["..", ".", "a", "b.fits", "", "/", "\\", "C:", "~", "..."])


@settings(max_examples=150, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=6).map("/".join).filter(bool))
def test_no_member_name_escapes_the_destination(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("fuzz")
    dest = root / "deep" / "out"
    dest.mkdir(parents=True)
    z = make_zip(root / "f.zip", [(name, b"data")])
    try:
        members = verify_zip(z)
        extract_zip(z, str(dest), members)
    except (UnsafeArchiveError, UnexpectedResponseError):
        pass
    escaped = [p for p in tree(root) if not p.startswith(os.path.join("deep", "out")) and p != "f.zip"]
    assert escaped == []


def test_extract_returns_the_paths_really_written(tmp_path):
    # A backslash separates folders here (as the safety checks treat it), so "sub\\two.fits" is
    # written to sub/two.fits; the returned path must be that file, not a name that does not exist.
    z = make_zip(tmp_path / "w.zip", [("sub\\two.fits", b"y")])
    dest = tmp_path / "out"
    dest.mkdir()
    written = extract_zip(z, str(dest), verify_zip(z))
    assert all(os.path.isfile(p) for p in written), written
    assert written == [os.path.join(str(dest), "sub", "two.fits")]


@pytest.mark.parametrize("order", [["a", "a/b"], ["a/b", "a"]])
def test_file_and_folder_of_the_same_name_refused_before_writing(tmp_path, order):
    # Hostile names where one member is another's folder: refused up front as unsafe, not an
    # OSError half-way through extraction with some members already written.
    z = make_zip(tmp_path / "clash.zip", [(name, b"x") for name in order])
    with pytest.raises(UnsafeArchiveError, match="refused"):
        verify_zip(z)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract_zip(z, str(dest))
    assert tree(dest) == []
