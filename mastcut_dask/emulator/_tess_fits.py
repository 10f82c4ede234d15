"""Write astrocut (>= 1.0) style TESSCut target pixel files (fixed and moving targets) as FITS bytes.

Headers are formatted card by card and data are written straight from big-endian numpy
arrays: astropy's table machinery costs more than the whole pixel model for a small
cutout, and the server must not be the bottleneck. Tests open every file with astropy
(``verify('exception')``) and lightkurve.
"""

from __future__ import annotations

import functools

import numpy as np

from ._tess_geometry import CcdId, Cadences, SlotWcs, sector_cadences
from ._tess_pixels import DEADC
from .fitsbytes import UNDEF, Card, fixed_card, hdu_parts, image_keywords, primary_keywords

PROCVER = "1.4.0"
_TT_MINUS_UTC_DAYS = 69.184 / 86400.0  # 32.184 s + 37 leap seconds (valid since 2017)


def _hdu(cards: list[Card], data=None) -> list:
    """One HDU's parts (:func:`.fitsbytes.hdu_parts`) with the cards formatted the TESS way."""
    return hdu_parts([fixed_card(*c) for c in cards], data)


# ------------------------------------------------------------------ times and names
def btjd_to_utc(btjd: np.ndarray, timecorr: np.ndarray) -> np.ndarray:
    """UTC instants (datetime64[ms]) of BTJD times: spacecraft TDB minus TT-UTC.

    The TDB-TT difference (< 2 ms) is ignored; it is below the precision of the names.
    """
    jd = np.asarray(btjd, dtype=np.float64) - np.asarray(timecorr, dtype=np.float64) - _TT_MINUS_UTC_DAYS
    ms = np.round((jd + 2457000.0 - 2440587.5) * 86400000.0).astype(np.int64)
    return ms.astype("datetime64[ms]")


def iso_utc(t: np.datetime64) -> str:
    """'2018-07-25T19:29:42.708Z' style string."""
    return str(np.datetime_as_string(t, unit="ms")) + "Z"


def _scconfig(sector: int) -> int:
    return 120 + 5 * (sector - 1)


@functools.lru_cache(maxsize=64)  # up to 11,000 x 38 bytes each
def ffi_names(c: CcdId, seed: int = 0) -> np.ndarray:
    """FFI_FILE values (38 bytes, as astrocut truncates them) for every cadence of a slot."""
    cad = sector_cadences(c.sector, seed)
    start = btjd_to_utc(cad.time - cad.timedel / 2.0, cad.timecorr)
    year = start.astype("datetime64[Y]")
    doy = (start.astype("datetime64[D]") - year.astype("datetime64[D]")).astype(np.int64) + 1
    sec = (start.astype("datetime64[s]") - start.astype("datetime64[D]")).astype(np.int64)
    yr = year.astype(np.int64) + 1970
    tail = f"-s{c.sector:04d}-{c.camera}-{c.ccd}-{_scconfig(c.sector):04d}-s_ffic.fits"
    names = [f"tess{y:04d}{d:03d}{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}{tail}"[:38]
             for y, d, s in zip(yr.tolist(), doy.tolist(), sec.tolist())]
    out = np.array(names, dtype="S38")
    out.setflags(write=False)
    return out


# ------------------------------------------------------------------ headers
def primary_cards(c: CcdId, cad: Cadences, n: int, ra_obj: float | None, dec_obj: float | None,
                  obj: str = "", tstart: float | None = None, tstop: float | None = None,
                  seed: int = 0) -> list[Card]:
    """PRIMARY keywords of a TPF made from the first ``n`` cadences."""
    if tstart is None:
        tstart = float(cad.time[0] - cad.timedel / 2.0)
    if tstop is None:
        tstop = float(cad.time[n - 1] + cad.timedel / 2.0)
    tc0, tc1 = float(cad.timecorr[0]), float(cad.timecorr[n - 1])
    d_obs = iso_utc(btjd_to_utc(np.array([tstart]), np.array([tc0]))[0])
    d_end = iso_utc(btjd_to_utc(np.array([tstop]), np.array([tc1]))[0])
    # the cube's creation date: a fixed time after the sector, never the clock
    made = btjd_to_utc(np.array([cad.time[-1] + 12.0]), np.array([0.0]))[0]
    cards: list[Card] = [
        *primary_keywords(),
        ("NEXTEND", 2, "number of standard extensions"),
        ("SIMDATA", False, "file is based on simulated data"),
        ("ORIGIN", "STScI/MAST", "institution responsible for creating this file"),
        ("DATE", str(np.datetime_as_string(made, unit="D")), "file creation date."),
        ("PROCVER", PROCVER, "astrocut version"),
        ("FFI_TYPE", "SPOC", "the FFI type used to make the cutout"),
        ("CREATOR", "astrocut", "pipeline job and program used to produce this file"),
        ("FILEVER", "1.0", "file format version"),
        ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("DATA_REL", int(c.sector) + 5, "data release version number"),
        ("OBJECT", obj, "Moving target object name/identifier" if obj else "string version of target id"),
        ("TICID", UNDEF, "unique tess target identifier"),
        ("SECTOR", int(c.sector), "Observing sector"),
        ("CAMERA", int(c.camera), "Camera number"),
        ("CCD", int(c.ccd), "CCD chip number"),
        ("PXTABLE", 0, "pixel table id"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
    ]
    if ra_obj is not None:
        cards += [("RA_OBJ", float(ra_obj), "[deg] right ascension"),
                  ("DEC_OBJ", float(dec_obj), "[deg] declination")]
    cards += [
        ("PMRA", 0.0, "[mas/yr] RA proper motion"),
        ("PMDEC", 0.0, "[mas/yr] Dec proper motion"),
        ("PMTOTAL", 0.0, "[mas/yr] total proper motion"),
        ("TESSMAG", 0.0, "[mag] TESS magnitude"),
        ("TEFF", 0.0, "[K] Effective temperature"),
        ("LOGG", 0.0, "[cm/s2] log10 surface gravity"),
        ("MH", 0.0, "[log10([M/H])] metallicity"),
        ("RADIUS", 0.0, "[solar radii] stellar radius"),
        ("TICVER", 0, "TICVER"),
        ("TCID", 0, "TCID"),
        ("CRMITEN", True, "spacecraft cosmic ray mitigation enabled"),
        ("CRBLKSZ", 10, "[exposures] s/c cosmic ray mitigation block siz"),
        ("CRSPOC", False, "SPOC cosmic ray cleaning enabled"),
        ("TSTART", float(tstart), "observation start time in TJD of first FFI"),
        ("TSTOP", float(tstop), "observation stop time in TJD of last FFI"),
        ("DATE-OBS", d_obs, "TSTART as UTC calendar date of first FFI"),
        ("DATE-END", d_end, "TSTOP as UTC calendar date of last FFI"),
        ("FFIINDEX", 10000 * int(c.sector) + 1, "number of FFI cadence interval of first FFI"),
        ("SCCONFIG", _scconfig(c.sector), "spacecraft configuration ID"),
        ("ASTATE", True, "archive state F indicates single orbit processin"),
        ("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
        ("TASSIGN", "SPACECRAFT", "where time is assigned"),
        ("TIMESYS", "TDB", "time system is Barycentric Dynamical Time (TDB)"),
        ("BJDREFI", 2457000, "integer part of BTJD reference date"),
        ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
        ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
        ("TELAPSE", float(tstop - tstart), "[d] TSTOP - TSTART"),
    ]
    return cards


def _image_cards(c: CcdId, cad: Cadences, ffi_name: str, seed: int) -> list[Card]:
    """Keywords astrocut copies into PIXELS from the image header of the FFI that gave the WCS."""
    timedel = cad.timedel
    telapse = float(cad.time[-1] - cad.time[0] + timedel)
    cards: list[Card] = [
        ("BACKAPP", True, "background is subtracted"),
        ("CDPP0_5", UNDEF, "[ppm] RMS CDPP on 0.5-hr time scales"),
        ("CDPP1_0", UNDEF, "[ppm] RMS CDPP on 1.0-hr time scales"),
        ("CDPP2_0", UNDEF, "[ppm] RMS CDPP on 2.0-hr time scales"),
        ("CROWDSAP", UNDEF, "Ratio of target flux to total flux in op. ap."),
        ("DEADAPP", True, "deadtime applied"),
        ("DEADC", DEADC, "deadtime correction"),
        ("EXPOSURE", float(timedel * DEADC), "[d] time on source"),
        ("FLFRCSAP", UNDEF, "Frac. of target flux w/in the op. aperture"),
        ("FRAMETIM", 2.0, "[s] frame time [INT_TIME + READTIME]"),
        ("FXDOFF", 209715200, "compression fixed offset"),
    ]
    for i, ch in enumerate("ABCD"):
        cards.append((f"GAIN{ch}", 5.2 + 0.05 * i, "[electrons/count] CCD output " + ch + " gain factor"))
    cards += [
        ("INT_TIME", 1.98, "[s] photon accumulation time per frame"),
        ("LIVETIME", telapse * DEADC, "[d] TELAPSE multiplied by DEADC"),
    ]
    for i, ch in enumerate("ABCD"):
        cards.append((f"MEANBLC{ch}", 6500 + 10 * i, "[count] FSW mean black level CCD output " + ch))
    cards += [
        ("NREADOUT", int(round(timedel * 86400 / 2.0 * 0.8)), "number of read per cadence"),
        ("NUM_FRM", int(round(timedel * 86400 / 2.0)), "number of frames per time stamp"),
    ]
    for i, ch in enumerate("ABCD"):
        cards.append((f"READNOI{ch}", 7.5 + 0.2 * i, "[electrons] read noise CCD output " + ch))
    cards += [
        ("READTIME", 0.02, "[s] readout time per frame"),
        ("TIERRELA", 1.16e-05, "[d] relative time error"),
        ("TIMEDEL", float(timedel), "[d] time resolution of data"),
        ("TIMEPIXR", 0.5, "bin time beginning=0 middle=0.5 end=1"),
        ("TMOFST11", UNDEF, "(s) readout delay for camera 1 and ccd 1"),
        ("VIGNAPP", True, "vignetting or collimator correction applied"),
        ("WCS_FFI", ffi_name, "FFI used for cutout WCS"),
    ]
    return cards


def wcs_cards(w: SlotWcs, crpix: tuple[float, float]) -> list[Card]:
    """The linear TAN WCS keywords of an image whose FITS CRPIX is ``crpix``."""
    (p11, p12), (p21, p22) = w.pc
    return [
        ("WCSAXES", 2, "Number of coordinate axes"),
        ("CRPIX1", float(crpix[0]), "Pixel coordinate of reference point"),
        ("CRPIX2", float(crpix[1]), "Pixel coordinate of reference point"),
        ("PC1_1", p11, "Coordinate transformation matrix element"),
        ("PC1_2", p12, "Coordinate transformation matrix element"),
        ("PC2_1", p21, "Coordinate transformation matrix element"),
        ("PC2_2", p22, "Coordinate transformation matrix element"),
        ("CDELT1", 1.0, "[deg] Coordinate increment at reference point"),
        ("CDELT2", 1.0, "[deg] Coordinate increment at reference point"),
        ("CUNIT1", "deg", "Units of coordinate increment and value"),
        ("CUNIT2", "deg", "Units of coordinate increment and value"),
        ("CTYPE1", "RA---TAN", "Right ascension, gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "Declination, gnomonic projection"),
        ("CRVAL1", w.ra0, "[deg] Coordinate value at reference point"),
        ("CRVAL2", w.dec0, "[deg] Coordinate value at reference point"),
        ("LONPOLE", 180.0, "[deg] Native longitude of celestial pole"),
        ("LATPOLE", w.dec0, "[deg] Native latitude of celestial pole"),
        ("MJDREF", 0.0, "[d] MJD of fiducial time"),
        ("RADESYS", "ICRS", "Equatorial coordinate system"),
    ]


def _inherit(cards: list[Card], primary: list[Card]) -> list[Card]:
    """Append every PRIMARY keyword that the extension does not already have (astrocut's inheritance)."""
    skip = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "NEXTEND", "EXTNAME", "EXTVER"}
    have = {k for k, _, _ in cards}
    return cards + [c for c in primary if c[0] not in have and c[0] not in skip]


# ------------------------------------------------------------------ the file
_COLS = [  # name, format letter, unit, TDISP, is image column
    ("TIME", "D", "BJD - 2457000, days", "D14.7", False),
    ("TIMECORR", "E", "d", "E14.7", False),
    ("CADENCENO", "J", None, "I10", False),
    ("RAW_CNTS", "J", "count", "I8", True),
    ("FLUX", "E", "e-/s", "E14.7", True),
    ("FLUX_ERR", "E", "e-/s", "E14.7", True),
    ("FLUX_BKG", "E", "e-/s", "E14.7", True),
    ("FLUX_BKG_ERR", "E", "e-/s", "E14.7", True),
    ("QUALITY", "J", None, "B16.16", False),
    ("POS_CORR1", "E", "pixel", "E14.7", False),
    ("POS_CORR2", "E", "pixel", "E14.7", False),
    ("FFI_FILE", "38A", "pixel", "A38", False),
]
_MT_COLS = [
    ("TGT_X", "D", "pixel", "D14.7", False),
    ("TGT_Y", "D", "pixel", "D14.7", False),
    ("TGT_RA", "D", "deg", "D14.7", False),
    ("TGT_DEC", "D", "deg", "D14.7", False),
]
_NP = {"D": ">f8", "E": ">f4", "J": ">i4"}


def tpf_bytes(*, c: CcdId, cad: Cadences, rows_idx: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
              primary: list[Card], aperture: np.ndarray, aperture_wcs: list[Card],
              ffi_file: np.ndarray, wcs_ffi: str, moving: dict[str, np.ndarray] | None = None,
              seed: int = 0) -> bytes:
    """Assemble PRIMARY + PIXELS + APERTURE into FITS bytes.

    Parameters
    ----------
    c : CcdId
        The slot.
    cad : Cadences
        The sector's cadences.
    rows_idx : numpy.ndarray
        Cadence index of every output row.
    flux, flux_err : numpy.ndarray
        float32 arrays (n, ny, nx).
    primary : list of cards
        PRIMARY keywords.
    aperture : numpy.ndarray
        int32 APERTURE image.
    aperture_wcs : list of cards
        WCS keywords of the APERTURE header.
    ffi_file : numpy.ndarray
        ``S38`` FFI names per output row.
    wcs_ffi : str
        WCS_FFI value.
    moving : dict, optional
        ``TGT_X, TGT_Y, TGT_RA, TGT_DEC`` arrays for moving-target files.
    seed : int
        Sky seed.
    """
    n, ny, nx = flux.shape
    cols = _COLS + (_MT_COLS if moving is not None else [])
    dtype = []
    for name, fmt, _u, _d, img in cols:
        if fmt == "38A":
            dtype.append((name, "S38"))
        elif img:
            dtype.append((name, _NP[fmt], (ny, nx)))
        else:
            dtype.append((name, _NP[fmt]))
    tab = np.zeros(n, dtype=dtype)
    tab["TIME"] = cad.time[rows_idx]
    tab["TIMECORR"] = cad.timecorr[rows_idx]
    tab["RAW_CNTS"] = -1
    tab["FLUX"] = flux
    tab["FLUX_ERR"] = flux_err
    tab["QUALITY"] = cad.quality[rows_idx]
    tab["FFI_FILE"] = ffi_file
    if moving is not None:
        for k in ("TGT_X", "TGT_Y", "TGT_RA", "TGT_DEC"):
            tab[k] = moving[k]

    npix = nx * ny
    hcards: list[Card] = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", tab.dtype.itemsize, "length of dimension 1"),
        ("NAXIS2", n, "length of dimension 2"),
        ("PCOUNT", 0, "number of group parameters"),
        ("GCOUNT", 1, "number of groups"),
        ("TFIELDS", len(cols), "number of table fields"),
    ]
    tdim = f"({nx},{ny})" if moving is not None else f"({nx}, {ny})"
    shape_cards, unit_cards, null_cards = [], [], []
    for i, (name, fmt, unit, disp, img) in enumerate(cols, start=1):
        shape_cards.append((f"TTYPE{i}", name, "column name"))
        shape_cards.append((f"TFORM{i}", f"{npix}{fmt}" if img else fmt, "column format"))
        if img:
            shape_cards.append((f"TDIM{i}", tdim, "column dimensions: pixel aperture array"))
        if unit is not None:
            unit_cards.append((f"TUNIT{i}", unit, "column units"))
        unit_cards.append((f"TDISP{i}", disp, "column display format"))
        if name == "RAW_CNTS":
            null_cards.append((f"TNULL{i}", -1, "column null value"))
    if moving is not None:
        # center_on_path writes all TTYPE/TFORM/TDIM first, then TDISP/TUNIT, then TNULL
        hcards += shape_cards + unit_cards + null_cards
    else:
        by_index: dict[int, list[Card]] = {}
        for card in shape_cards + unit_cards + null_cards:
            by_index.setdefault(int(card[0].lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")), []).append(card)
        hcards += [card for i in sorted(by_index) for card in by_index[i]]
    hcards += [("INHERIT", True, "inherit the primary header"),
               ("EXTNAME", "PIXELS", "name of extension"),
               ("EXTVER", 1, "extension version number (not format version)")]
    hcards += _image_cards(c, cad, wcs_ffi, seed)
    hcards = _inherit(hcards, primary)

    ay, ax = aperture.shape
    acards: list[Card] = [
        *image_keywords(32, ay, ax),
        ("INHERIT", True, "inherit the primary header"),
        ("EXTNAME", "APERTURE", "extension name"),
        ("EXTVER", 1, "extension version number (not format version)"),
    ] + aperture_wcs + [
        ("WCS_MSEP", 0.0, "[deg] Max offset between cutout WCS and FFI WCS"),
        ("WCS_SIG", 0.0, "[deg] Error measurement of cutout WCS fit"),
        ("NPIXMISS", UNDEF, "Number of op. aperture pixels not collected"),
        ("NPIXSAP", UNDEF, "Number of pixels in optimal aperture"),
    ]
    acards = _inherit(acards, primary)

    ap = np.ascontiguousarray(aperture, dtype=">i4")
    # numpy buffers go straight into the one join: no intermediate copies of the data
    return b"".join(_hdu(primary) + _hdu(hcards, tab.view(np.uint8).reshape(-1))
                    + _hdu(acards, ap.view(np.uint8).reshape(-1)))
