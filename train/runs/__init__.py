"""Run management: find training runs, tell their state (incl. dead ones), stop / save / resume them, and show
them live. Reads only the run directory format of docs/RUNS.md; never imports Textual or torch.

- ``discover``: the runs kiln knows (``./runs``, a registry of launched runs in the user data dir), by name.
- ``state``: a run's state, progress and outputs from ``status.json`` + ``events.jsonl``; dead detection.
- ``tail`` / ``track``: follow ``events.jsonl`` and fold the events into what a display shows.
- ``control``: stop, save now, resume, launch (always detached).
- ``chart`` / ``live``: the loss chart and the rich live display (``kiln train`` foreground, ``kiln watch``).
- ``cli``: ``kiln runs``, ``kiln watch``, ``kiln stop``, ``kiln resume``.
"""
