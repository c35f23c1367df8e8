"""What ganforge asks of a generator and a discriminator: the one place the interface is written.

Any `nn.Module` with these members trains, samples and evaluates, whether it lives in
`ganforge.models` or in the user's own package (its checkpoints name its class; ganforge-sample and
ganforge-eval rebuild it only when it is on their `allowed_classes` list, see `checkpoint.py`).

Generator (`G`):
- `z_dim: int` — the width of the latent it is called with;
- `n_classes: int | None` — the classes a conditional G draws, None when unconditional;
- `output_kind: "image" | "vector"` — images are (N, C, H, W) on the data's [-1, 1] scale (a
  tanh output, or unbounded as R3GAN's G; ganforge clamps only where it writes pixels), vectors
  (N, D) (the toy 2-D points). `is_image(G)` is the one answer to "is this image data?" below the
  data module, which the run builder checks against `datamodule.is_image`; the data's own answer
  is `is_image_data(channels)`, read by the DataModule and by reproduce (which has only the config);
- `forward(z, y=None)`: ganforge calls it through `run_generator` below: `G(z)` when
  unconditional, `G(z, y)` with int64 labels;
- `init_args: dict` — its constructor arguments as plain data, which the checkpoint stores to
  rebuild it without the config: decorate `__init__` with `layers.records_init_args`.

Discriminator (`D`):
- `pack: int` — D judges packs of this many samples (PacGAN; 1 = off) and returns one logit per
  pack: `D(x)` has shape (N / pack,) or (N / pack, 1);
- `conditional: "none" | "projection" | "acgan"` — how it reads labels (`layers.CONDITIONAL`);
- `forward(x, y=None)`: called `D(x)` when unconditional, `D(x, y)` otherwise, by
  `GANSystem.discriminate`, the one caller (it adds DiffAugment and ACGAN's `judge`);
- `judge(x, y)` -> (logits, per-sample class logits), only when `conditional == "acgan"`;
- `init_args: dict`, as for G.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import torch
from torch import Tensor, nn

from ganforge.errors import ConfigError
from ganforge.models.layers import CONDITIONAL

OutputKind = Literal["image", "vector"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)


@runtime_checkable
class Generator(Protocol):
    z_dim: int
    n_classes: int | None
    output_kind: OutputKind
    init_args: dict[str, Any]

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Discriminator(Protocol):
    pack: int
    conditional: str
    init_args: dict[str, Any]

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


def run_generator(generator: nn.Module, z: Tensor, y: Tensor | None = None) -> Tensor:
    """G's output for latents `z` and int64 labels `y` (None when unconditional): the one way
    ganforge calls a generator, in training, sampling and evaluation. An unconditional G is
    called with z alone, so it never sees a label argument (`check_generator` also made sure
    `forward(z, None)` binds, for callers holding a y that may be None)."""
    return generator(z) if y is None else generator(z, y)


def is_image(generator: Generator) -> bool:
    """Whether `generator` draws images (else vectors): read from its declared `output_kind`."""
    return generator.output_kind == "image"


def is_image_data(channels: int | None) -> bool:
    """Whether data with this `channels` (a DataModule's, or `data.channels` of a config) is
    images: image data declares its channel count, vector data has none. Beside `is_image`
    because reproduce must answer from a config alone, with no DataModule or G built."""
    return channels is not None


def class_path(module: object) -> str:
    """`module`'s class as `package.module.Class`: the one spelling, shared by messages, the
    checkpoint record's `class` and the reference cache's `data_class` (a stored key, so a
    change here would orphan saved checkpoints and caches)."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_generator(generator: object, key: str = "model.generator") -> None:
    """Raise a ConfigError naming `key` (the option that built it) and the member it lacks
    unless `generator` has the Generator interface."""
    where = f"{key} ({class_path(generator)})"
    _check_module(generator, where)
    z_dim = getattr(generator, "z_dim", None)
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
        raise ConfigError(f"{where} needs an attribute z_dim, a positive int (got {z_dim!r})")
    if not hasattr(generator, "n_classes"):
        raise ConfigError(f"{where} needs an attribute n_classes: None, or its class count")
    n_classes = generator.n_classes
    if n_classes is not None and (
        isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2
    ):
        raise ConfigError(f"{where}.n_classes={n_classes!r} must be None or an int >= 2")
    kind = getattr(generator, "output_kind", None)
    if kind not in OUTPUT_KINDS:
        raise ConfigError(
            f"{where} needs an attribute output_kind, one of {list(OUTPUT_KINDS)} (got {kind!r})"
        )
    _check_forward(generator, where, "z")
    _check_init_args(generator, where)


def check_discriminator(discriminator: object, key: str = "model.discriminator") -> None:
    """As `check_generator`, for the Discriminator interface."""
    where = f"{key} ({class_path(discriminator)})"
    _check_module(discriminator, where)
    pack = getattr(discriminator, "pack", None)
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"{where} needs an attribute pack, a positive int (got {pack!r})")
    conditional = getattr(discriminator, "conditional", None)
    if conditional not in CONDITIONAL:
        raise ConfigError(
            f"{where} needs an attribute conditional, one of {list(CONDITIONAL)} "
            f"(got {conditional!r})"
        )
    _check_forward(discriminator, where, "x")
    if conditional == "acgan" and not callable(getattr(discriminator, "judge", None)):
        raise ConfigError(
            f"{where} is an ACGAN discriminator (conditional=acgan) but has no judge(x, y) "
            "method returning (logits, class logits)"
        )
    _check_init_args(discriminator, where)


def check_models(
    generator: object, discriminator: object, *, image: bool, data: str = "the data"
) -> None:
    """Check a run's networks before any work: each has its interface, G draws what the data
    holds (`image`: `datamodule.is_image`; `data`: the dataset's name for messages), and G and D
    agree on whether the model is class-conditional."""
    check_generator(generator)
    check_discriminator(discriminator)
    g: Any = generator
    d: Any = discriminator
    want = "image" if image else "vector"
    if g.output_kind != want:
        raise ConfigError(
            f"model.generator ({class_path(g)}) draws {g.output_kind}s but data={data} holds "
            f"{want}s; pick a model for this data (e.g. model=mlp works on both)"
        )
    check_conditional_pair(g, d)


def check_conditional_pair(generator: Any, discriminator: Any) -> None:
    """G and D agree on whether the model is class-conditional: the networks are the one owner
    of that fact (G's `n_classes`, D's `conditional`), and this the one check of it."""
    g, d = generator, discriminator
    if (g.n_classes is None) != (d.conditional == "none"):
        raise ConfigError(
            f"model.generator ({class_path(g)}) has n_classes={g.n_classes} but "
            f"model.discriminator ({class_path(d)}) has conditional={d.conditional}; build both "
            "from model.conditional"
        )


# --- internals ------------------------------------------------------------------------------------


def _check_module(net: object, where: str) -> None:
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{where} is a {type(net).__name__}, not a torch.nn.Module")


def _check_forward(net: nn.Module, where: str, first: str) -> None:
    """forward must take (first, y=None): ganforge calls it with one or two tensors."""
    try:
        signature = inspect.signature(net.forward)
        signature.bind(torch.empty(0))
        signature.bind(torch.empty(0), None)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}.forward must take ({first}, y=None): ganforge calls it with {first} alone "
            f"when unconditional and with ({first}, labels) when conditional"
        ) from None


def _check_init_args(net: nn.Module, where: str) -> None:
    init_args = getattr(net, "init_args", None)
    if not isinstance(init_args, dict):
        raise ConfigError(
            f"{where} has no init_args, which checkpoints store to rebuild it: decorate its "
            "__init__ with ganforge.models.layers.records_init_args"
        )
