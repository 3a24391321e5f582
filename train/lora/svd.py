"""Low-rank factorisation of weight changes (kohya's extract / resize maths), and the dynamic-rank rules of
kohya's ``networks/resize_lora.py``.

A factorisation keeps ``up = U_k diag(S_k)``, ``down = Vh_k`` (kohya's split), shaped as a kohya module:
linear ``up (out, k)``, ``down (k, in)``; conv ``up (out, k, 1, 1)``, ``down (k, in, kh, kw)``. The share of the
Frobenius norm a rank-k factorisation keeps is ``sqrt(sum S_k^2) / sqrt(sum S^2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

DynamicMethod = Literal["sv_ratio", "sv_fro", "sv_cumulative"]
DYNAMIC_METHODS: tuple[DynamicMethod, ...] = ("sv_ratio", "sv_fro", "sv_cumulative")
MIN_SV = 1e-6  # kohya: a module whose largest singular value is below this is zero (rank 1)
_QUANTILE_LIMIT = 1 << 24  # torch.quantile refuses larger inputs


@dataclass
class Factors:
    """A rank-k factorisation of one weight change."""

    up: torch.Tensor
    down: torch.Tensor
    singular_values: torch.Tensor  # all of them (float32, CPU), not only the k kept

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def fro_kept(self) -> float:
        return fro_kept(self.singular_values, self.rank)


def fro_kept(s: torch.Tensor, k: int) -> float:
    """Share of the Frobenius norm kept by the first ``k`` singular values (1.0 for a zero matrix)."""
    total = float((s.double() ** 2).sum())
    if total == 0.0:
        return 1.0
    return math.sqrt(float((s[:k].double() ** 2).sum()) / total)


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float32 on the matrix's device."""
    import torch

    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    return u, s, vh


def low_rank_svd(up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact thin SVD of ``up @ down`` (2-D, rank r) through QR of the factors: O((out + in) r^2) instead of
    the SVD of the full out x in matrix; the singular values beyond r are exactly 0 and are not returned."""
    import torch

    qu, ru = torch.linalg.qr(up.float())
    qd, rd = torch.linalg.qr(down.float().T)
    u_small, s, vh_small = torch.linalg.svd(ru @ rd.T, full_matrices=False)
    return qu @ u_small, s, vh_small @ qd.T


def _quantile(values: torch.Tensor, q: float) -> float:
    import torch

    if values.numel() <= _QUANTILE_LIMIT:
        return float(torch.quantile(values, q))
    ordered = values.sort().values  # torch.quantile's linear interpolation, for large inputs
    position = q * (ordered.numel() - 1)
    low = int(math.floor(position))
    high = min(low + 1, ordered.numel() - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def clamp_factors(up: torch.Tensor, down: torch.Tensor, quantile: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """kohya's outlier clamp: both factors to [-h, h], h the ``quantile`` of all their values. ``None`` or a
    quantile of 1 or more leaves them as they are."""
    import torch

    if quantile is None or quantile >= 1.0:
        return up, down
    hi = _quantile(torch.cat([up.flatten(), down.flatten()]), quantile)
    return up.clamp(-hi, hi), down.clamp(-hi, hi)


def shape_factors(up2: torch.Tensor, down2: torch.Tensor, weight_shape: tuple[int, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D factors -> kohya module shapes for a layer of ``weight_shape``."""
    rank = down2.shape[0]
    if len(weight_shape) == 4:
        return (up2.reshape(weight_shape[0], rank, 1, 1),
                down2.reshape(rank, weight_shape[1], weight_shape[2], weight_shape[3]))
    return up2, down2


def factorize(delta: torch.Tensor, rank: int, clamp_quantile: float | None = None) -> Factors:
    """Rank-``rank`` factors of a weight change (kohya's extraction: SVD, S into up, optional clamp)."""
    shape = tuple(delta.shape)
    matrix = delta.reshape(shape[0], -1)
    rank = max(1, min(rank, matrix.shape[0], matrix.shape[1]))
    u, s, vh = svd(matrix)
    up = u[:, :rank] * s[:rank]
    down = vh[:rank, :]
    up, down = clamp_factors(up, down, clamp_quantile)
    up, down = shape_factors(up, down, shape)
    return Factors(up.contiguous(), down.contiguous(), s.detach().float().cpu())


def dynamic_rank(s: torch.Tensor, method: DynamicMethod, param: float) -> int:
    """kohya's resize_lora index rules (``index_sv_*`` + 1), on the singular values ``s`` (descending)."""
    import torch

    n = int(s.numel())
    if method == "sv_ratio":
        index = int((s > s[0] / param).sum().item())
    elif method == "sv_cumulative":
        cumulative = torch.cumsum(s, dim=0) / float(s.sum())
        index = int(torch.searchsorted(cumulative, torch.tensor(param, dtype=cumulative.dtype))) + 1
    else:
        squares = s.double().pow(2)
        cumulative = torch.cumsum(squares, dim=0) / float(squares.sum())
        index = int(torch.searchsorted(cumulative, torch.tensor(param**2, dtype=cumulative.dtype))) + 1
    index = max(1, min(index, n - 1))
    return index + 1
