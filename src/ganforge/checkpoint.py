"""Reading ganforge checkpoints as data, not code: the one owner of the checkpoint record.

A checkpoint is Lightning's dict plus the `"ganforge"` record written by `GANSystem`:
`iteration`, `generator` / `discriminator` (`{"class": "ganforge.models.<m>.<Class>",
"init_args": {...}}`), `has_ema`, `meta` (the data and model the run was trained on) and the
resume state (RNGs, W&B id). The networks' weights sit in `state_dict` under the prefixes below.

`load` is the only `torch.load` of a checkpoint in ganforge and validates everything before any
network is built:
- `weights_only=True`, passed explicitly, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` in the user's
  environment cannot turn a downloaded file back into pickled code;
- networks are rebuilt only from ganforge's own model classes (`ganforge.models.*`) and the
  classes the user lists in the `allowed_classes` option (exact class paths, e.g.
  `allowed_classes=[mypkg.nets.Generator]`; a training resume also allows the classes its own
  config built), never from a `_target_` and never by importing a module the user did not name;
- `init_args` must be plain data (numbers, strings, booleans, None) accepted by the class's
  constructor signature and inside sane bounds, and the network is first built on the `meta` device
  (no memory) and compared, tensor by tensor, with the weights in the file: an absurd record
  (a width of 10**9) is refused without any allocation attempt.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import re
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from ganforge.errors import CheckpointError, ConfigError, GanforgeError
from ganforge.models import protocols

RECORD_KEY = "ganforge"  # Lightning's checkpoint dict holds ganforge's record under this key
# GANSystem's attribute names, hence the state-dict prefixes of its networks.
G_PREFIX, D_PREFIX, G_EMA_PREFIX = "G.", "D.", "G_ema."
PREFIXES = {"generator": G_PREFIX, "discriminator": D_PREFIX, "generator_ema": G_EMA_PREFIX}
NAMES = {
    "generator": "generator",
    "discriminator": "discriminator",
    "generator_ema": "EMA generator",
}
MODEL_PACKAGE = "ganforge.models."
# The option of ganforge-train/-eval/-sample listing the model classes outside MODEL_PACKAGE that a
# checkpoint may name (importing a class runs its module's code: only the user can vouch for it).
ALLOWED_KEY = "allowed_classes"

# Bounds on a record's constructor arguments. No ganforge model needs more (widths are hundreds,
# depths a handful); anything beyond is a corrupt or crafted file, refused before it is built.
MAX_INIT_INT = 1 << 16
MAX_INIT_STR = 64
# Bounds on the record's data arguments (meta.data_args, which ganforge-eval may build the
# reference data from): wider than a network's because they hold counts (n_samples), but a crafted
# n_samples or n_modes of 10**12 must not turn into an allocation when the dataset is built. Real
# datasets have at most a few 100k images.
MAX_DATA_INT = 10_000_000
MAX_DATA_FLOAT = 1e6
MAX_DATA_STR = 64
# A constructor registers a few submodules, parameters and buffers per tensor it keeps (e.g. a
# Linear, its weight and bias, a ReLU); many more than that cannot be the network in the file.
PARTS_PER_TENSOR = 8
# Lightning's own keys a resume reads: their absence is a KeyError deep inside Lightning.
LIGHTNING_KEYS: dict[str, type | tuple[type, ...]] = {
    "state_dict": dict,
    "optimizer_states": list,
    "loops": dict,
    "global_step": int,
    "epoch": int,
}


@dataclass(frozen=True)
class NetworkSpec:
    """A network as a record describes it: a ganforge model class and validated plain arguments."""

    class_path: str
    cls: type[nn.Module]
    init_args: dict[str, Any]  # every constructor argument: the stored ones over the defaults


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: the record's facts, typed, and the raw dict for Lightning."""

    path: Path
    raw: dict[str, Any]
    iteration: int
    generator: NetworkSpec
    discriminator: NetworkSpec
    has_ema: bool
    meta: dict[str, Any]
    key: str = "ckpt"  # the option that named the file, for messages

    @property
    def where(self) -> str:
        return f"{self.key}={self.path}"

    @property
    def record(self) -> dict[str, Any]:
        return self.raw[RECORD_KEY]

    def state_of(self, which: str) -> dict[str, Tensor]:
        """The state dict of one network ("generator", "discriminator" or "generator_ema")."""
        prefix = PREFIXES[which]
        return {
            k[len(prefix) :]: v for k, v in self.raw["state_dict"].items() if k.startswith(prefix)
        }

    def build(self, which: str, finite: bool = True) -> nn.Module:
        """Rebuild a network with its weights, in eval mode. `finite`: refuse NaN/inf weights,
        which would only draw blank pictures or NaN metrics."""
        spec = self.discriminator if which == "discriminator" else self.generator
        state = self.state_of(which)
        if finite:
            bad = next(
                (k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()),
                None,
            )
            if bad is not None:
                raise CheckpointError(
                    f"{self.where}: the {NAMES[which]} has non-finite weights "
                    f"(NaN or inf in {PREFIXES[which]}{bad}), so all it computes is NaN; the run "
                    "had diverged by this save: use an earlier checkpoint of it "
                    "(checkpoints/iter_*.ckpt)"
                )
        net = _construct(spec, self.where)
        # Shapes were compared with the meta-built network in `load`, so this cannot fail on them.
        net.load_state_dict(state)
        return net.eval()

    def build_generator(self, ema: bool = True) -> tuple[nn.Module, bool]:
        """The generator (its EMA copy when asked for and present), frozen, and whether EMA."""
        use_ema = ema and self.has_ema
        net = self.build("generator_ema" if use_ema else "generator")
        return net.requires_grad_(False), use_ema


def load(path: str | Path, key: str = "ckpt", allowed_classes: Iterable[str] = ()) -> Checkpoint:
    """Read and validate a ganforge checkpoint, or raise one CheckpointError naming `key=path`
    (the option the user typed) and the fix. Builds nothing and allocates nothing beyond the
    file's own tensors. `allowed_classes`: model class paths outside ganforge.models the record
    may name (see `allowed_option`)."""
    path = Path(path)
    raw = _read(path, key)
    record = raw.get(RECORD_KEY)
    where = f"{key}={path}"
    if not isinstance(record, dict) or not isinstance(raw.get("state_dict"), dict):
        raise CheckpointError(
            f"{where} is not a ganforge checkpoint (no 'ganforge' record with its networks); "
            "pass a checkpoint written by ganforge-train"
        )
    if not record:
        raise CheckpointError(f"{where} has an empty ganforge record; {_REWRITE}")
    state = raw["state_dict"]
    bad = next(
        (k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, Tensor))), None
    )
    if bad is not None:
        raise CheckpointError(f"{where}: state_dict entry {bad!r} is not a tensor; {_REWRITE}")
    iteration = record.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(
            f"{where}: the record's iteration={iteration!r} is not a count; {_REWRITE}"
        )
    has_ema = record.get("has_ema", False)
    if not isinstance(has_ema, bool):
        raise CheckpointError(f"{where}: the record's has_ema={has_ema!r} is not true/false")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: the record's meta is not a mapping; {_REWRITE}")
    noise = record.get("noise_rng")
    if noise is not None and not (isinstance(noise, Tensor) and noise.dtype == torch.uint8):
        raise CheckpointError(f"{where}: the record's noise_rng is not an RNG state; {_REWRITE}")
    allowed = frozenset(allowed_classes)
    _check_admitted(record, where, allowed)
    specs = {
        which: _spec(record, which, where, allowed) for which in ("generator", "discriminator")
    }
    networks = ["generator", "discriminator"] + (["generator_ema"] if has_ema else [])
    for which in networks:
        spec = specs["discriminator" if which == "discriminator" else "generator"]
        _check_weights(spec, which, state, where)
    return Checkpoint(
        path, raw, iteration, specs["generator"], specs["discriminator"], has_ema, meta, key
    )


def is_readable(path: str | Path, allowed_classes: Iterable[str] = ()) -> bool:
    """Whether `load` accepts the file (e.g. resume=auto skipping a half-written last.ckpt)."""
    try:
        load(path, allowed_classes=allowed_classes)
    except CheckpointError:
        return False
    return True


def check_resume(
    path: str | Path, generator: nn.Module, discriminator: nn.Module, key: str = "ckpt_path"
) -> dict[str, Any]:
    """The validated checkpoint dict to resume from, after checking it was written by networks
    like the ones this run built (class and constructor arguments) and holds what Lightning
    reads; else a CheckpointError naming the file and the differing settings. The classes of the
    networks this run built are allowed: the user's own config named them."""
    built = [describe_network(net)["class"] for net in (generator, discriminator)]
    ckpt = load(path, key, allowed_classes=built)
    where = f"{key}={ckpt.path}"
    for name, want in LIGHTNING_KEYS.items():
        value = ckpt.raw.get(name)
        if isinstance(value, bool) or not isinstance(value, want):
            raise CheckpointError(
                f"{where} lacks Lightning's {name!r} entry (or it is malformed), so training "
                "cannot resume from it; it can still be sampled or evaluated. Resume from "
                "another checkpoint of the run, or start a new run without ckpt_path"
            )
    differences = []
    for which, spec, built in (
        ("generator", ckpt.generator, generator),
        ("discriminator", ckpt.discriminator, discriminator),
    ):
        this = describe_network(built)
        if spec.class_path != this["class"]:
            differences.append(
                f"{which} {spec.class_path} (checkpoint) vs {this['class']} (this run)"
            )
            continue
        args = this["init_args"]
        for arg in sorted(set(spec.init_args) | set(args)):
            theirs, ours = spec.init_args.get(arg), args.get(arg)
            if theirs != ours:
                differences.append(f"{which} {arg}={theirs!r} (checkpoint) vs {ours!r} (this run)")
    if differences:
        raise CheckpointError(
            f"{where} was written by different networks than this run builds: "
            f"{'; '.join(differences)}. Resume with the checkpoint's settings (the model= and "
            "model.*/data.* overrides of that run, see its config_resolved.yaml) or start a new "
            "run without ckpt_path"
        )
    return ckpt.raw


def describe_network(module: nn.Module) -> dict[str, Any]:
    """A network as the record stores it: its class path and constructor arguments (kept by
    `models.layers.records_init_args`), enough for `load` to rebuild it without any config."""
    return {"class": protocols.class_path(module), "init_args": dict(module.init_args)}


def load_checkpoint(path: str | Path, allowed_classes: Iterable[str] = ()) -> dict[str, Any]:
    """The validated checkpoint dict (see `load`)."""
    return load(path, allowed_classes=allowed_classes).raw


def load_generator(
    path: str | Path, ema: bool = True, allowed_classes: Iterable[str] = ()
) -> tuple[nn.Module, dict[str, Any], bool]:
    """The generator of a checkpoint (EMA when asked and present), its record, and whether EMA."""
    ckpt = load(path, allowed_classes=allowed_classes)
    net, used_ema = ckpt.build_generator(ema)
    return net, ckpt.record, used_ema


def allowed_option(value: Any, key: str = ALLOWED_KEY) -> tuple[str, ...]:
    """The `allowed_classes` option as typed (null, one class path, or a list of them), checked:
    each entry is the full path of a class, `package.module.Class`."""
    if value is None:
        return ()
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, Sequence) or not all(
        isinstance(entry, str) and _is_class_path(entry) for entry in entries
    ):
        raise ConfigError(
            f"{key}={value!r} must be a list of model class paths, e.g. "
            f"{key}=[mypkg.nets.Generator,mypkg.nets.Discriminator]"
        )
    return tuple(entries)


def model_class(
    class_path: str, where: str = "ckpt=<checkpoint>", allowed_classes: Iterable[str] = ()
) -> type[nn.Module]:
    """Resolve a class path to a ganforge model class or one of `allowed_classes`, refusing
    anything else before importing anything. `where` names the file for messages (`ckpt=PATH`)."""
    module_name, _, name = class_path.rpartition(".")
    own = module_name.startswith(MODEL_PACKAGE)
    if not _admitted(class_path, frozenset(allowed_classes)):
        raise _refused([class_path], where)
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        fix = (
            "upgrade ganforge or use a checkpoint from this version"
            if own
            else "make its module importable here (install it or add it to PYTHONPATH)"
        )
        raise CheckpointError(
            f"{where} names model class {class_path!r}, which cannot be imported here; {fix}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module_name):
        raise CheckpointError(f"{where}: {class_path!r} is not a model class (an nn.Module)")
    return cls


# --- internals ------------------------------------------------------------------------------------

_REWRITE = "the file is damaged or was not written by ganforge-train; use another checkpoint"


def _read(path: Path, key: str) -> dict[str, Any]:
    if path.is_dir():
        raise CheckpointError(
            f"{key}={path} is a directory, not a checkpoint file; pass a .ckpt file, e.g. a "
            "run's checkpoints/last.ckpt"
        )
    if not path.is_file():
        raise CheckpointError(f"{key}={path} does not exist; pass the path of a .ckpt file")
    try:
        # weights_only explicitly: an environment's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only
        # overrides callers that leave it unset. A pickled object is then refused, not run.
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{key}={path} cannot be read ({err.strerror or err})") from None
    except Exception as err:  # unpickling garbage can raise almost anything
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(
                f"{key}={path} holds a pickled Python object ({found.group(1)}), which no "
                "ganforge checkpoint does and which could run code when loaded: refused. Use a "
                "checkpoint written by ganforge-train, from a source you trust"
            ) from None
        raise CheckpointError(
            f"{key}={path} is corrupt, truncated or not a PyTorch checkpoint ({_why(err)}); "
            "use another checkpoint, e.g. checkpoints/iter_*.ckpt of the same run"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{key}={path} is not a ganforge checkpoint (it holds a {type(raw).__name__}, not "
            "Lightning's dict); pass a checkpoint written by ganforge-train"
        )
    return raw


def _why(err: Exception) -> str:
    """The informative part of torch.load's error: its unpickler's own line when there is one
    (the rest of that message is advice to load unsafely), else the first line."""
    text = str(err)
    _, marker, detail = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (detail if marker else text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0].split(". ")[0][:160]


def _is_class_path(text: str) -> bool:
    parts = text.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


def _admitted(class_path: str, allowed: frozenset[str]) -> bool:
    return _is_class_path(class_path) and (
        class_path.startswith(MODEL_PACKAGE) or class_path in allowed
    )


def _refused(class_paths: list[str], where: str) -> CheckpointError:
    named = " and ".join(repr(c) for c in class_paths)
    return CheckpointError(
        f"{where} names model class {named}, which is neither one of ganforge's models "
        f"({MODEL_PACKAGE}*) nor on the {ALLOWED_KEY} option; refusing to build it. If the file "
        f"is yours and you trust that code, pass {ALLOWED_KEY}=[{','.join(class_paths)}]"
    )


def _check_admitted(record: dict[str, Any], where: str, allowed: frozenset[str]) -> None:
    """Refuse, naming every one at once, the record's classes that may not be imported."""
    paths = [
        desc["class"]
        for desc in (record.get("generator"), record.get("discriminator"))
        if isinstance(desc, dict) and isinstance(desc.get("class"), str)
    ]
    refused = list(dict.fromkeys(c for c in paths if not _admitted(c, allowed)))
    if refused:
        raise _refused(refused, where)


def _spec(record: dict[str, Any], which: str, where: str, allowed: frozenset[str]) -> NetworkSpec:
    desc = record.get(which)
    if not isinstance(desc, dict) or not isinstance(desc.get("class"), str):
        raise CheckpointError(
            f"{where}: the record's {which} entry is missing or malformed (no class); {_REWRITE}"
        )
    class_path = desc["class"]
    cls = model_class(class_path, where, allowed)
    init_args = desc.get("init_args", {})
    if not isinstance(init_args, dict):
        raise CheckpointError(f"{where}: malformed init_args for the {which} (not a mapping)")
    return NetworkSpec(class_path, cls, _check_init_args(cls, init_args, which, where))


def _check_init_args(
    cls: type[nn.Module], init_args: dict[str, Any], which: str, where: str
) -> dict[str, Any]:
    """The arguments, checked as plain data against the constructor's signature and bounds."""
    init = inspect.unwrap(cls.__init__)  # records_init_args wraps it
    parameters = dict(inspect.signature(init).parameters)
    parameters.pop(next(iter(parameters)))  # self
    try:
        hints = typing.get_type_hints(init)
    except Exception as err:  # an allowed outside class whose annotations do not resolve
        raise CheckpointError(
            f"{where}: {cls.__qualname__}.__init__'s type annotations cannot be read "
            f"({type(err).__name__}: {err}); a model class annotates its plain arguments"
        ) from None
    for name, value in init_args.items():
        param = parameters.get(name) if isinstance(name, str) else None
        if param is None or param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise CheckpointError(
                f"{where}: the {which}'s init_args has {name!r}, which {cls.__qualname__} does not "
                f"take (it takes {sorted(parameters)}); {_REWRITE}"
            )
        problem = _plain_value_problem(value, hints.get(name))
        if problem:
            raise CheckpointError(
                f"{where}: the {which}'s init_args {name}={short(value)} {problem}; {_REWRITE}"
            )
    missing = [n for n, p in parameters.items() if p.default is p.empty and n not in init_args]
    if missing:
        raise CheckpointError(f"{where}: the {which}'s init_args lack {missing}; {_REWRITE}")
    # An argument added to the class after the file was written built the default network then.
    defaults = {n: p.default for n, p in parameters.items() if p.default is not p.empty}
    return {**defaults, **init_args}


def _plain_value_problem(value: Any, hint: Any) -> str | None:
    """Why `value` is not an acceptable `hint` argument, or None when it is."""
    allowed = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    if value is None:
        return None if type(None) in allowed else "must not be null"
    if isinstance(value, bool):
        return None if bool in allowed else "must not be true/false"
    if isinstance(value, int):
        if int not in allowed and float not in allowed:
            return "must not be a number"
        if not 0 <= value <= MAX_INIT_INT:
            return f"is outside 0..{MAX_INIT_INT}"
        return None
    if isinstance(value, float):
        if float not in allowed:
            return "must be an integer" if int in allowed else "must not be a number"
        return (
            None if math.isfinite(value) and abs(value) <= MAX_INIT_INT else "is not a sane number"
        )
    if isinstance(value, str):
        if str not in allowed:
            return "must not be a string"
        return None if len(value) <= MAX_INIT_STR else "is too long"
    return f"is a {type(value).__name__}, not plain data"


def short(value: Any) -> str:
    """A stored value as messages show it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def data_value_problem(value: Any, default: Any) -> str | None:
    """Why a stored data argument (meta.data_args) cannot replace the config's `default`, or None
    when it can."""
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(default, bool):
        ok = isinstance(value, bool) and (default is None or isinstance(default, bool))
        return None if ok else "is not the true/false the config has"
    if isinstance(value, (int, float)):
        if default is not None and not isinstance(default, (int, float)):
            return "is a number where the config has text"
        if isinstance(value, int) and not 0 <= value <= MAX_DATA_INT:
            return f"is outside 0..{MAX_DATA_INT}"
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_DATA_FLOAT):
            return "is not a sane number"
        return None
    if isinstance(value, str):
        if not isinstance(default, str):
            return "is text where the config has a number or null"
        if "${" in value:
            return "is an interpolation, not a value"
        return None if len(value) <= MAX_DATA_STR else "is too long"
    return f"is a {type(value).__name__}, not a number, string or boolean"


def _construct(spec: NetworkSpec, where: str) -> nn.Module:
    try:
        return spec.cls(**spec.init_args)
    except GanforgeError as err:
        # The model's own check (e.g. an image size it does not support) names a config key the
        # user never typed: say that the checkpoint holds the value.
        raise CheckpointError(
            f"{where}: its {spec.class_path} settings are invalid ({err}); {_REWRITE}"
        ) from None


@contextlib.contextmanager
def _at_most_parts(limit: int, where: str, which: str) -> Iterator[None]:
    """Stop a constructor once it has registered more submodules, parameters and buffers than
    the file's tensors could fill. On the meta device a huge width costs nothing, but a huge depth
    still builds that many Python objects: a record with depth=60000 would take a minute."""
    count = 0

    def tick(*_: Any) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise CheckpointError(
                f"{where}: the {which}'s init_args describe a network far larger than the weights "
                f"in the file; {_REWRITE}"
            )

    handles = [
        register_module_module_registration_hook(tick),
        register_module_parameter_registration_hook(tick),
        register_module_buffer_registration_hook(tick),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_weights(spec: NetworkSpec, which: str, state: dict[str, Tensor], where: str) -> None:
    """The file's tensors for `which` match, name for name and shape for shape, the network its
    record describes. The network is built on the meta device: no memory, whatever the sizes."""
    prefix = PREFIXES[which]
    have = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        with torch.device("meta"), _at_most_parts(PARTS_PER_TENSOR * len(have) + 64, where, which):
            expected = spec.cls(**spec.init_args).state_dict()
    except CheckpointError:
        raise
    except GanforgeError as err:
        raise CheckpointError(
            f"{where}: its {spec.class_path} settings are invalid ({err})"
        ) from None
    except Exception as err:  # a record the constructor cannot digest
        raise CheckpointError(
            f"{where}: the {which}'s init_args cannot build {spec.class_path} "
            f"({type(err).__name__}: {err}); {_REWRITE}"
        ) from None
    missing, extra = sorted(set(expected) - set(have)), sorted(set(have) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{where}: the {which} weights do not fit its record ({len(missing)} missing, e.g. "
            f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); {_REWRITE}"
        )
    for name, tensor in expected.items():
        if (
            have[name].shape != tensor.shape
            or have[name].dtype.is_floating_point != tensor.dtype.is_floating_point
        ):
            raise CheckpointError(
                f"{where}: the {which} weight {prefix}{name} has shape {tuple(have[name].shape)} "
                f"but its record's {spec.class_path} needs {tuple(tensor.shape)}; {_REWRITE}"
            )


# --- writing the record -------------------------------------------------------------------------


def write_record(
    generator: nn.Module,
    discriminator: nn.Module,
    *,
    iteration: int,
    loss: str,
    has_ema: bool,
    conditional: str,
    n_classes: int | None,
    meta: dict[str, Any],
    noise_rng: Tensor,
    wandb_run_id: str | None = None,
) -> dict[str, Any]:
    """The record `GANSystem` saves under RECORD_KEY (read back by `load`): tensors and plain
    data only, so the checkpoint loads with weights_only=True. Besides the facts above it holds
    the exact-resume state: the training noise stream, the global RNGs as of now (DiffAugment,
    dropout, flips) and the W&B run id (`loggers.wandb_run_id`), so a resumed run continues the
    same W&B run."""
    from ganforge.rng import get_rng_states  # rng.py owns the global streams

    return {
        "iteration": iteration,
        "generator": describe_network(generator),
        "discriminator": describe_network(discriminator),
        "loss": loss,
        "has_ema": has_ema,
        "conditional": conditional,
        "n_classes": n_classes,
        "meta": meta,
        "noise_rng": noise_rng,
        "wandb_run_id": wandb_run_id,
        "rng": get_rng_states(),
    }


@dataclass(frozen=True)
class ResumeState:
    """The exact-resume part of a record, as `write_record` stored it (absent fields: None)."""

    iteration: int
    noise_rng: Tensor | None
    rng: dict[str, Any] | None
    wandb_run_id: str | None


def stored_iteration(path: str | Path) -> int:
    """The GAN iteration a checkpoint file was written at (validated by `load`, nothing built),
    for readers that need only that, e.g. the report. One CheckpointError when unreadable."""
    record = load_checkpoint(path).get(RECORD_KEY)
    iteration = record.get("iteration") if isinstance(record, dict) else None
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(
            f"{path}: no ganforge record with a GAN iteration (found {iteration!r}); it is not a "
            "checkpoint written by ganforge-train"
        )
    return iteration


def resume_state(record: dict[str, Any]) -> ResumeState:
    """Read back what `write_record` stored for resuming; checkpoints from before exact resume
    lack the RNG states, and every field is optional in a record that `load` has validated."""
    run_id = record.get("wandb_run_id")
    return ResumeState(
        iteration=int(record.get("iteration", 0)),
        noise_rng=record.get("noise_rng"),
        rng=record.get("rng"),
        wandb_run_id=str(run_id) if run_id else None,
    )
