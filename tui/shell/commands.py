"""Help (``?``) and the command palette, both generated from the binding registry (tui/bindings.py) with the
user's keymap applied, so they always show the keys that work. Neither needs the views to be built: a palette
command builds and shows its view, then runs the action on the widget that holds the binding."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.app import App, SystemCommand
from textual.widget import Widget

from tui.bindings import Context, context, contexts
from tui.keymap import Keymap
from tui.shell.views import ViewManager
from tui.views.registry import ViewSpec

HelpRow = tuple[str, str, str]  # keys, what they do, the binding id (for the keymap file)
HelpSection = tuple[str, list[HelpRow]]


def _listed(ctx: Context, specs: list[ViewSpec]) -> bool:
    """A context of a view that this app does not have is left out."""
    return ctx.view is None or any(s.view_id == ctx.view for s in specs)


def help_sections(keymap: Keymap, specs: list[ViewSpec]) -> list[HelpSection]:
    """(title, [(keys, description, binding id)]) for every place that has keys; the views' keys in one line."""
    view_keys = {k.name: keymap.label(context("app"), k) for k in context("app").keys if k.name.startswith("view-")}
    sections: list[HelpSection] = []
    for ctx in contexts():
        if not _listed(ctx, specs):
            continue
        rows = [(keymap.label(ctx, k), k.title, ctx.binding_id(k)) for k in ctx.keys if not k.name.startswith("view-")]
        if ctx.id == "app":
            views = ", ".join(f"{view_keys.get(f'view-{s.key}', s.key)} {s.title}" for s in specs)
            rows.append(("1…9", f"Views: {views}", "app.view-1 … app.view-9"))
            rows.append(("tab / shift+tab", "Move focus between panes", ""))
        sections.append((ctx.title, rows))
    return sections


def palette_commands(app: App[None], views: ViewManager, keymap: Keymap) -> Iterator[SystemCommand]:
    """A command per view and per binding the palette may run (dialogs' keys only work inside the dialog)."""
    app_context = context("app")
    for spec in views.specs:
        key = next((k for k in app_context.keys if k.name == f"view-{spec.key}"), None)
        label = keymap.label(app_context, key) if key is not None else spec.key
        yield SystemCommand(f"View: {spec.title}", f"key {label}", partial(views.show, spec.view_id))
    for ctx in contexts():
        if not ctx.palette or not _listed(ctx, views.specs):
            continue
        for key in ctx.keys:
            if key.name.startswith("view-") or key.action == "command_palette":
                continue
            yield SystemCommand(key.title, f"{ctx.title} · key {keymap.label(ctx, key)}",
                                partial(run_in_context, app, views, ctx, key.action))


async def run_in_context(app: App[None], views: ViewManager, ctx: Context, action: str) -> None:
    """Run ``action`` where its binding lives: show the view (building it if needed), focus the widget that
    holds the binding, run the action there."""
    if ctx.view is None and not ctx.target:
        await app.run_action(action)
        return
    root: Widget = app.screen
    if ctx.view is not None:
        root = views.show(ctx.view)
        await views.ready(ctx.view)
    target = _target(root, ctx.target)
    if target is None:
        app.notify(f"{ctx.title} is not open: nothing to run.", severity="warning", timeout=3)
        return
    if target.focusable:
        target.focus()
    await app.run_action(action, target)


def _target(root: Widget, selector: str) -> Widget | None:
    """The widget holding a context's bindings: ``root`` itself when it is of one of the ``selector``'s types
    (the registry's targets are widget type names), else the first shown one under it."""
    names = {name.strip() for name in selector.split(",")}
    if any(cls.__name__ in names for cls in type(root).__mro__):
        return root
    found = list(root.query(selector))
    shown = [w for w in found if w.display and all(a.display for a in w.ancestors if isinstance(a, Widget))]
    if shown:
        return shown[0]
    return found[0] if found else None
