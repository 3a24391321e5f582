"""Duplicate clusters: which images are copies of which, why, and which one to keep.

* exact: the same bytes (sha256), or the same decoded pixels (a PNG re-saved with other compression, a format
  conversion done losslessly). Pixels are hashed in full only for same-size images whose pHashes are within a
  few bits, and that digest is cached in the index.
* near: a link is one of
  - *whole frame*: pHashes within ``threshold`` bits (resized, re-encoded, brightness/contrast changed), the
    fine structure agreeing (the detail check removes the rare unrelated pairs a 64-bit hash confuses, such as
    two dark shots dominated by the same smooth light);
  - *mirrored*: one image's mirror pHash within ``threshold`` bits of the other's pHash;
  - *crop, rotation or local edit*: found by ``curator.dupes.geometric`` and verified with the exact pHash of
    the matching window.
  Links are connected into clusters. Exact groups take part through their kept member only.

Each cluster suggests the member to keep: the largest resolution, then the least compressed (a lossless file,
then the most bytes per pixel), then the oldest (modification time), then the first path. Every other member
says which member it matched, how (the transform) and at what pHash distance.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from curator.dupes import geometric
from curator.dupes.search import near_pairs
from curator.records import Flag, ImageRecord

PIXEL_CANDIDATE_DISTANCE = 6  # pHash bits within which identical pixels are looked for
SAME_THUMB_MAX = 2  # a lossless WebP's thumbnail differs from its PNG's by rounding only
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF", "GIF"})
_DETAIL_PAIRS = 8192  # pairs whose detail images are worked out at once (at most 2 x 8,192 x 4 KB, and the gathers)


@dataclass(frozen=True, slots=True)
class DupeSettings:
    """How hard the near-duplicate search looks (``ScanConfig.near_threshold`` / ``geometric``; the rest were
    chosen with ``bench/bench_dupes.py``, see docs/DATASET.md)."""

    threshold: int = 8  # whole-frame and mirror pHash distance
    geometric: bool = True  # look for crops, rotations and local edits
    whole_frame_detail: float = 0.15  # detail similarity a whole-frame link must reach (beyond 4 bits)
    candidate_similarity: float = 0.7  # descriptor correlation of a geometric candidate
    candidates_per_image: int = 12
    signature_distance: int = 10  # a variant signature within this many bits of the other pHash
    geometric_distance: int = 10  # exact pHash distance of the verified window
    geometric_detail: float = 0.35  # detail similarity of the verified window
    edit_distance: int = 16  # whole frames this far apart count as a local edit when the detail agrees
    edit_detail: float = 0.5


class Features:
    """What the near-duplicate search reads, row-aligned with the records it is given: ``phash`` and ``mirror``
    (n,) uint64, ``thumbs`` (n, 64, 64) uint8, ``valid`` (n,) (the image decoded and has all three).

    ``reload_thumbs``: how to read the same thumbnails again (``Dataset.duplicate_features``: from the index).
    With it the search lets go of them (``release_thumbs``) while it needs only their descriptors, and
    ``thumbs`` reads them again when next asked: 0.4 GB less at the peak of 100,000 images, for ~2 s."""

    __slots__ = ("_reload", "_thumbs", "mirror", "phash", "valid")

    def __init__(self, phash: NDArray[np.uint64], mirror: NDArray[np.uint64], thumbs: NDArray[np.uint8],
                 valid: NDArray[np.bool_], reload_thumbs: Callable[[], NDArray[np.uint8]] | None = None) -> None:
        self.phash, self.mirror, self.valid = phash, mirror, valid
        self._thumbs: NDArray[np.uint8] | None = thumbs
        self._reload = reload_thumbs

    @property
    def thumbs(self) -> NDArray[np.uint8]:
        if self._thumbs is None:
            assert self._reload is not None  # released only when they can be read again
            self._thumbs = self._reload()
        return self._thumbs

    def release_thumbs(self) -> None:
        """Let go of the thumbnails when they can be read again; a no-op without ``reload_thumbs``."""
        if self._reload is not None:
            self._thumbs = None


@dataclass(frozen=True, slots=True)
class Link:
    """Why two images are duplicates. ``a`` and ``b`` index the records."""

    a: int
    b: int
    how: str  # "bytes" | "pixels" | "whole-frame" | "mirrored" | "crop" | "rotation" | "edit"
    distance: int = 0  # pHash bits (of the matching window for crop/rotation)
    detail: float = 1.0
    window: str = ""  # crop/rotation: what part of ``a`` matched ``b``


@dataclass(slots=True)
class Cluster:
    """A group of duplicates. ``members`` includes ``keep`` (first); paths are posix, relative to the root.

    ``why[path]`` says, for every member but ``keep``, which member it matched, how and at what distance;
    ``keep_reason`` why ``keep`` was chosen.
    """

    id: int
    kind: str  # "exact" | "near"
    keep: str
    members: list[str]
    distance: int = 0  # largest pHash distance of a linking pair (near clusters)
    why: dict[str, dict[str, object]] = field(default_factory=dict)
    keep_reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "keep": self.keep,
            "members": list(self.members),
            "distance": self.distance,
            "keep_reason": self.keep_reason,
            "why": {path: dict(reason) for path, reason in self.why.items()},
        }


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[int, list[int]]:
        result: dict[int, list[int]] = defaultdict(list)
        for item in range(len(self.parent)):
            result[self.find(item)].append(item)
        return result


# ------------------------------------------------------------------------------------------ keeping one


def _bytes_per_pixel(record: ImageRecord) -> float:
    return record.size / record.pixels if record.pixels else 0.0


def keep_order(record: ImageRecord) -> tuple[int, int, float, int, str]:
    """Sort key of the member to keep (smallest first): resolution, lossless, bytes per pixel, age, path."""
    return (
        -record.pixels,
        0 if record.format in LOSSLESS_FORMATS else 1,
        -_bytes_per_pixel(record),
        record.mtime_ns,
        record.path,
    )


def _keeper(records: Sequence[ImageRecord], members: list[int]) -> int:
    return min(members, key=lambda k: keep_order(records[k]))


def _keep_reason(records: Sequence[ImageRecord], keep: int, members: list[int]) -> str:
    """Which rule chose ``keep`` over the runner-up."""
    others = sorted((k for k in members if k != keep), key=lambda k: keep_order(records[k]))
    if not others:
        return ""
    a, b = records[keep], records[others[0]]
    if a.pixels != b.pixels:
        return f"largest resolution ({a.width}x{a.height})"
    if (a.format in LOSSLESS_FORMATS) != (b.format in LOSSLESS_FORMATS):
        return f"same resolution, least compressed (lossless {a.format})"
    if _bytes_per_pixel(a) != _bytes_per_pixel(b):
        return f"same resolution, least compressed ({_bytes_per_pixel(a):.2f} bytes/pixel)"
    if a.mtime_ns != b.mtime_ns:
        return "same resolution and compression, oldest file"
    return "same resolution, compression and age; first path"


# ------------------------------------------------------------------------------------------ describing a link


def describe(link: Link, records: Sequence[ImageRecord], towards: int) -> str:
    """A sentence saying how ``towards`` (one end of ``link``) differs from the other end."""
    other = link.a if towards == link.b else link.b
    mine, theirs = records[towards], records[other]
    if link.how == "bytes":
        return "identical bytes"
    if link.how == "pixels":
        return f"identical pixels ({theirs.format} -> {mine.format})" if mine.format != theirs.format else "identical pixels"
    parts: list[str] = []
    if link.how == "mirrored":
        parts.append("mirrored")
    elif link.how in ("crop", "rotation"):
        if towards == link.b:
            parts.append(link.window)  # b is the window of a
        else:
            parts.append(f"uncropped original of a {link.window.replace('cropped ', 'crop of ')}"
                         if link.how == "crop" else f"original of a copy {link.window}")
    elif link.how == "edit":
        parts.append("local edit (text, watermark, retouch) over the same frame")
    if (mine.width, mine.height) != (theirs.width, theirs.height):
        parts.append(f"{'resized' if link.how in ('whole-frame', 'mirrored', 'edit') else 'size'} "
                     f"{theirs.width}x{theirs.height} -> {mine.width}x{mine.height}")
    if mine.format != theirs.format:
        parts.append(f"re-encoded {theirs.format} -> {mine.format}")
    elif mine.size != theirs.size and not parts:
        parts.append("re-encoded or edited")
    return ", ".join(parts) if parts else "near-identical"


# ------------------------------------------------------------------------------------------ finding links


def _whole_frame_links(
    features: Features, hashed: NDArray[np.int64], detail: geometric.DetailImages, settings: DupeSettings
) -> list[Link]:
    pi, pj, pd = near_pairs(features.phash[hashed], settings.threshold)
    agreement = np.empty(len(pi), dtype=np.float32)
    for start in range(0, len(pi), _DETAIL_PAIRS):  # the pairs' detail images a chunk at a time
        part = slice(start, start + _DETAIL_PAIRS)
        images, at = detail.unique(np.concatenate([pi[part], pj[part]]))
        m = len(pi[part])
        agreement[part] = np.einsum("ij,ij->i", images[at[:m]], images[at[m:]])
    return [
        Link(int(hashed[a]), int(hashed[b]), "whole-frame", int(d), float(s))
        for a, b, d, s in zip(pi.tolist(), pj.tolist(), pd.tolist(), agreement.tolist(), strict=True)
        if d <= 4 or s >= settings.whole_frame_detail
    ]


def _mirror_links(
    features: Features, hashed: NDArray[np.int64], detail: geometric.DetailImages, settings: DupeSettings
) -> list[Link]:
    n = len(hashed)
    both = np.concatenate([features.phash[hashed], features.mirror[hashed]])
    pi, pj, pd = near_pairs(both, settings.threshold)
    pairs = []
    for x, y, d in zip(pi.tolist(), pj.tolist(), pd.tolist(), strict=True):
        if (x < n) == (y < n):
            continue  # pHash-pHash pairs are whole-frame links; mirror-mirror pairs repeat them
        a, b = (x, y - n) if x < n else (y, x - n)
        if a != b:  # a symmetric image matches its own mirror
            pairs.append((a, b, d))
    similarities: list[float] = []
    for start in range(0, len(pairs), _DETAIL_PAIRS):  # the pairs' detail images a chunk at a time
        part = pairs[start : start + _DETAIL_PAIRS]
        images, at = detail.unique(np.array([[a for a, _b, _d in part], [b for _a, b, _d in part]], dtype=np.int64))
        flipped = geometric.mirrored(images)  # the high-pass image of a mirror is the mirrored high-pass image
        similarities += [float(flipped[x] @ images[y]) for x, y in zip(at[: len(part)].tolist(),
                                                                        at[len(part) :].tolist(), strict=True)]
    links: dict[tuple[int, int], Link] = {}
    for (a, b, d), similarity in zip(pairs, similarities, strict=True):
        if similarity < settings.whole_frame_detail:
            continue
        key = (min(a, b), max(a, b))
        if key not in links or links[key].distance > d:
            links[key] = Link(int(hashed[key[0]]), int(hashed[key[1]]), "mirrored", int(d), similarity)
    return list(links.values())


def _geometric_links(
    records: Sequence[ImageRecord],
    features: Features,
    hashed: NDArray[np.int64],
    detail: geometric.DetailImages,
    settings: DupeSettings,
    component: NDArray[np.int64],
) -> list[Link]:
    """Crop, rotation and edit links between images not linked yet (``component`` per position of ``hashed``:
    the clusters the whole-frame and mirror links already make). Only the two most promising candidate pairs
    between two components are verified."""
    phash = features.phash[hashed]
    desc = geometric.descriptors(features.thumbs, hashed)
    features.release_thumbs()  # the similarity search needs only the descriptors: the thumbnails are read again
    ci, cj, _cs = geometric.similar_pairs(desc, settings.candidate_similarity, settings.candidates_per_image)
    del desc  # 0.1 GB at 100,000 images, not needed by the stages below
    if len(ci) == 0:
        return []
    thumbs = features.thumbs  # indexed through ``hashed``, never copied whole
    aspects = np.array([records[k].width / records[k].height if records[k].height else 1.0 for k in hashed])
    members = np.unique(np.concatenate([ci, cj]))  # only images in a candidate pair need their windows' signatures
    slot = np.zeros(len(hashed), dtype=np.int64)
    slot[members] = np.arange(len(members))
    sigs = geometric.signatures(thumbs, aspects[members], hashed[members])
    best_f, which_f = geometric.closest_variants(sigs, slot[ci], phash[cj])  # variants of i against j's whole frame
    best_b, which_b = geometric.closest_variants(sigs, slot[cj], phash[ci])
    del sigs  # 0.16 GB at 100,000 crowded images, before the verification's windows
    picked = _most_promising(np.minimum(best_f, best_b), settings.signature_distance, component[ci], component[cj])
    forward = best_f[picked] <= best_b[picked]  # i's window against j's whole frame, else the other way round
    candidates = [
        (original, copy, geometric.VARIANTS[variant])
        for original, copy, variant in zip(np.where(forward, ci[picked], cj[picked]).tolist(),
                                           np.where(forward, cj[picked], ci[picked]).tolist(),
                                           np.where(forward, which_f[picked], which_b[picked]).tolist(), strict=True)
    ]  # fmt: skip
    hopeless = max(settings.geometric_distance, settings.edit_distance) + 2
    checked = geometric.verify(thumbs, aspects, phash, detail, candidates, hopeless, rows=hashed)
    links = []
    for (original, copy, _v), (variant, distance, similarity) in zip(candidates, checked, strict=True):
        a, b = int(hashed[original]), int(hashed[copy])
        if variant.identity:
            if distance <= settings.edit_distance and similarity >= settings.edit_detail:
                links.append(Link(a, b, "edit", distance, similarity))
        elif distance <= settings.geometric_distance and similarity >= settings.geometric_detail:
            links.append(Link(a, b, "rotation" if variant.angle else "crop", distance, similarity, variant.describe()))
    return links


def _most_promising(best: NDArray[np.uint8], limit: int, first: NDArray[np.int64], second: NDArray[np.int64],
                    per_pair: int = 2) -> NDArray[np.int64]:
    """The candidate pairs to verify, ascending: those whose closest window signature is within ``limit`` bits,
    at most ``per_pair`` between two components (``first``/``second``: each pair's images' components; the
    closest first, then the earliest), none within one component; in arrays, without a Python object per pair."""
    near = np.flatnonzero((best <= limit) & (first != second))
    order = near[np.argsort(best[near], kind="stable")]  # closest first, then by position
    low, high = np.minimum(first[order], second[order]), np.maximum(first[order], second[order])
    key = low * (int(high.max(initial=0)) + 1) + high
    by_pair = np.argsort(key, kind="stable")  # each pair of components together, in the order above
    grouped, keys = order[by_pair], key[by_pair]
    among_first = np.ones(len(grouped), dtype=bool)
    among_first[per_pair:] = keys[per_pair:] != keys[:-per_pair]
    return np.sort(grouped[among_first])


def _may_share_pixels(records: Sequence[ImageRecord], features: Features | None, a: int, b: int) -> bool:
    """Whether two same-size files can hold identical pixels, judged without decoding them: two lossless files;
    the same format with identical thumbnails (a copy with its metadata stripped); or a lossless file and a
    WebP (lossless WebP) with thumbnails within rounding. A JPEG re-saved as PNG stays a near duplicate."""
    fa, fb = records[a].format, records[b].format
    lossless_a, lossless_b = fa in LOSSLESS_FORMATS, fb in LOSSLESS_FORMATS
    if lossless_a and lossless_b:
        return True
    if features is None or not (features.valid[a] and features.valid[b]):
        return fa == fb
    difference = int(np.abs(features.thumbs[a].astype(np.int16) - features.thumbs[b].astype(np.int16)).max())
    if fa == fb:
        return difference == 0
    webp = b if lossless_a and fb == "WEBP" else a if lossless_b and fa == "WEBP" else None
    return webp is not None and difference <= SAME_THUMB_MAX and _lossless_webp(records[webp])


def _lossless_webp(record: ImageRecord) -> bool:
    """A WebP whose image data is a VP8L (lossless) bitstream, from the first chunks of the file."""
    try:
        with open(record.abs_path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head[12:16] == b"VP8L" or (head[12:16] == b"VP8X" and b"VP8L" in head[30:64])


def _exact_groups(
    records: Sequence[ImageRecord],
    pixel_digest: Callable[[ImageRecord], str | None] | None,
    features: Features | None = None,
) -> tuple[_UnionFind, list[Link]]:
    n = len(records)
    exact = _UnionFind(n)
    links: list[Link] = []
    by_sha: dict[str, int] = {}
    for k, record in enumerate(records):
        if record.size == 0 or not record.sha256:
            continue
        first = by_sha.setdefault(record.sha256, k)
        if first != k:
            exact.union(first, k)
            links.append(Link(first, k, "bytes"))
    if pixel_digest is None:
        return exact, links
    hashed = [k for k, r in enumerate(records) if r.phash is not None]
    hashes = np.array([records[k].phash for k in hashed], dtype=np.uint64)
    pi, pj, _pd = near_pairs(hashes, PIXEL_CANDIDATE_DISTANCE)
    digests: dict[int, str | None] = {}
    for x, y in zip(pi.tolist(), pj.tolist(), strict=True):
        a, b = hashed[x], hashed[y]
        ra, rb = records[a], records[b]
        if (ra.width, ra.height) != (rb.width, rb.height) or exact.find(a) == exact.find(b):
            continue
        if not _may_share_pixels(records, features, a, b):
            continue
        for k in (a, b):
            if k not in digests:
                digests[k] = pixel_digest(records[k])
        if digests[a] is not None and digests[a] == digests[b]:
            exact.union(a, b)
            links.append(Link(a, b, "pixels"))
    return exact, links


def _explain(
    records: Sequence[ImageRecord], keep: int, members: list[int], links: list[Link]
) -> tuple[dict[str, dict[str, object]], int]:
    """Each member's link towards ``keep`` (breadth first over the links), and the largest link distance."""
    inside = set(members)
    adjacency: dict[int, list[Link]] = defaultdict(list)
    for link in links:
        if link.a in inside and link.b in inside:
            adjacency[link.a].append(link)
            adjacency[link.b].append(link)
    why: dict[str, dict[str, object]] = {}
    seen = {keep}
    queue = deque([keep])
    largest = 0
    while queue:
        node = queue.popleft()
        for link in sorted(adjacency[node], key=lambda lk: lk.distance):
            other = link.b if link.a == node else link.a
            if other in seen:
                continue
            seen.add(other)
            queue.append(other)
            largest = max(largest, link.distance)
            why[records[other].path] = {
                "matched": records[node].path,
                "how": link.how,
                "transform": describe(link, records, other),
                "distance": link.distance,
            }
    return why, largest


def find_clusters(
    records: Sequence[ImageRecord],
    threshold: int | None = None,
    pixel_digest: Callable[[ImageRecord], str | None] | None = None,
    features: Features | None = None,
    settings: DupeSettings | None = None,
) -> list[Cluster]:
    """Cluster exact and near duplicates among ``records``.

    ``features`` (row-aligned; ``Dataset.duplicate_features()``) enable the detail check, mirror, crop,
    rotation and edit links; without them near links are whole-frame pHash distances only (from the records).
    ``pixel_digest(record)`` returns a hash of the decoded pixels (cached by the caller); it is called only for
    same-size images whose pHashes are within ``PIXEL_CANDIDATE_DISTANCE`` bits and whose bytes differ.
    """
    settings = settings or DupeSettings()
    if threshold is not None and settings.threshold != threshold:
        settings = replace(settings, threshold=threshold)
    n = len(records)
    exact, exact_links = _exact_groups(records, pixel_digest, features)
    clusters: list[Cluster] = []
    representative = list(range(n))
    for members in exact.groups().values():
        keep = _keeper(records, members)
        for k in members:
            representative[k] = keep
        if len(members) > 1:
            ordered = [keep] + sorted((k for k in members if k != keep), key=lambda k: records[k].path)
            why, _ = _explain(records, keep, members, exact_links)
            clusters.append(
                Cluster(0, "exact", records[keep].path, [records[k].path for k in ordered], 0, why,
                        _keep_reason(records, keep, members))
            )  # fmt: skip
    near_links = _near_links(records, features, settings, representative)
    near = _UnionFind(n)
    for link in near_links:
        near.union(link.a, link.b)
    for members in near.groups().values():
        members = [k for k in members if representative[k] == k]
        if len(members) < 2:
            continue
        keep = _keeper(records, members)
        ordered = [keep] + sorted((k for k in members if k != keep), key=lambda k: records[k].path)
        why, largest = _explain(records, keep, members, near_links)
        clusters.append(
            Cluster(0, "near", records[keep].path, [records[k].path for k in ordered], largest, why,
                    _keep_reason(records, keep, members))
        )  # fmt: skip
    clusters.sort(key=lambda c: (c.kind != "exact", c.keep))
    for number, cluster in enumerate(clusters, start=1):
        cluster.id = number
    return clusters


def _near_links(
    records: Sequence[ImageRecord], features: Features | None, settings: DupeSettings, representative: list[int]
) -> list[Link]:
    """Near links between exact-group representatives."""
    reps = np.array([k for k in range(len(records)) if representative[k] == k], dtype=np.int64)
    if features is None:
        hashed = np.array([k for k in reps.tolist() if records[k].phash is not None], dtype=np.int64)
        hashes = np.array([records[k].phash for k in hashed.tolist()], dtype=np.uint64)
        pi, pj, pd = near_pairs(hashes, settings.threshold)
        return [Link(int(hashed[a]), int(hashed[b]), "whole-frame", int(d)) for a, b, d in zip(pi, pj, pd, strict=True)]
    hashed = reps[features.valid[reps]]
    # the pHash inputs of the images a pair needs are made and kept (1 KB an image), their float32 high-pass
    # images (4 KB) worked out per chunk of pairs
    detail = geometric.DetailImages(lambda: features.thumbs, hashed)  # asks each time: they may be let go
    links = _whole_frame_links(features, hashed, detail, settings)
    links += _mirror_links(features, hashed, detail, settings)
    if settings.geometric:
        position = {int(k): n for n, k in enumerate(hashed.tolist())}
        joined = _UnionFind(len(hashed))
        for link in links:
            joined.union(position[link.a], position[link.b])
        component = np.array([joined.find(n) for n in range(len(hashed))], dtype=np.int64)
        links += _geometric_links(records, features, hashed, detail, settings, component)
    return links


def duplicate_flags(clusters: Sequence[Cluster]) -> list[Flag]:
    """One flag per cluster member: which cluster, why, and whether this is the member to keep."""
    flags = []
    for cluster in clusters:
        kind = "exact-duplicate" if cluster.kind == "exact" else "near-duplicate"
        size = len(cluster.members)
        for path in cluster.members:
            if path == cluster.keep:
                verdict = f"keep this one ({cluster.keep_reason or 'the best of the cluster'})"
                what = "identical bytes or pixels" if cluster.kind == "exact" else f"pHash within {cluster.distance} bits"
            else:
                reason = cluster.why.get(path, {})
                what = f"{reason.get('transform', 'a copy')} of {reason.get('matched', cluster.keep)}"
                if cluster.kind == "near":
                    what += f", pHash {reason.get('distance', '?')} bits"
                verdict = f"suggested to remove; keep {cluster.keep}"
            flags.append(Flag(path, kind, f"cluster {cluster.id} ({size} images, {what}): {verdict}"))
    return flags
