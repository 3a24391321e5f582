"""One set of bucket settings drives every command (issue 18, item 3): ``kiln buckets``, ``kiln check``, the
``bucket:`` query of ``kiln tags`` / ``kiln autotag`` (and the TUI, tests/test_tui_newcomer.py) all take the
dataset's settings (its TOML's), or a run config's (``--train-config``), else kohya's defaults."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from curator.buckets import (
    DEFAULT_BATCH_SIZE,
    BucketSettings,
    choose_bucket_settings,
    read_train_config_buckets,
)
from curator.cli import options
from curator.dataset import Dataset
from tests.conftest import copy_sample
from tui.cli import build_parser, main

PHOTO = "10_kilnsample photo"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return copy_sample(tmp_path / "sample")


def kiln_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def settings_of(report: dict) -> tuple:
    s = report["settings"]
    return tuple(s["resolution"]), s["min_bucket"], s["max_bucket"], s["step"], s["no_upscale"]


def images_in(capsys: pytest.CaptureFixture[str], root: str, query: str, *extra: str) -> int:
    data = kiln_json(capsys, "tags", "stats", root, "--where", query, *extra)
    return int(data["frequencies"]["*"]["images"])


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def option(parser: argparse.ArgumentParser, name: str) -> argparse.Action:
    return next(a for a in parser._actions if name in a.option_strings)


def test_defaults_are_kohyas_in_every_command(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kohya = BucketSettings()
    assert (kohya.resolution, kohya.min_bucket, kohya.max_bucket, kohya.step) == ((512, 512), 256, 1024, 64)
    # the help texts name them without importing the engine (registration stays light)
    assert kohya.resolution == (options.KOHYA_RESOLUTION,) * 2
    assert (options.KOHYA_MIN_BUCKET, options.KOHYA_MAX_BUCKET, options.KOHYA_STEP) == (256, 1024, 64)
    report = kiln_json(capsys, "buckets", str(sample))
    assert settings_of(report) == ((512, 512), 256, 1024, 64, False)
    assert report["steps"]["batch_size"] == DEFAULT_BATCH_SIZE == 1
    assert "bucket settings: kohya's defaults" in report["notes"]
    # check --resolution and buckets --resolution: one option, one default, one help
    check, buckets = option(subparser("check"), "--resolution"), option(subparser("buckets"), "--resolution")
    assert check.default is None and buckets.default is None and check.help == buckets.help
    assert "512" in check.help
    with Dataset.open(sample) as ds:
        assert ds.buckets.settings == kohya and ds.buckets.source == "kohya's defaults"
    # bucket: queries see the same buckets kiln buckets reports
    for bucket in report["buckets"]:
        query = f"bucket:{bucket['width']}x{bucket['height']}"
        assert images_in(capsys, str(sample), query) == bucket["images"], query


def test_a_dataset_toml_drives_buckets_check_and_queries(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = sample / "dataset.toml"
    toml.write_text(
        "[general]\nresolution = 1024\nmax_bucket_reso = 2048\ncaption_extension = '.txt'\n[[datasets]]\n"
        f"[[datasets.subsets]]\nimage_dir = '{(sample / PHOTO).as_posix()}'\nnum_repeats = 10\n",
        encoding="utf-8",
    )
    report = kiln_json(capsys, "buckets", str(toml))
    assert settings_of(report) == ((1024, 1024), 256, 2048, 64, False)
    for bucket in report["buckets"]:
        query = f"bucket:{bucket['width']}x{bucket['height']}"
        assert images_in(capsys, str(toml), query) == bucket["images"], query
    flags = kiln_json(capsys, "check", str(toml), "--kind", "low-res", "--no-progress")["flags"]
    assert flags and all("1024²" in f["detail"] or "bucket" in f["detail"] for f in flags)
    # a command-line option wins over the TOML, option by option
    report = kiln_json(capsys, "buckets", str(toml), "--max-bucket", "1024")
    assert settings_of(report) == ((1024, 1024), 256, 1024, 64, False)
    assert any("max_bucket_reso from the command line" in n for n in report["notes"])


def test_a_train_config_drives_every_command(sample: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f"[model]\npath = 'x.safetensors'\n[dataset]\npath = '{sample.as_posix()}'\nresolution = 768\n"
        "min_bucket_reso = 320\nmax_bucket_reso = 1536\n[train]\nbatch_size = 2\nmax_epochs = 3\n",
        encoding="utf-8",
    )
    report = kiln_json(capsys, "buckets", str(sample), "--train-config", str(config))
    assert settings_of(report) == ((768, 768), 320, 1536, 64, False)
    assert (report["steps"]["batch_size"], report["steps"]["epochs"]) == (2, 3)
    assert any(n.startswith("bucket settings: resolution, min_bucket_reso, max_bucket_reso from the run config "
                            "run.toml") for n in report["notes"])
    for bucket in report["buckets"]:
        query = f"bucket:{bucket['width']}x{bucket['height']}"
        assert images_in(capsys, str(sample), query, "--train-config", str(config)) == bucket["images"]
    flags = kiln_json(capsys, "check", str(sample), "--kind", "low-res", "--no-progress",
                      "--train-config", str(config))["flags"]
    assert any("768²" in f["detail"] for f in flags)
    # the trainer reads the same options from the same file
    from train.config import load_config
    from train.data.dataset import bucket_settings

    trainer = bucket_settings(load_config(config).dataset)
    assert choose_bucket_settings(("run", read_train_config_buckets(config).options)).settings == trainer


def test_refused_settings_name_the_option_and_where_it_was_set(sample: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["buckets", str(sample), "--resolution", "1536"]) == 1
    err = capsys.readouterr().err
    assert "max_bucket 1024 is smaller than the resolution's long side 1536" in err
    assert "resolution from the command line" in err
    assert not (sample / ".kiln").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_size = 2\n", encoding="utf-8")
    assert main(["buckets", str(sample), "--train-config", str(bad)]) == 1
    assert "no [dataset] table" in capsys.readouterr().err


def test_query_values_that_match_nothing_are_refused_like_check_kind(sample: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18, item 6: ``flag:lowres`` was accepted and matched nothing."""
    from curator.records import FLAG_KINDS

    capsys.readouterr()
    assert main(["tags", "stats", str(sample), "--where", "flag:lowres"]) == 1
    err = capsys.readouterr().err
    assert "flag:lowres matches nothing" in err and "did you mean flag:low-res?" in err
    assert all(kind in err for kind in FLAG_KINDS)
    assert main(["check", str(sample), "--kind", "lowres", "--no-progress"]) == 1  # what check --kind says
    assert "low-res" in capsys.readouterr().err
    assert main(["tags", "add", str(sample), "x", "--where", "folder:10_kilnsample", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "folder:10_kilnsample matches nothing" in err and "10_kilnsample photo" in err
    assert main(["tags", "stats", str(sample), "--where", "bucket:1024x1024"]) == 1  # not a bucket at 512
    assert "the bucket settings in use have no such bucket" in capsys.readouterr().err
