"""Schedule checks: the ``[[train.phases]]`` fit the run's step count."""

from __future__ import annotations

from collections.abc import Iterator

from train.preflight.core import Context, Finding, check, error


@check("lr phases", stage="dataset")
def lr_phases(ctx: Context) -> Iterator[Finding]:
    """The phases with a length leave room for the open-ended one and add up to the run's steps."""
    from train.data.dataset import bucket_counts

    t = ctx.cfg.train
    if not t.phases or not ctx.items:
        return
    steps = t.step_math(bucket_counts(ctx.items), num_processes=ctx.num_processes)
    if not steps.total_steps:
        return
    try:
        t.phase_spans(steps.total_steps, steps.steps_per_epoch)
    except ValueError as exc:
        yield error("train.phases", str(exc).removeprefix("train.phases: "),
                    fix="leave one phase without steps/epochs (it takes the rest), or shorten the others")
