"""The pieces of the curator app's frame, one job each; ``tui/app.py`` puts them together.

``views`` (build on demand, prewarm while idle, switch), ``view_bar`` and ``status`` (the two lines around the
views), ``loader`` (open, index, scan, health checks), ``captions`` (edits made outside kiln), ``journal``
(undo, redo and how a write went), ``commands`` (help and the command palette, from tui/bindings.py),
``threads`` (handing results to the UI thread). Views and widgets never import these (an import contract).
"""
