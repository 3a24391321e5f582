"""Sample checks: the prompts to render (``[sample] prompts`` and kohya's sample-prompt file) parse, so a typo
in ``--w`` or a missing file fails before training, not at the first preview hours in."""

from __future__ import annotations

from collections.abc import Iterator

from train.preflight.core import Context, Finding, check, error, warning


@check("sample prompts")
def sample_prompts_parse(ctx: Context) -> Iterator[Finding]:
    """Every prompt of ``sample.prompts`` and ``sample.prompt_file`` (kohya's .txt / .toml / .json, per-prompt
    ``--n --w --h --d --s --l --ss``) parses; samples asked for with no prompt anywhere are a warning."""
    from train.prompts import PromptError
    from train.sample import sample_prompts

    sample = ctx.cfg.sample
    field = "sample.prompt_file" if sample.prompt_file is not None else "sample.prompts"
    if sample.prompt_file is not None and not sample.prompt_file.expanduser().is_file():
        yield error("sample.prompt_file", f"{sample.prompt_file} does not exist",
                    fix="--set sample.prompt_file=<your prompt file> (or remove the key)")
        return
    try:
        prompts = sample_prompts(sample)
    except PromptError as exc:
        text = str(exc)
        where, sep, problem = text.partition(": ")
        yield error(field, f"{where}: {problem}" if sep else text,
                    fix="fix that line (kohya's options: --n negative --w width --h height --d seed --s steps "
                        "--l cfg scale --ss sampler)")
        return
    asked = sample.every_n_steps or sample.every_n_epochs or sample.at_first
    if asked and not prompts:
        yield warning("sample.prompts", "samples are asked for (every_n_steps / every_n_epochs / at_first) but "
                      "there is no prompt: none will be rendered",
                      fix="--set 'sample.prompts=[\"a photo of <your token>\"]' (or sample.prompt_file)")
