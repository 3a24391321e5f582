"""Sample prompts as kohya writes them, and the samplers that render them: the one home of both, for the
trainer's previews and ``kiln lora grid``.

A prompt line is kohya's ``line_to_prompt_dict``: the prompt, then options ``--n negative prompt``, ``--w 512``,
``--h 768``, ``--d seed``, ``--s steps`` (1-1000), ``--l cfg scale`` and ``--ss sampler``. A prompt file
(kohya's ``--sample_prompts``) is ``.txt`` (one line a prompt; blank lines and ``#`` comments skipped),
``.toml`` (a ``[prompt]`` table of defaults and ``[[prompt.subset]]`` prompts) or ``.json`` (a list of lines
or tables); tables use kohya's keys ``prompt``, ``negative_prompt``, ``width``, ``height``, ``seed``,
``sample_steps``, ``scale``, ``sample_sampler``. Sizes must be multiples of 8. Pure Python.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

SamplerName = Literal["euler_a", "euler", "ddim", "dpmsolver++", "dpmsolver", "dpmsingle", "pndm", "lms", "heun",
                      "dpm_2", "dpm_2_a", "k_euler_a", "k_euler", "k_lms", "k_dpm_2", "k_dpm_2_a"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)
# kohya's get_my_scheduler: sampler name -> (diffusers scheduler class, extra config)
SAMPLERS: dict[str, tuple[str, dict[str, str]]] = {
    "euler_a": ("EulerAncestralDiscreteScheduler", {}), "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}), "k_euler": ("EulerDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}), "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}), "k_lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}), "k_dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}), "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
}
_TABLE_KEYS = {"prompt": "text", "negative_prompt": "negative", "width": "width", "height": "height",
               "seed": "seed", "sample_steps": "steps", "scale": "cfg_scale", "sample_sampler": "sampler"}
_FLAGS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "s": "steps", "l": "cfg_scale", "ss": "sampler"}


class PromptError(ValueError):
    """A prompt or prompt file kiln cannot use; the message names the line and the fix."""


@dataclass
class Prompt:
    """One prompt with kohya's per-prompt options (None: the renderer's default)."""

    text: str
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    sampler: str | None = None


def _set(prompt: Prompt, attr: str, value: object, where: str, flag: str) -> None:
    try:
        if attr in ("negative", "text"):
            setattr(prompt, attr, str(value))
        elif attr == "sampler":
            name = str(value).strip()
            if name not in SAMPLERS:
                raise PromptError(f"{where}: {flag} {name!r} is not a sampler kiln has; use one of "
                                  f"{', '.join(SAMPLER_NAMES)}")
            prompt.sampler = name
        elif attr == "cfg_scale":
            prompt.cfg_scale = float(str(value))
        else:
            number = int(str(value))
            if attr == "steps":
                number = max(1, min(1000, number))  # kohya clamps the steps
            if attr in ("width", "height") and (number < 64 or number % 8):
                raise PromptError(f"{where}: {flag} {number} is not a multiple of 8 of at least 64")
            setattr(prompt, attr, number)
    except ValueError as exc:
        if isinstance(exc, PromptError):
            raise
        raise PromptError(f"{where}: {flag} {str(value)!r} is not a number") from None


def parse_prompt_line(line: str, where: str = "prompt") -> Prompt:
    """One kohya prompt line (see the module docstring)."""
    parts = re.split(r"\s+--(?=\S)", " " + line.strip())
    prompt = Prompt(parts[0].strip())
    for part in parts[1:]:
        flag, _, value = part.partition(" ")
        attr = _FLAGS.get(flag.lower())
        if attr is None:
            raise PromptError(f"{where}: --{flag} is not an option kiln knows (it has --n --w --h --d --s --l --ss)")
        _set(prompt, attr, value.strip(), where, f"--{flag}")
    if not prompt.text:
        raise PromptError(f"{where}: the line has options but no prompt")
    return prompt


def prompt_from_table(table: dict[str, object], where: str) -> Prompt:
    """A prompt from kohya's table form (``.toml`` / ``.json``)."""
    prompt = Prompt("")
    for key, value in table.items():
        attr = _TABLE_KEYS.get(key)
        if attr is None:
            raise PromptError(f"{where}: {key!r} is not a prompt key kiln knows ({', '.join(_TABLE_KEYS)})")
        _set(prompt, attr, value, where, key)
    if not prompt.text.strip():
        raise PromptError(f"{where}: no prompt")
    return prompt


def read_prompt_file(path: Path) -> list[Prompt]:
    """Every prompt of a kohya sample-prompt file (``.txt``, ``.toml`` or ``.json``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot read ({exc})") from None
    prompts: list[Prompt] = []
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PromptError(f"{path}: not valid TOML ({exc})") from None
        defaults = data.get("prompt")
        if not isinstance(defaults, dict) or not isinstance(defaults.get("subset"), list):
            raise PromptError(f"{path}: kohya's prompt TOML is a [prompt] table with [[prompt.subset]] prompts")
        base = {k: v for k, v in defaults.items() if k != "subset"}
        for number, subset in enumerate(defaults["subset"], 1):
            if not isinstance(subset, dict):
                raise PromptError(f"{path}: prompt.subset {number} is not a table")
            prompts.append(prompt_from_table({**base, **subset}, f"{path}: prompt.subset {number}"))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise PromptError(f"{path}: a prompt JSON is a list of prompt lines or tables")
        for number, entry in enumerate(data, 1):
            where = f"{path}: entry {number}"
            if isinstance(entry, str):
                prompts.append(parse_prompt_line(entry, where))
            elif isinstance(entry, dict):
                prompts.append(prompt_from_table(entry, where))
            else:
                raise PromptError(f"{where}: a prompt line or table, not {type(entry).__name__}")
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                prompts.append(parse_prompt_line(line, f"{path}:{number}"))
    if not prompts:
        raise PromptError(f"{path} holds no prompt (one prompt a line; # starts a comment)")
    return prompts
