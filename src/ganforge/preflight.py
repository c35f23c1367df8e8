"""Checks `ganforge-train` runs before anything is loaded, built or written.

Each error names the key the user typed: a value reaches the code through interpolations
(`system.g_optimizer: ${optim.generator}` whose `lr` is `${optim.lr_g}`), and `source_key` follows
them back, so `optim.lr_g=-1` is reported as `optim.lr_g`, not as the `system.g_optimizer.lr` it
feeds. The system's settings are checked by their own classes (`settings.Settings`,
`nan_guard.NanGuard`), called here on the config's values before any network is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import netrc
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ganforge.cli import check_writable
from ganforge.errors import CheckpointError, ConfigError, is_int, is_number
from ganforge.nan_guard import NanGuard
from ganforge.settings import Settings

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
# numpy's seed range (Lightning's seed_everything silently replaces anything outside it by 0).
MAX_SEED = 2**32 - 1
WANDB_MODES = ("online", "offline", "disabled")


def source_key(cfg: DictConfig, key: str) -> str:
    """The key whose value `key` reads, following `${a.b}` interpolations of the key itself or of
    any node above it: `system.g_optimizer.lr` → `optim.lr_g`."""
    parts = key.split(".")
    for _ in range(16):  # interpolation chains are short; Hydra has already refused cycles
        for i, part in enumerate(parts):
            parent = OmegaConf.select(cfg, ".".join(parts[:i])) if i else cfg
            if not isinstance(parent, DictConfig) or part not in parent:
                return ".".join(parts)
            # The unresolved value: an interpolation string, or a node / plain value.
            raw = parent._get_node(part)._value()  # type: ignore[union-attr]
            if isinstance(raw, str) and (match := _INTERPOLATION.fullmatch(raw)):
                parts = match.group(1).split(".") + parts[i + 1 :]
                break
        else:
            return ".".join(parts)
    return ".".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    return repr(value)


# Training settings that conf/loss/ held before conf/system/ did (the loss is the objective only).
MOVED_KEYS = {
    f"loss.{k}": f"system.{k}" for k in ("n_critic", "gp_weight", "r1_gamma", "r1_interval")
}


def moved_key_error(old: str, value: str) -> ConfigError:
    new = MOVED_KEYS[old]
    return ConfigError(
        f"{old} is now {new}: conf/loss/ holds the objective only, the training settings are in "
        f"conf/system/; use {new}={value}"
    )


def check_moved_overrides(argv: list[str]) -> None:
    """The command line's overrides of a moved key (`loss.n_critic=5`, `+loss.n_critic=5`, in a
    sweep too), named with the new key before Hydra refuses them with its own message."""
    for arg in argv:
        key, eq, value = arg.removeprefix("--").lstrip("+~").partition("=")
        if eq and key in MOVED_KEYS:
            raise moved_key_error(key, value)


class Checker:
    """Value checks on the composed config, each naming the key the user typed."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def value(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key)

    def fail(self, key: str, what: str, fix: str = "") -> ConfigError:
        """The error for `key`'s value; `fix` may say `{key}` for the key the user typed."""
        user_key = source_key(self.cfg, key)
        message = f"{user_key}={_show(self.value(key))} must be {what}"
        return ConfigError(f"{message}; {fix.format(key=user_key)}" if fix else message)

    def positive_int(self, key: str, nullable: bool = False, fix: str = "") -> None:
        # errors.check_int's test; its own message for the key the user typed, null and the fix.
        value = self.value(key)
        if value is None and nullable:
            return
        if not (is_int(value) and value >= 1):
            what = "a positive integer" + (" or null" if nullable else "")
            raise self.fail(key, what, fix)

    def number(self, key: str, minimum: float, strict: bool, nullable: bool, fix: str) -> None:
        value = self.value(key)
        if value is None and nullable:
            return
        ok = is_number(value) and (value > minimum if strict else value >= minimum)
        if not ok:
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise self.fail(key, f"a number {bound}" + (" or null" if nullable else ""), fix)


def check_config(cfg: DictConfig) -> None:
    """Every value `train` hands to torch or Lightning that they would reject with a traceback
    (or, worse, accept and do something else), checked before any work."""
    c = Checker(cfg)
    seed = cfg.get("seed")
    if not (is_int(seed) and 0 <= seed <= MAX_SEED):
        raise c.fail("seed", f"an integer in [0, {MAX_SEED}]", "e.g. {key}=0")
    c.positive_int("num_threads", nullable=True, fix="e.g. {key}=2, or null for torch's default")
    loss = cfg.get("loss")
    for old in MOVED_KEYS:
        # A preset of the user's that still sets loss.n_critic would compose, and be ignored.
        if isinstance(loss, DictConfig) and old.split(".", 1)[1] in loss:
            raise moved_key_error(old, _show(OmegaConf.select(cfg, old)))
    _check_settings(cfg)
    for role in ("g_optimizer", "d_optimizer"):
        _check_optimizer(c, f"system.{role}")


def _check_settings(cfg: DictConfig) -> None:
    """`system.*` through the classes that own the checks (GANSystem calls them again when it is
    built; this is the same code, run before the networks are)."""
    node = cfg.get("system")
    if not isinstance(node, DictConfig):
        return
    names = [f.name for f in dataclasses.fields(Settings) if f.name in node]
    settings = Settings(**{name: OmegaConf.select(cfg, f"system.{name}") for name in names})
    NanGuard(settings.nan_policy, settings.max_skips, settings.max_consecutive_skips)


def _check_optimizer(c: Checker, key: str) -> None:
    node = c.value(key)
    if not isinstance(node, DictConfig):
        return
    if "lr" in node:
        c.number(f"{key}.lr", 0.0, strict=False, nullable=False, fix="e.g. {key}=2e-4")
    if "betas" in node:
        betas = node.betas
        ok = (
            isinstance(betas, ListConfig)
            and len(betas) == 2
            and all(is_number(b) and 0.0 <= b < 1.0 for b in betas)
        )
        if not ok:
            raise c.fail(f"{key}.betas", "two numbers in [0, 1)", "e.g. {key}=[0.5,0.999]")
    if "momentum" in node:
        c.number(f"{key}.momentum", 0.0, strict=False, nullable=False, fix="e.g. {key}=0.5")
    # Whatever else torch refuses (eps, weight_decay, a misspelt argument): build the optimizer
    # on one dummy parameter and name the config node with torch's reason.
    try:
        factory = instantiate(node, _convert_="all")
        factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as err:
        user_key = source_key(c.cfg, key)
        raise ConfigError(
            f"{user_key} is refused by {node.get('_target_')}: {err}; fix that argument "
            f"under {user_key}"
        ) from None


def check_run(cfg: DictConfig) -> None:
    """All of `ganforge-train`'s checks before any data is loaded or anything is written: the
    values (`check_config`), the settings that only conflict with each other or the machine,
    then paths and services."""
    check_config(cfg)
    max_iters = cfg.train.get("max_iters")
    endless = max_iters is None and cfg.trainer.get("max_epochs", -1) in (-1, None)
    if endless and not cfg.trainer.get("fast_dev_run"):
        raise ConfigError(
            "train.max_iters=null and trainer.max_epochs=-1 would train forever; "
            "set train.max_iters=N or trainer.max_epochs=N"
        )
    accelerator = cfg.trainer.get("accelerator")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cfg.trainer.get("sync_batchnorm") and not on_gpu:
        raise ConfigError(
            f"trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm is CUDA-only), but "
            f"trainer.accelerator={accelerator}; use GPUs or set trainer.sync_batchnorm=false "
            "(each rank then keeps its own BatchNorm statistics)"
        )
    resume = cfg.get("resume")
    if resume not in (None, "auto"):
        raise ConfigError(
            f"resume={resume!r} must be null or auto; to continue a given checkpoint, "
            "use ckpt_path=PATH"
        )
    check_ckpt_path(cfg)
    check_loggers(cfg)
    check_outputs(cfg)


def check_pack(batch_size: int, pack: int) -> None:
    """D judges packs of `pack` samples (PacGAN): every batch must split into whole packs. Not in
    `check_run`: `pack` is the built D's (models/protocols), so train calls it once D exists."""
    if batch_size % pack:
        raise ConfigError(
            f"data.batch_size={batch_size} is not divisible by model.pack={pack}: D "
            f"judges packs of {pack} samples; set data.batch_size to a multiple of it"
        )


def check_ckpt_path(cfg: DictConfig) -> None:
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return
    path = Path(str(ckpt)).expanduser()
    if path.is_dir():
        newest = path / "last.ckpt"
        hint = f", e.g. ckpt_path={newest}" if newest.is_file() else ""
        raise CheckpointError(
            f"ckpt_path={ckpt} is a directory; pass a checkpoint file inside it{hint}"
        )
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt} does not exist; pass the path of a .ckpt file")


def output_dirs(cfg: DictConfig) -> dict[str, Path]:
    """The folders a run writes to, keyed by the config key that sets each."""
    dirs = {"paths.output_dir": Path(str(cfg.paths.output_dir))}
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and node.get("dirpath"):
            dirs[f"callbacks.{name}.dirpath"] = Path(str(node.dirpath))
    for name, node in (cfg.get("logger") or {}).items():
        if isinstance(node, DictConfig) and node.get("save_dir"):
            dirs[f"logger.{name}.save_dir"] = Path(str(node.save_dir))
    return dirs


def check_outputs(cfg: DictConfig) -> None:
    """Every output folder can be created and written, so an unwritable checkpoint folder stops
    the run now rather than at its first save."""
    for key, path in output_dirs(cfg).items():
        check_writable(key, path)


def check_loggers(cfg: DictConfig) -> None:
    loggers = cfg.get("logger") or {}
    for name, node in loggers.items():
        if not isinstance(node, DictConfig):
            continue
        target = str(node.get("_target_", ""))
        if target.endswith("TensorBoardLogger"):
            _check_tensorboard(name)
        elif target.endswith("WandbLogger"):
            _check_wandb(name, node)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_tensorboard(name: str) -> None:
    # Lightning's TensorBoardLogger writes with tensorboard (or tensorboardX when that is absent).
    if not (_importable("tensorboard") or _importable("tensorboardX")):
        raise ConfigError(
            f"logger={name} needs the tensorboard package, which is not installed; "
            'pip install "ganforge[tensorboard]" (or: pip install tensorboard), '
            "or use logger=csv"
        )


def wandb_mode(node: DictConfig) -> str:
    """W&B's convention: the config's explicit mode, else $WANDB_MODE, else online."""
    mode = node.get("mode") or os.environ.get("WANDB_MODE") or "online"
    return {"dryrun": "offline", "run": "online"}.get(mode, mode)


def _check_wandb(name: str, node: DictConfig) -> None:
    configured = node.get("mode")
    if configured is not None and configured not in WANDB_MODES:
        raise ConfigError(
            f"logger.{name}.mode={configured!r} must be one of {list(WANDB_MODES)} or null "
            "(null: $WANDB_MODE, else online)"
        )
    if wandb_mode(node) == "online" and not _wandb_credentials():
        if configured is not None:
            why = f"logger.{name}.mode={configured}"
        elif os.environ.get("WANDB_MODE"):
            why = f"WANDB_MODE={os.environ['WANDB_MODE']}"
        else:
            why = f"logger.{name}.mode=null and WANDB_MODE is unset, so W&B runs online"
        raise ConfigError(
            f"logger={name} needs a W&B login ({why}), and this machine has none: run "
            "`wandb login` once or set WANDB_API_KEY, or log without an account with "
            f"logger.{name}.mode=offline (or WANDB_MODE=offline; sync later with `wandb sync`)"
        )


def _wandb_credentials() -> bool:
    """Whether wandb.init would find credentials without prompting: the environment or the
    netrc entry `wandb login` writes for the W&B host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc
    path = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        return bool(host) and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
