"""Name resolution through the emulator's SANTA: matching, TIC entries, batching, caching, errors."""

from __future__ import annotations

import pytest
from astroquery.mast import utils as aq_utils

from mastcut_dask.exceptions import InvalidQueryError, ResolverError
from mastcut_dask.options import ServiceOptions
from mastcut_dask.services.resolver import clear_cache, resolve_name, resolve_names, resolve_names_detailed


@pytest.fixture
def opts(emulator):
    clear_cache()
    yield ServiceOptions(base_url=emulator.url, resolver_url=emulator.resolver_url, backoff_base=0.01)
    clear_cache()


def resolver_requests(emu):
    return [e for e in emu.request_log() if e["path"] == "/Santa-war/query"]


@pytest.fixture
def astroquery_on_emulator(emulator, monkeypatch):
    """astroquery's hard-coded SANTA URL, redirected to the emulator (a third-party call, not ours)."""
    original = aq_utils._simple_request

    def redirected(url, params=None):
        if "mastresolver" in url:
            url = emulator.resolver_url
        return original(url, params)

    monkeypatch.setattr(aq_utils, "_simple_request", redirected)
    return aq_utils.resolve_object


@pytest.mark.parametrize("name,resolver", [("M1", None), ("M101", None), ("Barnard's Star", None),
                                           ("M1", "NED"), ("M8", "SIMBAD"), ("TIC 307210830", None),
                                           ("M104", None)])
def test_same_positions_as_astroquery(opts, astroquery_on_emulator, name, resolver):
    theirs = astroquery_on_emulator(name, resolver=resolver)
    ra, dec = resolve_name(name, opts, resolver=resolver)
    assert (ra, dec) == pytest.approx((theirs.ra.deg, theirs.dec.deg), abs=1e-12)


def test_tic_id_takes_the_tic_catalogue_entry(opts):
    assert resolve_name("TIC 307210830", opts) == pytest.approx((124.531756290083, -68.3129998725044))
    # case and spacing as users type them
    assert resolve_name("tic 307210830", opts) == pytest.approx((124.531756290083, -68.3129998725044))


def test_batches_of_30_and_cache(emulator, opts):
    names = [f"TIC {n}" for n in range(1000, 1065)]
    before = len(resolver_requests(emulator))
    positions, errors = resolve_names_detailed(names, opts)
    assert len(resolver_requests(emulator)) - before == 3          # 30 + 30 + 5
    assert set(positions) | set(errors) == set(names)
    assert len(positions) > 0
    # second time: all from the per-process cache, no request
    again, _ = resolve_names_detailed([n for n in positions], opts)
    assert again == positions
    assert len(resolver_requests(emulator)) - before == 3


def test_one_bad_name_does_not_sink_the_others(emulator, opts):
    positions, errors = resolve_names_detailed(["M1", "no such object xyz", "M101"], opts)
    assert set(positions) == {"M1", "M101"}
    assert set(errors) == {"no such object xyz"}
    err = errors["no such object xyz"]
    assert isinstance(err, ResolverError) and err.target == "no such object xyz"
    assert str(err) == 'Could not resolve "no such object xyz" to a sky position.'
    with pytest.raises(ResolverError, match="no such object xyz"):
        resolve_names(["M1", "no such object xyz"], opts)
    assert resolve_names(["M1", "no such object xyz"], opts, errors="ignore").keys() == {"M1"}


def test_resolver_specific_failure_message(opts):
    with pytest.raises(ResolverError, match='using resolver "NED"'):
        resolve_name("Barnard's Star", opts, resolver="NED")


@pytest.mark.parametrize("bad,exc", [("", InvalidQueryError), ("   ", InvalidQueryError),
                                     (42, InvalidQueryError)])
def test_bad_names_fail_before_any_request(emulator, opts, bad, exc):
    before = emulator.stats()["requests"]
    with pytest.raises(exc):
        resolve_name(bad, opts)
    assert emulator.stats()["requests"] == before


def test_invalid_resolver_fails_before_any_request(emulator, opts):
    before = emulator.stats()["requests"]
    with pytest.raises(ResolverError, match='Invalid resolver. Must be "NED" or "SIMBAD".'):
        resolve_name("M1", opts, resolver="VizieR")
    assert emulator.stats()["requests"] == before


def test_resolver_faults_are_retried_and_reported():
    from mastcut_dask.emulator import MastEmulator
    from mastcut_dask.exceptions import ServiceUnavailableError

    clear_cache()
    with MastEmulator(faults={"503": 0.5, "truncate": 0.2}, seed=4) as emu:
        opts = ServiceOptions(base_url=emu.url, resolver_url=emu.resolver_url, backoff_base=0.01, backoff_cap=0.05,
                              max_retries=10)
        assert resolve_name("M101", opts) == pytest.approx((210.802429, 54.34875))
        assert emu.stats()["requests"] > 1
    clear_cache()
    with MastEmulator(faults={"503": 1.0}) as emu:
        opts = ServiceOptions(resolver_url=emu.resolver_url, backoff_base=0.01, max_retries=2)
        with pytest.raises(ServiceUnavailableError, match="Santa-war") as info:
            resolve_name("M101", opts)
    assert info.value.attempts == 3 and "name=M101" in info.value.url


def test_awkward_names_travel_intact(emulator, opts):
    names = ["a&b=c", "M1+M2", "ünïcödé", "100% star", "M 1#x"]
    n = len(emulator.request_log())
    positions, errors = resolve_names_detailed(names, opts)
    assert positions == {} and set(errors) == set(names)
    sent = emulator.request_log()[n]["params"]["name"]
    assert sent == names            # encoded by requests, decoded by the server: nothing lost or split


@pytest.mark.parametrize("names,resolver", [(["TIC 307210830"], None), (["TIC 307210830"], "SIMBAD"),
                                            (["TIC 307210830"], "NED"), (["M1"], None), (["M1"], "NED"),
                                            (["M1", "TIC 307210830"], None),
                                            (["M1", "TIC 307210830"], "SIMBAD")])
def test_resolver_parameters_are_those_astroquery_sends(emulator, opts, astroquery_on_emulator, names, resolver):
    # astroquery 0.4.11 asks SANTA for every resolver (resolveAll=True) only when a resolver is
    # named and a catalogue ID is among the names, to compare the two positions; a bare
    # "TIC n" is sent with resolveAll=False and SANTA answers with its catalogue entry. We sent
    # resolveAll=True for every TIC ID: more work for the service and a different request.
    import warnings

    def outcome(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                got = call()
            except Exception as err:  # astroquery's ResolverError is not ours: compare name and text
                got = (type(err).__name__, str(err))
        return got, [str(w.message) for w in caught]

    n = len(resolver_requests(emulator))
    theirs, their_warnings = outcome(lambda: astroquery_on_emulator(names if len(names) > 1 else names[0],
                                                                    resolver=resolver))
    ours, our_warnings = outcome(lambda: resolve_names(names, opts, resolver=resolver))
    sent = resolver_requests(emulator)[n:]
    assert len(sent) == 2
    assert sent[1]["params"] == sent[0]["params"]
    assert our_warnings == their_warnings
    if isinstance(theirs, tuple):
        assert ours == theirs
    else:
        coords = {names[0]: theirs} if len(names) == 1 else theirs
        assert set(ours) == set(coords)
        for name, (ra, dec) in ours.items():
            assert (ra, dec) == pytest.approx((coords[name].ra.deg, coords[name].dec.deg), abs=1e-12)
