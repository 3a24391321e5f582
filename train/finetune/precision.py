"""bf16 weights that still learn small updates: an update smaller than half a bf16 step would round away.

Two remedies, chosen by ``finetune.bf16_update``:
- ``stochastic``: the optimizer steps in fp32 (the weight is widened for the step, its state is created in
  fp32) and the result is rounded *stochastically* back to bf16 (rounded up with probability equal to the
  fraction cut off), so on average the update survives. Memory: nothing per weight beyond the step in flight.
- ``master``: the optimizer owns an fp32 master copy of each weight; the bf16 weight is its nearest rounding,
  refreshed after every step. Memory: +4 bytes per weight.

Both are optimizer step hooks (``register_step_pre_hook`` / ``register_step_post_hook``) over the parameters of
the step in flight, so they work with any torch optimizer and with the step in backward (train.finetune.fused),
which narrows a step to one tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def stochastic_round_bf16(value: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``value`` (fp32) rounded stochastically to bf16: add uniform random bits below bf16's 16 kept bits, then
    truncate. The expected result equals ``value``; exact bf16 values come back unchanged."""
    import torch

    bits = value.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=value.device, generator=generator)
    rounded = (bits + noise) & -65536  # clear the 16 low bits (0xFFFF0000 as int32)
    return rounded.view(torch.float32).to(torch.bfloat16)


def stepping_params(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    """The parameters the step in flight updates: those of the optimizer's groups that have a gradient."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                yield p


class StochasticRounding:
    """Pre-step: each bf16 parameter about to step is widened to fp32 (weight and gradient). Post-step: rounded
    stochastically back to bf16 and its gradient dropped."""

    def __init__(self, optimizer: torch.optim.Optimizer, seed: int) -> None:

        self.seed = seed
        self.calls = 0
        """Steps rounded so far: the rounding noise of each comes from ``(seed, calls)``, so a resumed run
        (which restores the count) rounds exactly as an uninterrupted one."""
        self.widened: list[torch.Tensor] = []
        optimizer.register_step_pre_hook(self._widen)
        optimizer.register_step_post_hook(self._round)

    def _widen(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        import torch

        self.widened = []
        for p in stepping_params(optimizer):
            if p.dtype == torch.bfloat16:
                p.data = p.data.float()
                assert p.grad is not None, "stepping_params yields parameters with a gradient"
                p.grad = p.grad.float()
                self.widened.append(p)

    def _round(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        import torch

        from train.data.dataset import mix_seed

        generators: dict[torch.device, torch.Generator] = {}
        for p in self.widened:
            if p.device not in generators:
                generators[p.device] = torch.Generator(device=p.device).manual_seed(mix_seed(self.seed, self.calls))
            p.data = stochastic_round_bf16(p.data, generators[p.device])
            p.grad = None
        if self.widened:
            self.calls += 1
        self.widened = []


class MasterWeights:
    """fp32 master copies the optimizer updates, one per bf16 model parameter (outside the autograd graph:
    their gradients are set here). Gradients move from the model
    parameter to its master as each backward accumulates them (summed in fp32 over accumulation steps); after a
    step the model parameter becomes the master's nearest bf16 value."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        import torch

        self.model_params = params
        self.masters = [torch.nn.Parameter(p.detach().float().clone()) for p in params]
        self.model_of = {id(m): p for m, p in zip(self.masters, params, strict=True)}
        self.master_of = {id(p): m for m, p in zip(self.masters, params, strict=True)}
        for p in params:
            p.register_post_accumulate_grad_hook(self._take_grad)  # type: ignore[no-untyped-call]

    def _take_grad(self, p: torch.Tensor) -> None:
        master = self.master_of[id(p)]
        assert p.grad is not None, "the hook runs after a gradient was accumulated"
        if master.grad is None:
            master.grad = p.grad.float()
        else:
            master.grad.add_(p.grad)
        p.grad = None

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Refresh the model weights from the masters after every step of ``optimizer`` (built on the masters)."""
        optimizer.register_step_pre_hook(self._note)
        optimizer.register_step_post_hook(self._refresh)
        self._stepping: list[torch.Tensor] = []

    def _note(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._stepping = list(stepping_params(optimizer))

    def _refresh(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        import torch

        with torch.no_grad():
            for master in self._stepping:
                self.model_of[id(master)].copy_(master)
        self._stepping = []

    def reload(self) -> None:
        """The model weights as the masters hold them (after a resume loaded the masters)."""
        import torch

        with torch.no_grad():
            for master, p in zip(self.masters, self.model_params, strict=True):
                p.copy_(master)


def restore_state_dtypes(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Put back the fp32 optimizer state of bf16 weights after ``optimizer.load_state_dict(saved)``: torch
    casts loaded state to each parameter's dtype, which would round the moments of a bf16 weight to bf16."""
    import torch

    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, state in saved["state"].items():
        live = optimizer.state[params[int(index)]]
        for key, value in state.items():
            current = live.get(key)
            if isinstance(value, torch.Tensor) and value.is_floating_point() and isinstance(current, torch.Tensor) \
                    and current.dtype != value.dtype:
                live[key] = value.to(current.device)
