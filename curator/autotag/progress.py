"""A rich progress bar with images/s on stderr; silent when stderr is not a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

ProgressFactory = Callable[[int, int], Callable[[int], None]]


@contextlib.contextmanager
def progress_factory(enabled: bool, label: str = "autotag") -> Iterator[ProgressFactory | None]:
    """Yields `start(total, done) -> advance(n)`, or None when disabled (pipes, --json, tests)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            speed = task.completed / elapsed if elapsed and task.completed else None
            return Text(f"{speed:6.1f} img/s" if speed else "    -- img/s", style="progress.data.speed")

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:

        def start(total: int, done: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total, completed=done)
            return lambda n: bar.advance(task, n)

        yield start
