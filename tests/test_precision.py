"""Mixed precision with manual optimization: Lightning's precision plugin runs under
`manual_backward` / `opt.step` (fp16 loss scaling included); both modes are checked on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import quiet_trainer, toy_system


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_with_finite_losses(precision: str) -> None:
    system, dm = toy_system(max_iters=6, grad_clip_d=1.0, grad_clip_g=1.0)
    quiet_trainer(precision=precision).fit(system, datamodule=dm)
    assert system.iteration == 6
    losses = [system.last_metrics[k] for k in ("train/d_loss", "train/g_loss")]
    assert all(math.isfinite(v) for v in losses)
    # Clipping ran on real gradients (after the plugin unscaled them), and the weights stay fp32.
    assert system.last_metrics["train/d_grad_norm"] > 0
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in system.parameters())
