"""The examples of astroquery's MAST cutout documentation (tests/data/mast_cut.rst), run as doctests
through ``from mastcut_dask import Tesscut, Zcut, Hapcut`` against the emulator.

The document is astroquery's; only its import line changes. Examples marked
``+IGNORE_OUTPUT`` in the document are run (they must not raise) but their output is not
compared, exactly as astropy's doctest plugin treats them. Everything else must print what the
document shows, except two things an emulator cannot reproduce and that the comparison
therefore leaves out in ``info()`` tables: the number of header cards and the number of
cadence rows (the session emulator caps cadences to keep tests fast).
"""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path


# The project's copy of the document (astroquery's docs/mast/mast_cut.rst, BSD-3, see
# tests/data/ATTRIBUTION.md).
SEED = Path(__file__).parent / "data" / "mast_cut.rst"

# astropy's doctest plugin spelling; registering it lets the standard parser read the document.
IGNORE_OUTPUT = doctest.register_optionflag("IGNORE_OUTPUT")
_INFO_ROW = re.compile(r"^(\s*\d+\s+\S+\s+\d+\s+\w+HDU\s+)\d+(\s+)(?:\d+R x )?", re.M)


def _normalise(text: str) -> str:
    # Card counts and row counts vary with header fidelity and the cadence cap (see module doc).
    return _INFO_ROW.sub(lambda m: m.group(1) + "N" + m.group(2), text)


class _Checker(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        if optionflags & IGNORE_OUTPUT:
            return True
        if super().check_output(want, got, optionflags):
            return True
        return super().check_output(_normalise(want), _normalise(got), optionflags)


def _document() -> str:
    return SEED.read_text(encoding="utf-8")


def _examples():
    text = _document().replace("from astroquery.mast import", "from mastcut_dask import")
    parser = doctest.DocTestParser()
    return parser.get_doctest(text, {}, "mast_cut.rst", str(SEED), 0)


def test_seed_document_examples(emulator, tmp_path, monkeypatch):
    # The ready instances read these on every call: the document's code runs unchanged.
    monkeypatch.setenv("MASTCUT_MAST_URL", emulator.url)
    monkeypatch.setenv("MASTCUT_RESOLVER_URL", emulator.resolver_url)
    monkeypatch.chdir(tmp_path)   # download_cutouts writes into "."
    test = _examples()
    assert len(test.examples) > 20
    before = emulator.stats()["requests"]
    runner = doctest.DocTestRunner(checker=_Checker(), optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert emulator.stats()["requests"] > before


def test_seed_downloads_land_where_the_document_says(emulator, tmp_path, monkeypatch):
    """The files the document lists are really there, under the names it prints."""
    monkeypatch.setenv("MASTCUT_MAST_URL", emulator.url)
    monkeypatch.setenv("MASTCUT_RESOLVER_URL", emulator.resolver_url)
    monkeypatch.chdir(tmp_path)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    from mastcut_dask import Hapcut, Tesscut, Zcut

    manifest = Tesscut.download_cutouts(coordinates=SkyCoord(107.18696, -70.50919, unit="deg"),
                                        size=[5, 5] * u.arcmin, sector=9)
    assert list(manifest["Local Path"]) == ["./tess-s0009-4-1_107.186960_-70.509190_15x15_astrocut.fits"]
    manifest = Hapcut.download_cutouts(coordinates=SkyCoord(351.347812, 28.497808, unit="deg"), size=[50, 100])
    assert sorted(manifest["Local Path"]) == sorted([
        "./hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_ir_f160w_coarse.fits",
        "./hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_ir_f160w.fits",
        "./hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_uvis_f606w.fits",
        "./hst_cutout_skycell-p2007x09y05-ra351d3478-decn28d4978_wfc3_uvis_f814w.fits"])
    jpgs = Zcut.download_cutouts(coordinates=SkyCoord(189.49206, 62.20615, unit="deg"), size=[5, 10], units="px",
                                 survey="3dhst_goods-n", cutout_format="jpg")
    assert len(jpgs) == 10
    for path in list(manifest["Local Path"]) + list(jpgs["Local Path"]):
        assert os.path.isfile(path) and os.path.getsize(path) > 0
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith((".zip", ".part"))]
    assert leftovers == []


def test_seed_in_memory_structures(emulator, monkeypatch):
    """What the document's ignored-output ``info()`` tables show, checked structurally."""
    monkeypatch.setenv("MASTCUT_MAST_URL", emulator.url)
    monkeypatch.setenv("MASTCUT_RESOLVER_URL", emulator.resolver_url)
    from astropy.coordinates import SkyCoord

    from mastcut_dask import Hapcut, Tesscut, Zcut

    hap = Hapcut.get_cutouts(coordinates=SkyCoord(351.347812, 28.497808, unit="deg"), size=5)
    assert [(h.name, type(h).__name__) for h in hap[0]] == [("PRIMARY", "PrimaryHDU"), ("SCI", "ImageHDU"),
                                                            ("WHT", "ImageHDU")]
    assert hap[0]["SCI"].data.shape == (5, 5) and hap[0]["SCI"].data.dtype.kind == "f"
    z = Zcut.get_cutouts(coordinates=SkyCoord(189.49206, 62.20615, unit="deg"), survey="3dhst_goods-n")
    assert z[0][0].name == "PRIMARY" and all(h.name == "CUTOUT" and h.data.shape == (5, 5) for h in z[0][1:])
    mt = Tesscut.get_cutouts(objectname="Eleonora", moving_target=True, sector=6)
    assert [h.name for h in mt[0]] == ["PRIMARY", "PIXELS", "APERTURE"]
    assert len(mt[0]["PIXELS"].columns) == 16 and mt[0]["APERTURE"].data.shape == (2078, 2136)
