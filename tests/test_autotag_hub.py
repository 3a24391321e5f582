"""Finding a tagger by Hugging Face repo id in the local cache, offline."""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path

import pytest

from curator.autotag import hub
from curator.autotag.model import ModelError, TaggerModel, resolve_model
from tests.onnx_models import make_tagger

REPO = "SmilingWolf/wd-swinv2-tagger-v3"


def _cache_repo(cache: Path, source: Path, revs: list[str], main: str | None, blobs: bool = True) -> Path:
    """Lay out models--owner--name like huggingface_hub does (blobs + symlinked snapshot files)."""
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    for rev in revs:
        snap = repo_dir / "snapshots" / rev
        snap.mkdir(parents=True)
        for name in ("model.onnx", "selected_tags.csv"):
            if blobs:
                blob = repo_dir / "blobs" / f"{rev}-{name}"
                blob.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / name, blob)
                os.symlink(os.path.relpath(blob, snap), snap / name)
            else:
                shutil.copy(source / name, snap / name)
    if main:
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(main)
    return repo_dir


@pytest.fixture
def tagger(tmp_path) -> Path:
    return make_tagger(tmp_path / "src", [("a", 0, 0.9)], size=16)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_repo_found_in_hf_hub_cache(monkeypatch, tmp_path, tagger, clean_env):
    cache = tmp_path / "hubcache"
    rev = "a" * 40
    _cache_repo(cache, tagger, [rev], main=rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    files = resolve_model(REPO)
    assert files.from_cache and files.folder == cache / f"models--SmilingWolf--wd-swinv2-tagger-v3/snapshots/{rev}"
    assert TaggerModel.load(files).width == 16


def test_repo_found_under_hf_home_and_default_cache(monkeypatch, tmp_path, tagger, clean_env):
    _cache_repo(tmp_path / "hfhome" / "hub", tagger, ["b" * 40], main="b" * 40, blobs=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert resolve_model(REPO).folder.name == "b" * 40
    monkeypatch.delenv("HF_HOME")
    _cache_repo(tmp_path / "home" / ".cache" / "huggingface" / "hub", tagger, ["c" * 40], main="c" * 40)
    assert resolve_model(REPO).folder.name == "c" * 40


def test_layout_fallback_without_huggingface_hub(monkeypatch, tmp_path, tagger, clean_env):
    """Without the library (and without refs/main) the newest complete snapshot is used."""
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    cache = tmp_path / "hubcache"
    repo_dir = _cache_repo(cache, tagger, ["d" * 40], main=None)
    incomplete = repo_dir / "snapshots" / ("e" * 40)
    incomplete.mkdir()
    (incomplete / "model.onnx").write_bytes(b"partial download")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert hub.find_in_cache(REPO) == repo_dir / "snapshots" / ("d" * 40)


def test_missing_repo_says_how_to_download(monkeypatch, tmp_path, clean_env):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelError) as info:
        resolve_model(REPO)
    message = str(info.value)
    assert f"huggingface-cli download {REPO} model.onnx selected_tags.csv" in message
    assert str(tmp_path / "empty") in message


def test_local_folder_wins_over_repo_id(monkeypatch, tmp_path, tagger, clean_env):
    local = tmp_path / "SmilingWolf" / "wd-swinv2-tagger-v3"
    shutil.copytree(tagger, local)
    files = resolve_model(REPO)  # relative path that exists: the folder, not the cache
    assert not files.from_cache and files.folder.resolve() == local.resolve()
