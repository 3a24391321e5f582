"""Caption tag engine: journal (undo/redo), bulk operations, query language, statistics."""
