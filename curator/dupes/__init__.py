"""Exact and near duplicates, clustered, each with the reason and the member to keep.

Modules: ``search`` (pairs of 64-bit hashes within a distance, multi-index hashing), ``geometric`` (crops,
rotations and local edits from the stored thumbnails), ``clusters`` (links, clusters, the member to keep, the
flags). Import from here or from the submodules.
"""

from curator.dupes.clusters import Cluster, DupeSettings, Features, Link, duplicate_flags, find_clusters
from curator.dupes.search import near_pairs

__all__ = ["Cluster", "DupeSettings", "Features", "Link", "duplicate_flags", "find_clusters", "near_pairs"]
