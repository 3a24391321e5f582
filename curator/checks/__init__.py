"""Health checks. Each finding is a ``Flag(path, kind, detail)``; kinds are listed in ``curator.records``.

* ``images``: file and size findings (stored probe flags + low-res, tiny, extreme-aspect, too-large).
* ``quality``: image quality from the scan's statistics (blurry, too-dark, overexposed, low-information,
  grayscale, odd-aspect, heavy-jpeg, letterbox, alpha), each with a score.
* ``watermark``: marks repeated at the same place across a set, from the scan's edge bitmaps (scored);
  ``text-heavy`` comes from the optional text detector, ``curator.textdetect``.
* ``captions``: caption files (missing, empty, orphan, both, encoding, duplicate tags, multiline).
* duplicates come from ``curator.dupes``.
"""

from curator.checks.captions import caption_flags
from curator.checks.images import SizeRules, image_flags
from curator.checks.quality import quality_flags

__all__ = ["SizeRules", "caption_flags", "image_flags", "quality_flags"]
