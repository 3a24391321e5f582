"""Scanning: walk the dataset, probe changed images in parallel processes, keep the index current.

Submodules: ``config`` (``ScanConfig``), ``probe`` (one file), ``hashing`` (pHash), ``scanner`` (the walk and
the incremental, parallel scan). Import from the submodules; this package file stays light.
"""
