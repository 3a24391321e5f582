"""The user's keymap: ``<config dir>/keymap.toml`` points binding ids (tui/bindings.py) at other keys.

::

    # ~/.config/kiln/keymap.toml  (KILN_CONFIG_DIR overrides the folder)
    "app.undo" = "ctrl+z"              # one key, or several: "u,ctrl+z", or a list: ["u", "ctrl+z"]
    [images]                           # a table per context is the same as "images.down" = ...
    down = "down,j,ctrl+n"

Every entry is checked before the app starts: an unknown id, a key Textual cannot produce, a wrong value type
or two bindings of one place on the same key gives a one-line problem (shown when the app opens and at the top
of the help screen) and that entry is ignored; the rest of the file still applies. Nothing here raises.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tui.bindings import Context, Key, all_keys, contexts
from tui.config import config_dir

KEYMAP_NAME = "keymap.toml"
MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")
KEY_NAMES_HINT = ("a character (a, K, ?) or a name: enter, escape, tab, space, backspace, delete, insert, home, end, "
                  "pageup, pagedown, up, down, left, right, f1…f24, slash, comma…")


def keymap_path() -> Path:
    return config_dir() / KEYMAP_NAME


@dataclass
class Keymap:
    """The valid overrides (binding id → Textual key string) and the problems found reading the file."""

    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def keys(self, ctx: Context, key: Key) -> str:
        """The keys a binding answers to now: the user's, or its default."""
        return self.overrides.get(ctx.binding_id(key), key.keys)

    def label(self, ctx: Context, key: Key) -> str:
        return key_label(self.keys(ctx, key))


def load_keymap(path: Path | None = None) -> Keymap:
    """Read and check the keymap file (a missing file is an empty keymap)."""
    path = keymap_path() if path is None else path
    keymap = Keymap(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return keymap
    except (OSError, UnicodeDecodeError) as exc:
        keymap.problems.append(f"{path}: cannot be read ({exc}); default keys used")
        return keymap
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        keymap.problems.append(f"{path}: not valid TOML ({exc}); default keys used")
        return keymap
    keymap.overrides, keymap.problems = check_keymap(data, path.name)
    return keymap


def check_keymap(data: Mapping[str, object], source: str = KEYMAP_NAME) -> tuple[dict[str, str], list[str]]:
    """The valid overrides in ``data`` (parsed TOML) and a message for each entry that is not."""
    import difflib

    known = all_keys()
    overrides: dict[str, str] = {}
    problems: list[str] = []
    for binding_id, value in _flatten(data):
        if binding_id not in known:
            close = difflib.get_close_matches(binding_id, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (`?` in kiln lists the keys; docs/TUI.md the ids)"
            problems.append(f"{source}: unknown binding id {binding_id!r}{hint}; ignored")
            continue
        keys = _key_list(value)
        if keys is None:
            problems.append(f"{source}: {binding_id}: expected a key such as \"ctrl+e\" or a list of keys, "
                            f"got {value!r}; ignored")
            continue
        bad = [(k, why) for k in keys if (why := check_key(k)) is not None]
        if bad:
            key, why = bad[0]
            problems.append(f"{source}: {binding_id}: {key!r} {why}; ignored")
            continue
        overrides[binding_id] = ",".join(keys)
    for binding_id, message in _clashes(overrides):
        overrides.pop(binding_id, None)
        problems.append(f"{source}: {message}; {binding_id} ignored")
    return overrides, problems


def _flatten(data: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    """``{"images": {"down": "j"}}`` and ``{"images.down": "j"}`` both give ``("images.down", "j")``."""
    out: list[tuple[str, object]] = []
    for name, value in data.items():
        full = f"{prefix}{name}"
        if isinstance(value, dict):
            out.extend(_flatten(value, full + "."))
        else:
            out.append((full, value))
    return out


def _key_list(value: object) -> list[str] | None:
    """The keys of one entry ("u,ctrl+z" or ["u", "ctrl+z"]); None when it is neither."""
    if isinstance(value, str):
        return [p.strip() for p in value.split(",")]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(v).strip() for v in value]
    return None


def check_key(key: str) -> str | None:
    """Why ``key`` is not a key Textual can report (None: it is one)."""
    from textual.keys import REPLACED_KEYS, Keys, key_to_character

    if not key:
        return "is empty"
    if key != key.strip() or " " in key:
        return "has a space in it (write space for the space bar)"
    *modifiers, base = key.split("+")
    if not base:
        return "ends with + (write plus for the + key)"
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            return f"has {modifier!r}, which is not a modifier"
    if len(set(modifiers)) != len(modifiers):
        return "repeats a modifier"
    if len(base) == 1:
        if not base.isprintable():
            return "is not a printable character"
        if modifiers and base.isalpha() and base != base.lower():
            return f"uses an upper-case letter after a modifier (write {'+'.join([*modifiers, 'shift', base.lower()])})"
        return None
    names = {k.value for k in Keys if "+" not in k.value and not k.value.startswith("<")}
    if base in names or key_to_character(REPLACED_KEYS.get(base, base)) is not None:
        return None
    return f"is not a key name (a key is {KEY_NAMES_HINT}, after modifiers such as ctrl+ or alt+)"


def canonical_key(key: str) -> str:
    """One spelling per key, to compare keys: ``?`` and ``question_mark`` are the same key."""
    from textual.keys import REPLACED_KEYS, key_to_character

    *modifiers, base = key.strip().split("+")
    char = base if len(base) == 1 else key_to_character(REPLACED_KEYS.get(base, base))
    return "+".join([*modifiers, char if char is not None else base])


def _clashes(overrides: Mapping[str, str]) -> list[tuple[str, str]]:
    """Overrides that put two bindings of one place (a context plus the contexts it shares a widget with) on
    one key, as (the override to drop, why); dropped one at a time until none is left (the defaults never
    clash, so each clash involves an override)."""
    if not overrides:
        return []
    by_id = {ctx.id: ctx for ctx in contexts()}
    kept = dict(overrides)
    found: list[tuple[str, str]] = []
    while (clash := _first_clash(kept, by_id)) is not None:
        kept.pop(clash[0])
        found.append(clash)
    return found


def _first_clash(overrides: Mapping[str, str], by_id: Mapping[str, Context]) -> tuple[str, str] | None:
    for ctx in by_id.values():
        owner: dict[str, tuple[str, Key]] = {}  # canonical key -> (binding id, binding)
        for member in [ctx, *(by_id[s] for s in ctx.shares if s in by_id)]:
            for key in member.keys:
                binding_id = member.binding_id(key)
                for one in overrides.get(binding_id, key.keys).split(","):
                    other = owner.setdefault(canonical_key(one), (binding_id, key))
                    if other[0] == binding_id:
                        continue
                    loser = binding_id if binding_id in overrides else other[0]
                    return loser, (f"{key_label(one)} would do both {other[1].description!r} ({other[0]}) and "
                                   f"{key.description!r} ({binding_id}) in {ctx.title}")
    return None


DISPLAY = {"enter": "enter", "tab": "tab", "escape": "esc", "space": "space"}


def key_label(keys: str) -> str:
    """How keys are written in help and the palette: ``question_mark,ctrl+p`` → ``? / ctrl+p``."""
    from textual.keys import format_key

    labels = []
    for key in keys.split(","):
        *modifiers, base = key.strip().split("+")
        shown = DISPLAY.get(base) or format_key(base)
        labels.append("+".join([*modifiers, shown]))
    return " / ".join(labels)
