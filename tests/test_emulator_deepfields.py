"""The emulator's ZCut and HAPCut skies and products, called directly (no HTTP)."""

from __future__ import annotations

import pytest

from mastcut_dask.emulator.deepfields import zcut_survey_names, zcut_surveys_at
from mastcut_dask.emulator.errors import BadRequest

GN = (189.49206, 62.20615)


def test_pinned_surveys_at_goods_north():
    assert zcut_surveys_at(*GN) == ['candels_gn_60mas', 'candels_gn_30mas', 'goods_north',
                                    '3dhst_goods-n']


def test_astroquery_remote_positions():
    # astroquery's remote tests: this point is in 3dhst_goods-n but not in candels_gn_30mas.
    found = zcut_surveys_at(189.28065571, 62.17415175)
    assert "3dhst_goods-n" in found and "goods_north" in found
    assert "candels_gn_30mas" not in found
    assert zcut_surveys_at(34.47320, -5.24271)


def test_no_survey_far_away_but_radius_reaches():
    assert zcut_surveys_at(0.0, 0.0) == []
    assert zcut_surveys_at(189.49206, 62.5) == []
    assert "goods_north" in zcut_surveys_at(189.49206, 62.5, radius_deg=0.3)


def test_survey_names_cover_every_answer():
    names = zcut_survey_names()
    assert len(names) == len(set(names))
    assert set(zcut_surveys_at(*GN)) <= set(names)


@pytest.mark.parametrize("radius", [-1.0, float("nan"), "abc"])
def test_bad_radius(radius):
    with pytest.raises(BadRequest):
        zcut_surveys_at(*GN, radius_deg=radius)
