"""The command line's overrides, checked against the config they change before Hydra runs.

Hydra's own errors for a mistyped key or option are several lines with a `+key` hint that adds
a key nothing reads, an absolute search path, or a traceback (a missing `???` value), and exit 1.
Here each mistake is one `ConfigError` naming what was typed, the closest real key or option,
and the fix — before any run folder exists. Every job of a `-m` sweep is covered: each value of
a config-group sweep is composed, so `model=mlp,dcgan model.hidden=64` fails before job 0.
"""

from __future__ import annotations

import difflib
import itertools
import os
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganforge.errors import ConfigError

# A `+key` next to an existing key this close to it is a typo (`+train.max_iter` beside
# `train.max_iters`), not a new key; `++key` adds it regardless.
TWIN_CUTOFF = 0.85
# How close a suggestion must be to be worth showing.
SUGGEST_CUTOFF = 0.7
# Sweeps over config groups are composed combination by combination, up to this many.
MAX_COMBINATIONS = 32
# What to write for a mandatory (`???`) value the user left out.
MISSING_EXAMPLES = {"ckpt": "ckpt=outputs/train/runs/<time>/checkpoints/last.ckpt"}
# Hydra's flags that print something and exit, or change the config search: left to Hydra.
_HYDRA_ONLY = ("help", "hydra_help", "version", "shell_completion", "info", "experimental_rerun")


def hydra_flags() -> set[str]:
    """Hydra's own `--flag` spellings (`--multirun`, `--config-dir`, ...)."""
    flags = set()
    for action in get_args_parser()._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags


def normalize(argv: list[str]) -> list[str]:
    """`--key=value` (what a W&B Sweeps agent passes, argparse style) becomes Hydra's `key=value`;
    a `--key` without a value that is not one of Hydra's flags is refused with how to write it."""
    flags = hydra_flags()
    out = []
    for arg in argv:
        name = arg.split("=", 1)[0]
        if not arg.startswith("--") or name in flags or arg == "--":
            out.append(arg)
        elif "=" in arg:
            out.append(arg[2:])
        else:
            raise ConfigError(
                f"{arg} is not an option: settings are key=value overrides without dashes, "
                f"e.g. {arg[2:]}=VALUE (--{arg[2:]}=VALUE is read the same way)"
            )
    return out


def check_argv(argv: list[str], config_dir: Path, config_name: str, command: str) -> None:
    """Check the overrides in `argv` (Hydra's command line, already `normalize`d)."""
    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in _HYDRA_ONLY) or args.config_path:
        return
    loader = config_loader(config_dir, args.config_dir)
    check_overrides(
        loader,
        args.config_name or config_name,
        args.overrides,
        command,
        need_values=args.cfg is None,
    )


def config_loader(config_dir: Path, extra_dir: str | None = None) -> ConfigLoaderImpl:
    """Hydra's loader over `config_dir` (and `--config-dir`), as `@hydra.main` builds it."""
    search_path = create_config_search_path(str(config_dir))
    if extra_dir:
        extra = Path(extra_dir).expanduser().resolve()
        if not extra.is_dir():
            raise ConfigError(f"--config-dir {extra_dir} is not a folder; pass a folder")
        search_path.prepend("command-line", f"file://{extra}", SearchPathQuery(provider="schema"))
    return ConfigLoaderImpl(config_search_path=search_path)


def check_overrides(
    loader: ConfigLoaderImpl,
    config_name: str,
    overrides: list[str],
    command: str,
    need_values: bool = True,
) -> None:
    """Every override names a real key (or says how to add one), every config-group choice is
    an option of its group, and the result composes with no mandatory value left unset."""
    parsed = _parse(overrides)
    # hydra.searchpath=[file://DIR] adds config folders (a loss, model or dataset yaml outside
    # ganforge): the groups and options are read with them, as Hydra's own composition does.
    search = [o for o in parsed if o.get_key_element() == "hydra.searchpath"]
    if search:
        loader._process_config_searchpath(config_name, search, loader.repository)
    searchpath = [o.input_line for o in search if o.input_line]
    groups = [o for o in parsed if _is_group(loader, o)]
    values = [o for o in parsed if o not in groups]
    for override in groups:
        _check_options(loader, override)
    choices = [[f"{o.get_key_element()}={v}" for v in _values(o)] for o in groups]
    combos = list(itertools.islice(itertools.product(*choices), MAX_COMBINATIONS))
    # The whole command line, sweeps at their first value, as Hydra will compose a job.
    firsts = [_first(o) for o in values if _values(o)]
    for combo in combos:
        try:
            base = _compose(loader, config_name, [*searchpath, *combo])
            for override in values:
                _check_key(base, override, loader)
            cfg = _compose(loader, config_name, [*combo, *firsts])
            if need_values:
                _check_missing(cfg, command)
        except ConfigError as err:
            if len(combos) == 1:
                raise
            raise ConfigError(f"in the jobs with {' '.join(combo)}: {err}") from None


def _parse(overrides: list[str]) -> list[Override]:
    parser = OverridesParser.create()
    parsed = []
    for arg in overrides:
        try:
            parsed += parser.parse_overrides([arg])
        except HydraException as err:
            lines = [x.strip() for x in str(err).splitlines() if x.strip()]
            why = lines[0].split(" (See ")[0] if lines else type(err).__name__
            raise ConfigError(
                f"cannot read the override {arg!r} ({why}); write key=value, a list as "
                "key=[a,b], and quote a value holding spaces or commas: key='a,b'"
            ) from None
    return parsed


def _values(override: Override) -> list[str]:
    """The values a job may get from `override` (several for a sweep)."""
    if override.is_delete() and override.value() is None:
        return [""]
    if override.is_interval_sweep():
        return []  # a sweeper samples it; only its key is checked
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _first(override: Override) -> str:
    if not override.is_sweep_override():
        return override.input_line
    return f"{override.get_key_element()}={_values(override)[0]}"


def _is_group(loader: ConfigLoaderImpl, override: Override) -> bool:
    key = override.key_or_group
    return "." not in key and loader.repository.group_exists(key)


def _check_options(loader: ConfigLoaderImpl, override: Override) -> None:
    group = override.key_or_group
    options = loader.get_group_options(group, results_filter=ObjectType.CONFIG)
    names = _values(override)
    if not override.is_sweep_override() and isinstance(override.value(), list):
        names = [str(v) for v in override.value()]  # logger=[csv,wandb]: several options
    for value in names:
        if value in ("", "null") or value in options:
            continue
        near = difflib.get_close_matches(value, options, n=1, cutoff=SUGGEST_CUTOFF)
        hint = f"did you mean {group}={near[0]}? " if near else ""
        raise ConfigError(
            f"{group}={value} is not an option of {group}; {hint}options: {', '.join(options)}"
        )


def _compose(loader: ConfigLoaderImpl, config_name: str, overrides: list[str]) -> DictConfig:
    try:
        return loader.load_configuration(config_name, overrides, RunMode.RUN, from_shell=True)
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__ if str(err).strip() == "" and err.__cause__ else err
        text = " ".join(x.strip() for x in str(cause).splitlines() if x.strip())
        text = text.split(" full_key:")[0]  # OmegaConf's location lines repeat the key
        raise ConfigError(
            f"{' '.join(overrides)} does not compose: {text}; fix that override "
            f"(`ganforge-train --cfg job ...` shows the composed config)"
        ) from None


def _node(cfg: DictConfig, parts: list[str]) -> tuple[object, bool]:
    """The node at `parts` without resolving interpolations: (node, found). A path through an
    interpolation (`system.g_optimizer.lr`, where g_optimizer is `${optim.generator}`) counts as
    found: Hydra follows it."""
    node: object = cfg
    for part in parts:
        if isinstance(node, DictConfig):
            if node._is_interpolation():
                return node, True
            # keys(), not `in`: DictConfig's `in` is False for a `???` value, which exists.
            if part not in node.keys():  # noqa: SIM118
                return node, False
            node = node._get_node(part)
        elif isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                return node, False
            node = node._get_node(int(part))
        else:
            # A value that is itself an interpolation string may point at a node.
            return node, _is_interpolation(node)
    return node, True


def _is_interpolation(node: object) -> bool:
    return hasattr(node, "_is_interpolation") and node._is_interpolation()  # type: ignore[union-attr]


def _check_key(cfg: DictConfig, override: Override, loader: ConfigLoaderImpl) -> None:
    key = override.key_or_group
    if override.is_force_add() or override.package is not None:
        return  # `++key`: added or set, whatever is there, on purpose
    parts = key.split(".")
    _, found = _node(cfg, parts)
    value = (_values(override) or ["VALUE"])[0]
    if override.is_add():
        if found:
            raise ConfigError(
                f"+{key}={value}: {key} already exists; set it with {key}={value} (no +)"
            )
        parent, parent_found = _node(cfg, parts[:-1])
        siblings = list(parent.keys()) if parent_found and isinstance(parent, DictConfig) else []
        twin = difflib.get_close_matches(parts[-1], [str(s) for s in siblings], 1, TWIN_CUTOFF)
        if twin:
            real = ".".join([*parts[:-1], twin[0]])
            raise ConfigError(
                f"+{key}={value} would add a key that nothing reads; did you mean "
                f"{real}={value}? (to add {key} anyway: ++{key}={value})"
            )
        return
    if found:
        return
    # Name the first part that does not exist: `callbacks.evaluation` in
    # `callbacks.evaluation.every_n_iters` under callbacks=default.
    absent = next(
        ".".join(parts[: i + 1]) for i in range(len(parts)) if not _node(cfg, parts[: i + 1])[1]
    )
    near, holds = _suggest(cfg, absent, loader, siblings_only=absent != key)
    # Another option of the group has this very key (model.hidden is mlp's, not dcgan's), or,
    # when nothing here is close, a near-twin of it.
    other = _other_option(cfg, loader, absent, exact=True) if absent == key else None
    if absent == key and not other and not near:
        other = _other_option(cfg, loader, absent, exact=False)
    if other:
        option, real = other
        group = option.split("=")[0]
        add = "one of them" if " (also " in option else option
        raise ConfigError(
            f"{key} is not a setting of {group}={_choice(cfg, group)}; {option} has {real}: "
            f"add {add} (or pick another key)"
        )
    if near:
        rest = key[len(absent) :]
        # `modle.hidden` -> model.hidden when that exists, else just `model`.
        near = [n + rest if _node(cfg, (n + rest).split("."))[1] else n for n in near]
        hint = f"did you mean {' or '.join(near)}?"
    else:
        hint = (holds or "`--cfg job` lists the settings") + (
            "" if override.is_delete() else f"; to add a new key: +{key}={value}"
        )
    what = key if absent == key else f"{key}: {absent}"
    raise ConfigError(f"{what} is not a setting; {hint}")


def _choice(cfg: DictConfig, group: str) -> str:
    return str((cfg.hydra.runtime.choices or {}).get(group))


def _other_option(
    cfg: DictConfig, loader: ConfigLoaderImpl, key: str, exact: bool
) -> tuple[str, str] | None:
    """(`model=mlp`, `model.hidden`) when `key` (`model.hiden`) is not under the chosen option
    of its config group but is, or nearly is, under another one (each option's own file read)."""
    group, _, leaf = key.rpartition(".")
    if "." in group or "hydra" not in cfg:
        return None
    chosen = (cfg.hydra.runtime.choices or {}).get(group)
    if chosen is None or not loader.repository.group_exists(group):
        return None
    found: dict[str, list[str]] = {}  # the key found -> the options that have it
    for option in loader.get_group_options(group, results_filter=ObjectType.CONFIG):
        if option == chosen:
            continue
        try:
            result = loader.repository.load_config(f"{group}/{option}")
        except (HydraException, OmegaConfBaseException, OSError):
            continue
        keys = [str(k) for k in result.config] if result is not None else []
        near = difflib.get_close_matches(leaf, keys, n=1, cutoff=1.0 if exact else TWIN_CUTOFF)
        if near:
            found.setdefault(near[0], []).append(option)
    if not found:
        return None
    real, options = next(iter(found.items()))
    also = f" (also {', '.join(options[1:])})" if len(options) > 1 else ""
    return f"{group}={options[0]}{also}", f"{group}.{real}"


def _suggest(
    cfg: DictConfig, key: str, loader: ConfigLoaderImpl, siblings_only: bool = False
) -> tuple[list[str], str]:
    """The closest existing keys to `key` (siblings first: `optim.lr` is closer to optim.lr_g
    than to any key elsewhere), and, when nothing is close, what its parent holds."""
    hydra = key.startswith("hydra.")
    keys = list(_keys(cfg._get_node("hydra"), "hydra") if hydra else _keys(cfg, "", "hydra"))
    prefix, _, leaf = key.rpartition(".")
    if not prefix:
        keys += loader.get_group_options("", results_filter=ObjectType.GROUP)
    siblings = list(
        dict.fromkeys(k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == prefix)
    )
    # `lr` is a short `lr_g`: a prefix counts as near whatever the ratio.
    near = [s for s in siblings if s.startswith(leaf) or leaf.startswith(s)][:2]
    near = near or difflib.get_close_matches(leaf, siblings, n=2, cutoff=SUGGEST_CUTOFF)
    if near:
        return [f"{prefix}.{x}" if prefix else x for x in near], ""
    # Not an ancestor of the key itself (`model` for `model.foo`): that one exists already.
    keys = [k for k in keys if not key.startswith(k + ".")]
    near = [] if siblings_only else difflib.get_close_matches(key, keys, 2, SUGGEST_CUTOFF)
    if near or not siblings or len(siblings) > 16:
        return near, ""
    choice = (cfg.hydra.runtime.choices or {}).get(prefix) if "hydra" in cfg else None
    where = f"{prefix}={choice}" if choice else prefix
    return [], f"{where} has {', '.join(siblings)}"


def _keys(node: object, prefix: str, skip: str = ""):  # type: ignore[no-untyped-def]
    """Every dotted key under `node` (nodes and leaves) but `skip`, interpolations not followed."""
    if not isinstance(node, DictConfig) or node._is_interpolation() or node._is_missing():
        return
    for name in node.keys():  # noqa: SIM118 (a plain `in` skips `???` values)
        if name == skip:
            continue
        full = f"{prefix}.{name}" if prefix else str(name)
        yield full
        yield from _keys(node._get_node(name), full)


def _split(cfg: DictConfig, key: str) -> tuple[DictConfig, str]:
    """(the node holding `key`, its last part), for OmegaConf.is_missing."""
    prefix, _, leaf = key.rpartition(".")
    node, _ = _node(cfg, prefix.split(".")) if prefix else (cfg, True)
    return node, leaf  # type: ignore[return-value]


def _check_missing(cfg: DictConfig, command: str) -> None:
    missing = [k for k in _keys(cfg, "", "hydra") if OmegaConf.is_missing(*_split(cfg, k))]
    if missing:
        key = missing[0]
        example = MISSING_EXAMPLES.get(key, f"{key}=VALUE")
        raise ConfigError(f"{key} is required; e.g. {os.path.basename(command)} {example}")
