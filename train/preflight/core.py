"""The pre-flight machinery: findings, the context checks read, the registry of checks and the runner.

A check is one small function registered with :func:`check`; it reads the :class:`Context` (the config, the
device, and after the dataset scan the training items) and yields :class:`Finding`s. :func:`run_preflight`
runs every check that can run at a stage: ``"config"`` (before anything is scanned or loaded) or
``"dataset"`` (after the scan, before the model loads). ``kiln train --check``, every real launch
(``kiln train``, ``--detach``, ``kiln resume``, the TUI's Start) and the TUI's run form run the same checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from train.errors import TrainingError

if TYPE_CHECKING:
    from curator.dataset import Dataset
    from train.config import TrainConfig
    from train.data.dataset import TrainData, TrainItem
    from train.models.probe import Inspection

Stage = Literal["config", "dataset"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One thing the pre-flight found: ``field`` (a dotted config key, or what is wrong), the problem, and
    the fix (usually a ``--set`` line). Errors stop the run; warnings are shown and the run goes on."""

    field: str
    problem: str
    fix: str = ""
    severity: Severity = "error"
    check: str = ""

    def lines(self) -> list[str]:
        head = f"{self.field}: {self.problem}"
        return [head, f"  fix: {self.fix}"] if self.fix else [head]


def error(field: str, problem: str, fix: str = "") -> Finding:
    return Finding(field, problem, fix, "error")


def warning(field: str, problem: str, fix: str = "") -> Finding:
    return Finding(field, problem, fix, "warning")


@dataclass(frozen=True)
class DeviceFacts:
    """The training device as the checks need it: CUDA or CPU, the GPU's name and compute capability."""

    cuda: bool
    name: str = "CPU"
    capability: tuple[int, int] | None = None
    count: int = 0

    @classmethod
    def probe(cls) -> DeviceFacts:
        import torch

        if not torch.cuda.is_available():
            return cls(cuda=False)
        major, minor = torch.cuda.get_device_capability(0)
        return cls(cuda=True, name=torch.cuda.get_device_name(0), capability=(major, minor),
                   count=torch.cuda.device_count())

    @property
    def bf16(self) -> bool:
        """Native bf16 (Ampere, compute capability 8.0, and newer)."""
        from train.precision import native_bf16

        return self.cuda and native_bf16(self.capability)


@dataclass
class Context:
    """What the checks read. ``data`` (items, held-out items, curator dataset, the TOML's datasets and subsets) is set at the
    ``dataset`` stage; ``device`` is probed
    on first use unless given (tests give one to stand for another machine)."""

    cfg: TrainConfig
    num_processes: int = 1
    data: TrainData | None = None
    check_model_file: bool = True
    given_device: DeviceFacts | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def items(self) -> list[TrainItem] | None:
        """The scanned items (None before the dataset stage)."""
        return None if self.data is None else self.data.items

    @property
    def held_out(self) -> list[TrainItem] | None:
        """The images ``dataset.validation_split`` holds out (None before the dataset stage)."""
        return None if self.data is None else self.data.held_out

    @property
    def dataset(self) -> Dataset | None:
        """The curator dataset the items come from (None before the dataset stage)."""
        return None if self.data is None else self.data.dataset

    @cached_property
    def device(self) -> DeviceFacts:
        return self.given_device or DeviceFacts.probe()

    @cached_property
    def model(self) -> Inspection | None:
        """The base model's header inspection (None when it cannot be read: the model check says why)."""
        from train.models.arch import ModelLoadError
        from train.models.probe import inspect_base_model

        if not self.check_model_file or _pickled(self.cfg.model.path):
            return None
        try:
            return inspect_base_model(self.cfg.model, allow_pickle=self.cfg.model.allow_pickle)
        except ModelLoadError:
            return None

    @property
    def arch(self) -> str | None:
        """sd1 / sd2 / sdxl: from the model file, else from ``model.architecture`` (None when unknown)."""
        if self.model is not None:
            return self.model.arch.value
        chosen = self.cfg.model.architecture
        return None if chosen == "auto" else ("sd2" if chosen == "sd2-v" else chosen)


def _pickled(path: Path) -> bool:
    from train.models.probe import PICKLE_SUFFIXES

    return path.suffix.lower() in PICKLE_SUFFIXES


CheckFunction = Callable[[Context], Iterable[Finding]]


@dataclass(frozen=True)
class Check:
    """A registered check: its name (listed in docs/TRAINING.md), the stage it needs, the function."""

    name: str
    stage: Stage
    run: CheckFunction
    doc: str


CHECKS: list[Check] = []


def check(name: str, *, stage: Stage = "config") -> Callable[[CheckFunction], CheckFunction]:
    """Register a pre-flight check: ``@check("optimizer arguments")`` over ``def f(ctx) -> Iterable[Finding]``.
    ``stage="dataset"`` checks run once the dataset is scanned (``ctx.items`` is set)."""

    def register(function: CheckFunction) -> CheckFunction:
        doc = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        CHECKS.append(Check(name=name, stage=stage, run=function, doc=doc))
        return function

    return register


@dataclass
class Report:
    """Every finding of one pre-flight run, errors first."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def error_text(self) -> str:
        lines = [f"the pre-flight check found {len(self.errors)} problem{'s' * (len(self.errors) != 1)}:"]
        for finding in self.errors:
            lines += ["  " + line for line in finding.lines()]
        return "\n".join(lines)

    def raise_errors(self) -> None:
        if self.errors:
            raise PreflightError(self)


class PreflightError(TrainingError):
    """A run the pre-flight refuses; the message lists every problem with its fix."""

    def __init__(self, report: Report) -> None:
        self.report = report
        super().__init__(report.error_text())


def run_preflight(cfg: TrainConfig, *, stages: tuple[Stage, ...] = ("config",), num_processes: int = 1,
                  data: TrainData | None = None, check_model_file: bool = True, device: DeviceFacts | None = None) -> Report:
    """Run every registered check of ``stages`` on ``cfg`` and return what they found (errors first)."""
    from train.preflight import load_checks

    load_checks()
    ctx = Context(cfg=cfg, num_processes=num_processes, data=data, check_model_file=check_model_file, given_device=device)
    found: list[Finding] = []
    for registered in CHECKS:
        if registered.stage not in stages:
            continue
        for finding in registered.run(ctx):
            found.append(Finding(finding.field, finding.problem, finding.fix, finding.severity, registered.name))
    found.sort(key=lambda f: f.severity != "error")
    return Report(found)


def full_preflight(cfg: TrainConfig, *, num_processes: int = 1,
                   warn: Callable[[str, str | None], object] | None = None,
                   ) -> tuple[Report, TrainData | None]:
    """Everything ``kiln train --check`` and the TUI's run form look at: the config-stage checks, the dataset
    scan (even after config errors, so every problem shows at once) and the dataset-stage checks. Returns the
    report (errors first) and the scanned data when the scan worked; ``warn`` gets each skipped image."""
    from train.data.dataset import DatasetError, build_items

    report = run_preflight(cfg, stages=("config",), num_processes=num_processes)
    data: TrainData | None = None
    if not any(f.check == "dataset folder" for f in report.errors):
        try:
            data = build_items(cfg.dataset, warn or (lambda message, path: None), progress=False,
                               batch_size=cfg.train.batch_size, masked_loss=cfg.train.masked_loss)
        except (DatasetError, ValueError, OSError) as exc:
            field, _, text = str(exc).partition(": ")
            report.findings.insert(0, Finding(field, text, check="dataset scan") if text else
                                   Finding("dataset.path", str(exc), check="dataset scan"))
    if data is not None:
        more = run_preflight(cfg, stages=("dataset",), num_processes=num_processes, data=data)
        report = Report(sorted([*report.findings, *more.findings], key=lambda f: f.severity != "error"))
    return report, data
