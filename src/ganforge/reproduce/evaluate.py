"""A finished run's numbers, by the paper's protocol: for 2-D mixtures the final checkpoint
sampled by the harness itself; otherwise the last `val/*` values of the run's own evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ganforge import checkpoint
from ganforge.errors import ConfigError
from ganforge.metrics.toy2d import mode_stats
from ganforge.models.protocols import is_image_data
from ganforge.report.collect import CSV, read_metrics
from ganforge.train import build


def evaluate_run(
    folder: Path, protocol: dict[str, Any] | None
) -> tuple[dict[str, float], dict[str, int | None], str]:
    """(metrics, sample count per metric, note) of a finished run."""
    cfg = OmegaConf.load(folder / "config_resolved.yaml")
    assert isinstance(cfg, DictConfig)
    if protocol is not None and not is_image_data(cfg.data.get("channels")):
        return mode_protocol(folder, cfg, protocol)
    return logged_metrics(folder, cfg)


def mode_protocol(
    folder: Path, cfg: DictConfig, protocol: dict[str, Any]
) -> tuple[dict[str, float], dict[str, int | None], str]:
    """The paper's 2-D protocol on the final checkpoint: n samples from the (raw or EMA) G, in
    inference mode, from a seeded noise stream; a mode is covered with `min_per_mode` points."""
    ckpt = checkpoint.load(folder / "checkpoints" / "last.ckpt", key="checkpoint")
    G, used_ema = ckpt.build_generator(ema=bool(protocol.get("ema", False)))
    data = build(cfg.data, shuffle_seed=0)  # the mixture the run trained on: modes and std
    n = int(protocol["n_samples"])
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(int(cfg.metrics.seed)))
    with torch.no_grad():
        samples = G(z)
    stats = mode_stats(samples, data.modes, data.std, min_count=int(protocol["min_per_mode"]))
    metrics = {f"val/{name}": float(value) for name, value in stats.items()}
    note = f"final checkpoint (iteration {ckpt.iteration}), {'EMA' if used_ema else 'raw'} G"
    return metrics, dict.fromkeys(metrics, n), note


def logged_metrics(
    folder: Path, cfg: DictConfig
) -> tuple[dict[str, float], dict[str, int | None], str]:
    """The last logged value of each val/* metric in the run's csv/metrics.csv, read by
    ganforge-report's reader (a damaged file is one DataError naming the line, not a traceback;
    the run has ended, so a cut-off last line is damage too)."""
    path = folder / CSV
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: the run logged no metrics; keep logger=csv (the default)"
        )
    series, _ = read_metrics(path, may_be_writing=False)
    logged = {k: s[-1] for k, s in series.items() if k.startswith("val/")}
    last = {k: value for k, (_, value) in logged.items()}
    step = {k: it for k, (it, _) in logged.items()}
    # The last logged values are the end-of-training evaluation's, which may use its own count.
    evaluation = OmegaConf.select(cfg, "callbacks.evaluation.final_n_samples") or OmegaConf.select(
        cfg, "callbacks.evaluation.evaluator.n_samples"
    )
    steps = sorted(set(step.values()))
    at = ", ".join(map(str, steps)) or "none"
    note = f"end-of-training evaluation, as logged (iteration {at})"
    return last, dict.fromkeys(last, evaluation), note
