"""Mixed precision with manual optimization: Lightning's precision plugin runs under
`manual_backward` / `opt.step` (fp16 loss scaling included). Only bf16-mixed can be checked on
CPU: Lightning turns 16-mixed into bf16-mixed there, so fp16 scaling needs a GPU run."""

from __future__ import annotations

import math

import torch

from conftest import quiet_trainer, toy_system


def test_bf16_mixed_trains_with_finite_losses() -> None:
    system, dm = toy_system(max_iters=6, grad_clip_d=1.0, grad_clip_g=1.0)
    quiet_trainer(precision="bf16-mixed").fit(system, datamodule=dm)
    assert system.iteration == 6
    losses = [system.last_metrics[k] for k in ("train/d_loss", "train/g_loss")]
    assert all(math.isfinite(v) for v in losses)
    # Clipping ran on real gradients (after the plugin), and the weights stay fp32.
    assert system.last_metrics["train/d_grad_norm"] > 0
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in system.parameters())
