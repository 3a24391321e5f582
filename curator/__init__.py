"""kiln's headless dataset engine: layout, index, health checks, buckets, captions and tags."""

__version__ = "0.1.0"
