"""Gradient clipping and the logged gradient norms (`system.grad_clip_g` / `grad_clip_d`,
`system.log_grad_norm`), applied to one network's gradients before its optimizer steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def clip_or_measure(net: nn.Module, max_norm: float | None, measure: bool) -> Tensor | None:
    """The total norm of `net`'s gradients (as they were before clipping), clipped to `max_norm`
    when it is set; None when neither clipping nor measuring is asked for."""
    params = [p for p in net.parameters() if p.grad is not None]
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if measure:
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return None
