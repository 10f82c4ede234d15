"""``mastcut sectors``, ``mastcut surveys`` and ``mastcut cutout`` against the emulator."""

from __future__ import annotations

import os

from mastcut_dask.cli import main


def common(emu):
    return ["--base-url", emu.url, "--resolver-url", emu.resolver_url]


def test_sectors_by_position_name_and_moving(emulator, capsys):
    assert main(["sectors", "--ra", "135.1408", "--dec", "-5.1915", *common(emulator)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["sectorName", "sector", "camera", "ccd"]
    assert out[2].split() == ["tess-s0008-1-1", "8", "1", "1"]
    assert main(["sectors", "--name", "TIC 32449963", *common(emulator)]) == 0
    assert "tess-s0010-1-4" in capsys.readouterr().out
    assert main(["sectors", "--name", "Ceres", "--moving", *common(emulator)]) == 0
    assert capsys.readouterr().out.count("tess-s00") == 5


def test_sectors_nothing_found_says_so(emulator, capsys):
    assert main(["sectors", "--ra", "180", "--dec", "0", *common(emulator)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "not in any TESS sector" in captured.err


def test_surveys(emulator, capsys):
    assert main(["surveys", "--ra", "189.49206", "--dec", "62.20615", *common(emulator)]) == 0
    assert capsys.readouterr().out.split() == ["candels_gn_60mas", "candels_gn_30mas", "goods_north",
                                               "3dhst_goods-n"]


def test_cutout_to_a_folder(emulator, tmp_path, capsys):
    out = tmp_path / "cut"
    assert main(["cutout", "--ra", "107.18696", "--dec", "-70.50919", "--sector", "9", "--size", "4,6",
                 "--out", str(out), *common(emulator)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed and all(os.path.isfile(p) and p.startswith(str(out)) for p in printed)
    assert main(["cutout", "--service", "zcut", "--ra", "189.49206", "--dec", "62.20615", "--survey",
                 "goods_north", "--format", "jpg", "--out", str(out / "z"), *common(emulator)]) == 0
    assert all(p.endswith(".jpg") for p in capsys.readouterr().out.split())


def test_user_errors_are_one_line(emulator, capsys):
    assert main(["cutout", "--ra", "10", *common(emulator)]) == 2
    assert "--ra and --dec" in capsys.readouterr().err
    assert main(["cutout", "--ra", "10", "--dec", "20", "--size", "500", *common(emulator)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mastcut cutout:") and "10000" in err and "Traceback" not in err
