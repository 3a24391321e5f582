"""Duplicate clustering: exact (bytes and pixels), near (pHash), keep suggestion, and the pair search."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator.dataset import Dataset
from curator.dupes import duplicate_flags, near_pairs
from tests.conftest import photo, save_photo


def _brute_force(hashes: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(distance <= threshold, 1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("threshold", [0, 3, 4, 7, 8, 10, 13, 16])
def test_near_pairs_equals_brute_force(threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    hashes = rng.integers(0, 2**63, 1500, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    for k in range(0, 600, 3):  # planted neighbours at every distance 0..16, plus a block of equal hashes
        flips = rng.choice(64, size=k % 17, replace=False)
        hashes[k + 1] = hashes[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    hashes[700:760] = hashes[699]
    i, j, d = near_pairs(hashes, threshold)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute_force(hashes, threshold)
    assert (d <= threshold).all()


def _best_partner_pairs(desc: np.ndarray, min_similarity: float, keep: int) -> set[tuple[int, int]]:
    """Every image's ``keep`` most similar partners at ``min_similarity`` or more, from the full matrix."""
    sims = desc @ desc.T
    np.fill_diagonal(sims, -np.inf)
    pairs = set()
    for i, row in enumerate(sims):
        for j in np.argsort(-row, kind="stable")[:keep]:
            if row[j] >= min_similarity:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return pairs


@pytest.mark.parametrize(("count", "keep", "min_similarity", "spread"),
                         [(900, 12, 0.5, 0.3), (900, 3, 0.0, 0.3), (600, 12, 0.9, 2.0), (7, 12, 0.1, 0.3), (2, 4, -1.0, 1.0)])
def test_geometric_candidates_equal_the_full_matrix(monkeypatch: pytest.MonkeyPatch, count: int, keep: int,
                                                    min_similarity: float, spread: float) -> None:
    """The candidate search correlates each pair once, block by block, and keeps only what can be among an image's
    best: the same pairs as ranking every image's row of the full similarity matrix (dense clusters included)."""
    from curator.dupes import geometric

    monkeypatch.setattr(geometric, "_BLOCK_ROWS", 128)  # many blocks, crowded rows and columns in each
    monkeypatch.setattr(geometric, "_COMPACT_PAIRS", 64)  # the candidates found so far are thinned many times
    rng = np.random.default_rng(count + keep)
    centres = rng.random((max(1, count // 40), 256)).astype(np.float32)
    desc = centres[rng.integers(0, len(centres), count)] + spread * rng.random((count, 256)).astype(np.float32)
    desc -= desc.mean(axis=1, keepdims=True)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    i, j, s = geometric.similar_pairs(desc, min_similarity, keep)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _best_partner_pairs(desc, min_similarity, keep)
    assert (i < j).all() and (s >= min_similarity).all()
    assert np.allclose(s, np.einsum("ij,ij->i", desc[i], desc[j]), atol=1e-5)


def test_window_signatures_do_not_depend_on_the_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    from curator.dupes import geometric

    rng = np.random.default_rng(5)
    thumbs = rng.integers(0, 256, (300, 64, 64), dtype=np.uint8)
    aspects = rng.uniform(0.5, 2.0, 300)
    whole = geometric.signatures(thumbs, aspects)
    monkeypatch.setattr(geometric, "_SIGNATURE_CHUNK", 64)
    assert (geometric.signatures(thumbs, aspects) == whole).all()
    assert (geometric.signatures(thumbs[7:8], aspects[7:8]) == whole[7:8]).all()


def test_indexed_and_chunked_stages_equal_the_copied_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Descriptors, detail images, pHash inputs, signatures and verification read ``thumbs[rows]`` a chunk at a
    time instead of copying 100,000 thumbnails: the same numbers as working on the copy at once."""
    from curator.dupes import geometric

    rng = np.random.default_rng(9)
    thumbs = rng.integers(0, 256, (400, 64, 64), dtype=np.uint8)
    rows = rng.permutation(400)[:250]
    copied = thumbs[rows]
    aspects = rng.uniform(0.5, 2.0, len(rows))
    whole_desc = geometric.descriptors(copied)
    whole_detail = geometric.high_pass(geometric.hash_inputs(copied))
    monkeypatch.setattr(geometric, "_CHUNK", 64)
    monkeypatch.setattr(geometric, "_SIGNATURE_CHUNK", 50)
    assert np.array_equal(geometric.descriptors(thumbs, rows), whole_desc)
    assert np.array_equal(geometric.hash_inputs(thumbs, rows), geometric.hash_inputs(copied))
    assert np.array_equal(geometric.high_pass(geometric.hash_inputs(thumbs, rows)), whole_detail)
    assert np.array_equal(geometric.signatures(thumbs, aspects, rows), geometric.signatures(copied, aspects))
    phash = rng.integers(0, 2**63, len(rows), dtype=np.uint64)
    candidates = [(k, (k + 1) % len(rows), geometric.VARIANTS[k % len(geometric.VARIANTS)]) for k in range(40)]
    detail = geometric.DetailImages(copied)
    assert (geometric.verify(thumbs, aspects, phash, geometric.DetailImages(thumbs, rows), candidates, 64, rows=rows)
            == geometric.verify(copied, aspects, phash, detail, candidates, 64))
    assert len(geometric.hash_inputs(thumbs, rows[:0])) == 0


def test_detail_images_per_chunk_of_pairs_equal_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The high-pass images are worked out for each chunk of pairs from the stored pHash inputs instead of being
    held for every image: each row the same bits whatever the batch, so the whole-frame and mirror links (and
    their detail similarities) are those of the whole array, at any chunk size."""
    from curator.dupes import clusters, geometric
    from curator.dupes.clusters import DupeSettings, Features
    from curator.scan.hashing import phash_bits

    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, (6, 64, 64)).astype(np.int16)
    copies = base[rng.integers(0, 6, 300)] + rng.integers(-12, 13, (300, 64, 64))
    copies[::3] = copies[::3, :, ::-1]  # every third one mirrored
    thumbs = np.clip(copies, 0, 255).astype(np.uint8)
    rows = np.arange(len(thumbs))
    small = geometric.hash_inputs(thumbs)
    whole = geometric.high_pass(small)
    detail = geometric.DetailImages(thumbs)
    picked = rng.permutation(len(thumbs))[:77]
    assert np.array_equal(detail.of(picked).view(np.uint32), whole[picked].view(np.uint32))
    assert np.array_equal(detail.smalls(picked[::-1]), small[picked[::-1]])  # made once, then kept
    assert int(detail._known.sum()) == 77  # only the images asked for were made
    images, at = detail.unique(np.concatenate([picked, picked[::-1]]))
    assert np.array_equal(images[at].view(np.uint32), whole[np.concatenate([picked, picked[::-1]])].view(np.uint32))
    features = Features(phash=phash_bits(small), mirror=phash_bits(geometric.hash_inputs(thumbs[:, :, ::-1].copy())),
                        thumbs=thumbs, valid=np.ones(len(thumbs), dtype=bool))
    settings = DupeSettings(threshold=12)
    whole_frame = clusters._whole_frame_links(features, rows, detail, settings)
    mirrors = clusters._mirror_links(features, rows, detail, settings)
    assert len(whole_frame) > 100 and len(mirrors) > 100
    for link in whole_frame:
        assert link.detail == float(np.einsum("ij,ij->i", whole[[link.a]], whole[[link.b]])[0])
    for link in mirrors:
        assert link.detail in (float(geometric.mirrored(whole[[link.a]])[0] @ whole[link.b]),
                               float(geometric.mirrored(whole[[link.b]])[0] @ whole[link.a]))
    monkeypatch.setattr(clusters, "_DETAIL_PAIRS", 7)
    monkeypatch.setattr(geometric, "_CHUNK", 5)
    assert clusters._whole_frame_links(features, rows, detail, settings) == whole_frame
    assert clusters._mirror_links(features, rows, detail, settings) == mirrors


def test_near_pairs_small_inputs() -> None:
    assert len(near_pairs(np.array([], dtype=np.uint64), 10)[0]) == 0
    assert len(near_pairs(np.array([5], dtype=np.uint64), 10)[0]) == 0
    i, j, d = near_pairs(np.array([2**64 - 1, 2**64 - 2], dtype=np.uint64), 1)
    assert (i.tolist(), j.tolist(), d.tolist()) == ([0], [1], [1])


@pytest.fixture(scope="module")
def dupe_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dupes") / "ds" / "1_set"
    big = photo("astronaut.png", (900, 900))
    save_photo(big, root / "astro.png")
    shutil.copyfile(root / "astro.png", root / "astro_bytes.png")  # same bytes
    big.save(root / "astro_pixels.png", compress_level=9)  # same pixels, other bytes
    big.convert("RGBA").save(root / "astro_rgba.webp", lossless=True)  # same pixels, other format
    save_photo(big.resize((600, 600), Image.Resampling.LANCZOS), root / "astro_small.jpg", quality=75)
    save_photo(big.resize((450, 450), Image.Resampling.BILINEAR), root / "astro_tiny.webp", quality=70)
    cat = photo("chelsea.png")
    save_photo(cat, root / "cat.png")
    save_photo(cat.resize((300, 200)), root / "cat_small.jpg", quality=85)
    save_photo(photo("coffee.png", (600, 400)), root / "coffee.jpg", quality=90)  # unique
    save_photo(photo("rocket.jpg", (400, 600)), root / "rocket.jpg", quality=90)  # unique
    return root.parent


def test_clusters_and_keep(dupe_dataset: Path) -> None:
    with Dataset.open(dupe_dataset) as ds:
        clusters = ds.duplicates()
        by_kind = {(c.kind, c.keep): c for c in clusters}
    prefix = "1_set/"
    assert by_kind
    exact_clusters = [c for c in clusters if c.kind == "exact"]
    assert len(exact_clusters) == 1
    (exact,) = exact_clusters
    assert set(exact.members) == {prefix + n for n in ("astro.png", "astro_bytes.png", "astro_pixels.png", "astro_rgba.webp")}
    # same resolution everywhere: the larger file is kept
    sizes = {m: (dupe_dataset / m).stat().st_size for m in exact.members}
    assert exact.keep == max(sizes, key=lambda m: (sizes[m], -ord(m[-1])))
    near = sorted((c for c in clusters if c.kind == "near"), key=lambda c: c.keep)
    assert [sorted(c.members) for c in near] == [
        sorted([exact.keep, prefix + "astro_small.jpg", prefix + "astro_tiny.webp"]),
        sorted([prefix + "cat.png", prefix + "cat_small.jpg"]),
    ]
    assert near[1].keep == prefix + "cat.png"  # highest resolution
    assert all(prefix + "coffee.jpg" not in c.members and prefix + "rocket.jpg" not in c.members for c in clusters)


def test_threshold_limits_near_clusters(dupe_dataset: Path) -> None:
    with Dataset.open(dupe_dataset) as ds:
        strict = ds.duplicates(threshold=0)
        records = {r.path: r for r in ds.images()}
    assert [c.kind for c in strict].count("exact") == 1  # pixel identity does not depend on the threshold
    for cluster in (c for c in strict if c.kind == "near"):
        keep = records[cluster.keep].phash
        assert all(records[m].phash == keep for m in cluster.members)


def test_pixel_digest_is_cached_in_the_index(dupe_dataset: Path) -> None:
    with Dataset.open(dupe_dataset) as ds:
        ds.duplicates()
        cached = ds.index.conn.execute("SELECT COUNT(*) FROM images WHERE pixel_sha IS NOT NULL").fetchone()[0]
    assert cached >= 3


def test_every_member_is_flagged_and_told_whether_to_keep(dupe_dataset: Path) -> None:
    with Dataset.open(dupe_dataset) as ds:
        clusters = ds.duplicates()
    flags = duplicate_flags(clusters)
    for cluster in clusters:
        mine = [f for f in flags if f.path in cluster.members and f"cluster {cluster.id} " in f.detail]
        assert len(mine) == len(cluster.members)
        keep = [f for f in mine if "keep this one" in f.detail]
        assert [f.path for f in keep] == [cluster.keep]
        assert all(cluster.keep in f.detail for f in mine if f.path != cluster.keep)


# ------------------------------------------------------------------------------------------ trainers' edits


EDITED = ("astronaut.png", "chelsea.png", "coffee.png")
UNRELATED = ("rocket.jpg", "motorcycle_left.png", "camera.png", "retina.jpg", "ihc.png", "hubble_deep_field.jpg",
             "moon.png", "coins.png", "brick.png", "grass.png")  # fmt: skip


@pytest.fixture(scope="module")
def edited_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import random

    from tests.image_edits import EDITS, save_edit

    folder = tmp_path_factory.mktemp("edits") / "ds" / "1_set"
    folder.mkdir(parents=True)
    for k, name in enumerate(EDITED):
        original = photo(name)
        save_photo(original, folder / f"{Path(name).stem}.png")
        for n, edit in enumerate(EDITS):
            save_edit(original, edit, random.Random(k * 100 + n), folder, f"{Path(name).stem}_{edit}")
    for name in UNRELATED:
        save_photo(photo(name), folder / f"other_{Path(name).stem}.jpg", quality=90)
    return folder.parent


def test_every_edit_lands_with_its_original_and_unrelated_photos_do_not(edited_dataset: Path) -> None:
    from tests.image_edits import EDITS

    with Dataset.open(edited_dataset) as ds:
        clusters = ds.duplicates()
    cluster_of: dict[str, set[int]] = {}
    for cluster in clusters:
        for member in cluster.members:
            cluster_of.setdefault(member.rpartition("/")[2].rpartition(".")[0], set()).add(cluster.id)

    def together(a: str, b: str) -> bool:
        # an exact group appears once in a near cluster, through its kept member
        linked = {c.id for c in clusters if any(m.rpartition("/")[2].startswith(a) for m in c.members)}
        return any(b in (m.rpartition("/")[2].rpartition(".")[0] for m in c.members) for c in clusters if c.id in linked)

    for name in EDITED:
        stem = Path(name).stem
        for edit in EDITS:
            assert together(stem, f"{stem}_{edit}"), f"{stem}_{edit} is not in a cluster with {stem}"
    for name in UNRELATED:
        assert f"other_{Path(name).stem}" not in cluster_of, f"{name} was clustered: {clusters}"
    stems = {Path(n).stem for n in EDITED}
    for cluster in clusters:  # and no cluster mixes two originals
        owners = {s for m in cluster.members for s in stems if m.rpartition("/")[2].startswith(s)}
        assert len(owners) == 1, cluster.members


def test_each_member_says_which_edit_matched(edited_dataset: Path) -> None:
    with Dataset.open(edited_dataset) as ds:
        clusters = ds.duplicates()
    why = {path.rpartition("/")[2].rpartition(".")[0]: reason for c in clusters for path, reason in c.why.items()}
    for stem in (Path(n).stem for n in EDITED):
        flip = why.get(f"{stem}_flip") or next(r for k, r in why.items() if r["matched"].endswith(f"{stem}_flip.jpg"))
        assert flip["how"] == "mirrored" and "mirrored" in flip["transform"]
        for edit, how, words in (("crop", "crop", "cropped"), ("rotate", "rotation", "rotated")):
            reason = why.get(f"{stem}_{edit}")
            if reason is not None and reason["how"] == how:
                assert words in reason["transform"] and reason["distance"] <= 10
        resized = why.get(f"{stem}_resize") or {}
        if resized.get("how") == "whole-frame":
            assert resized["transform"].startswith("resized")


def test_the_search_lets_go_of_the_thumbnails_and_reads_them_again(edited_dataset: Path) -> None:
    """The dataset's features can be read again, so the search drops the thumbnails while only their descriptors
    are needed and reads them again for the crop/rotation stages: the same clusters as with them held."""
    from curator.dupes import DupeSettings, Features, find_clusters

    with Dataset.open(edited_dataset) as ds:
        records = ds.images()
        features = ds.duplicate_features(records)
        held = Features(features.phash, features.mirror, features.thumbs.copy(), features.valid)
        reads: list[int] = []

        def reread() -> np.ndarray:
            reads.append(1)
            return ds.duplicate_features(records).thumbs

        released = Features(features.phash, features.mirror, features.thumbs, features.valid, reload_thumbs=reread)
        settings = DupeSettings(threshold=ds.config.near_threshold)
        found = find_clusters(records, pixel_digest=ds._pixel_digest, features=released, settings=settings)
        assert reads == [1] and any(c.kind == "near" for c in found)
        assert found == find_clusters(records, pixel_digest=ds._pixel_digest, features=held, settings=settings)
        assert found == ds.duplicates()
        assert np.array_equal(released.thumbs, held.thumbs)
        held.release_thumbs()  # without a way to read them again they are kept
        assert held.thumbs is not None and len(held.thumbs) == len(records)


def test_keep_rule_resolution_then_compression_then_age(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "ds" / "1_set"
    image = photo("chelsea.png")
    save_photo(image, folder / "a_lossy.jpg", quality=80)
    save_photo(image, folder / "b_lossless.png")
    save_photo(photo("coffee.png"), folder / "c_small.jpg", quality=70)
    save_photo(photo("coffee.png"), folder / "d_big.jpg", quality=97)
    save_photo(photo("rocket.jpg"), folder / "e_new.jpg", quality=90)
    save_photo(photo("rocket.jpg"), folder / "f_old.jpg", quality=91)
    os.utime(folder / "f_old.jpg", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.utime(folder / "e_new.jpg", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    with Dataset.open(tmp_path / "ds") as ds:
        clusters = {frozenset(m.rpartition("/")[2] for m in c.members): c for c in ds.duplicates()}
    chelsea = clusters[frozenset({"a_lossy.jpg", "b_lossless.png"})]
    assert chelsea.keep.endswith("b_lossless.png") and "lossless" in chelsea.keep_reason
    coffee = clusters[frozenset({"c_small.jpg", "d_big.jpg"})]
    assert coffee.keep.endswith("d_big.jpg") and "bytes/pixel" in coffee.keep_reason
    rocket = clusters[frozenset({"e_new.jpg", "f_old.jpg"})]
    assert "bytes/pixel" in rocket.keep_reason or "oldest" in rocket.keep_reason


def test_closest_variants_equal_the_whole_distance_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nearest variant of each candidate pair, worked out a chunk at a time: the minimum and first argmin
    of the whole (pairs x variants) table of bit distances."""
    from curator.dupes import geometric

    monkeypatch.setattr(geometric, "_PAIR_CHUNK", 7)
    rng = np.random.default_rng(3)
    sigs = rng.integers(0, 2**63, (50, len(geometric.VARIANTS)), dtype=np.uint64)
    sigs[:, 3] = sigs[:, 1]  # ties: the first of equals
    rows = rng.integers(0, 50, 200)
    targets = rng.integers(0, 2**63, 200, dtype=np.uint64)
    table = np.bitwise_count(sigs[rows] ^ targets[:, None])
    best, which = geometric.closest_variants(sigs, rows, targets)
    assert np.array_equal(best, table.min(axis=1)) and np.array_equal(which, table.argmin(axis=1))
    assert len(geometric.closest_variants(sigs, rows[:0], targets[:0])[0]) == 0


def test_most_promising_pairs_equal_the_pick_one_at_a_time() -> None:
    """At most two candidates per pair of components, the closest first then the earliest, none inside one
    component: the arrays give what picking one at a time in that order gives, ties and empty sets included."""
    from collections import defaultdict

    from curator.dupes.clusters import _most_promising

    rng = np.random.default_rng(5)
    for size, components, limit in ((0, 3, 4), (1, 1, 4), (5, 2, 64), (400, 9, 6), (3000, 40, 10)):
        best = rng.integers(0, 14, size).astype(np.uint8)
        first, second = rng.integers(0, components, size), rng.integers(0, components, size)
        chosen: dict[tuple[int, int], list[int]] = defaultdict(list)
        near = np.flatnonzero(best <= limit)
        for n in near[np.argsort(best[near], kind="stable")].tolist():
            a, b = int(first[n]), int(second[n])
            if a != b and len(chosen[(min(a, b), max(a, b))]) < 2:
                chosen[(min(a, b), max(a, b))].append(n)
        expected = sorted(n for picks in chosen.values() for n in picks)
        assert _most_promising(best, limit, first, second).tolist() == expected
