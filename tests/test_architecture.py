"""The domain/UI split and the fast start-up path, enforced."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = ("curator", "train")
HEAVY = ("torch", "diffusers", "transformers", "onnxruntime", "textual")


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts))
    return names


def test_headless_sources_never_name_textual() -> None:
    """No import of textual anywhere under curator/ or train/, not even inside a function."""
    offenders = []
    for package in HEADLESS:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                if any(n == "textual" or n.startswith("textual.") or n == "tui" or n.startswith("tui.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"curator/ and train/ must not import textual or tui: {offenders}"


def test_importing_every_headless_module_loads_no_textual() -> None:
    """Import each module of curator/ and train/ (so transitive imports count too) and look at sys.modules."""
    modules = _modules("curator") + _modules("train")
    code = (
        "import importlib, json, sys\n"
        f"mods = {modules!r}\n"
        "failed = {}\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as exc:\n"
        "        failed[m] = repr(exc)\n"
        "print(json.dumps({'textual': sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.')),"
        " 'failed': failed}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}, result["failed"]
    assert result["textual"] == []


def _heavy_after(argv: list[str]) -> list[str]:
    code = (
        "import sys, json, contextlib, io\n"
        "from tui.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy() -> None:
    assert _heavy_after(["--help"]) == []


def test_every_subcommand_help_imports_nothing_heavy() -> None:
    from tui.cli import _known_commands, build_parser

    for command in sorted(_known_commands(build_parser())):
        assert _heavy_after([command, "--help"]) == [], command
