"""A preset's variants and the paper's side of the table: each variant is the preset plus its
`paper.variants` overrides plus the user's, composed and checked before anything trains; the
paper's numbers and evaluation protocol come from the preset's `paper:` key alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganforge.cli import config_dir
from ganforge.errors import ConfigError, check_int
from ganforge.metrics.toy2d import QUALITY_SIGMAS
from ganforge.models.protocols import is_image_data
from ganforge.overrides import check_overrides, config_loader
from ganforge.preflight import check_config, check_loggers

if TYPE_CHECKING:
    from ganforge.reproduce.options import Options


@dataclass
class Variant:
    name: str
    overrides: list[str]
    paper: dict[str, dict[str, float]]  # metric -> {"mean", "err"}
    cfg: DictConfig


def presets() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def compose_variants(opts: Options) -> list[Variant]:
    """The preset's variants (from `paper.variants`, else one run of the preset as it is), each
    composed with the user's overrides: a bad key or value fails here, before any training."""
    if opts.experiment not in presets():
        raise ConfigError(
            f"experiment={opts.experiment} is not a preset; choose one of {', '.join(presets())}"
        )
    base = _compose(opts.experiment, list(opts.overrides))
    paper = base.get("paper") or {}
    declared = list(paper.get("variants") or [{"name": "preset", "overrides": [], "metrics": {}}])
    names = [str(v["name"]) for v in declared]
    unknown = sorted(set(opts.variants) - set(names))
    if unknown:
        raise ConfigError(
            f"variant={','.join(unknown)} is not a variant of experiment={opts.experiment}; "
            f"it has {', '.join(names)} (see paper.variants in the preset)"
        )
    variants = []
    for v in declared:
        if opts.variants and v["name"] not in opts.variants:
            continue
        overrides = [str(o) for o in v.get("overrides") or []]
        cfg = _compose(opts.experiment, overrides + list(opts.overrides))
        try:
            # The checks ganforge-train makes first, made here before any variant trains.
            check_config(cfg)
            check_loggers(cfg)
        except ConfigError as err:
            raise ConfigError(
                f"variant {v['name']} of experiment={opts.experiment}: {err}"
            ) from None
        metrics = OmegaConf.to_container(v.get("metrics") or OmegaConf.create({}), resolve=True)
        variants.append(Variant(str(v["name"]), overrides, metrics, cfg))  # type: ignore[arg-type]
    return variants


def _compose(experiment: str, overrides: list[str]) -> DictConfig:
    # A typo gets the closest real key, as on ganforge-train's command line.
    loader = config_loader(config_dir())
    check_overrides(loader, "train", [f"experiment={experiment}", *overrides], "ganforge-train")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("train", overrides=[f"experiment={experiment}", *overrides])
    except (HydraException, MissingConfigException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"experiment={experiment} with overrides {overrides} does not compose: {first}; "
            "fix the override (ganforge-train accepts the same ones)"
        ) from None


def protocol_of(cfg: DictConfig) -> dict[str, Any] | None:
    """The preset's `paper.protocol`, checked; None when it has none.

    2-D mixtures: `n_samples` (one count), `min_per_mode`, `sigmas`, `ema` — the harness samples
    the final checkpoint itself. Image presets: `n_samples` is one count or a mapping from metric
    to the count the paper computed it on (IS and FID often differ, e.g. 50,000 and 5,000); the
    harness reads the run's own evaluation and says when its sample count differs."""
    protocol = OmegaConf.select(cfg, "paper.protocol")
    if protocol is None:
        return None
    p = OmegaConf.to_container(protocol, resolve=True)
    assert isinstance(p, dict)
    counts = p.get("n_samples")
    for key, value in counts.items() if isinstance(counts, dict) else [("", counts)]:
        check_int(f"paper.protocol.n_samples{'.' + key if key else ''}", value)
    if is_image_data(cfg.data.get("channels")):
        return p
    if isinstance(counts, dict):
        raise ConfigError(
            "paper.protocol.n_samples must be one count for a 2-D mixture (the harness draws "
            f"that many points for every metric), not {counts}"
        )
    check_int("paper.protocol.min_per_mode", p.get("min_per_mode"))
    if p.get("sigmas", QUALITY_SIGMAS) != QUALITY_SIGMAS:
        raise ConfigError(
            f"paper.protocol.sigmas={p['sigmas']} but ganforge's mode metric counts a point as "
            f"high quality within {QUALITY_SIGMAS} std (metrics/toy2d.py); "
            f"set sigmas: {QUALITY_SIGMAS}"
        )
    return p


def paper_samples(protocol: dict[str, Any], metric: str) -> int | None:
    """How many samples the paper computed `metric` on, when the preset says."""
    counts = protocol.get("n_samples")
    return counts.get(metric) if isinstance(counts, dict) else counts
