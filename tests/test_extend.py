"""The README's Development recipes, followed once each from outside the package.

A package written here (`ganforge_recipe_ext`, put on PYTHONPATH) holds a new loss (its D and G
functions), a new model (a generator and a discriminator with the interface of
`ganforge/models/protocols.py`) and a new dataset (one `InMemoryDataModule` subclass); a config
folder written here holds one yaml for each and reaches the commands through Hydra's search path
(`hydra.searchpath=[file://DIR]`). Nothing in ganforge or its tests lists them. Each recipe then
trains with `debug=fast_dev_run`, trains a few iterations that leave a checkpoint, and that
checkpoint is sampled and evaluated by the console commands. The model's checkpoint names its
class, so ganforge-sample and ganforge-eval rebuild it only when `allowed_classes` lists it.

The commands run through tests/commands_driver.py: one process, torch imported once.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

TESTS = Path(__file__).parent
EXT = "ganforge_recipe_ext"
ERROR_LINE = re.compile(r"\b[A-Z]\w*Error: ")

SOURCES = {
    "__init__.py": "",
    "losses.py": """
import torch.nn.functional as F
from torch import Tensor


def soft_hinge_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # The hinge with its corners smoothed: softplus(1 - r) + softplus(1 + f).
    return F.softplus(1 - real_logits).mean() + F.softplus(1 + fake_logits).mean()


def soft_hinge_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    return -fake_logits.mean()


def paired_hinge_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    # Each real against its own fake, by a margin of 1.
    return F.relu(1 - (real_logits - fake_logits)).mean()


def paired_hinge_g(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    assert real_logits is not None, "the yaml says generator_needs_real: true"
    return F.relu(1 - (fake_logits - real_logits)).mean()
""",
    "nets.py": """
from __future__ import annotations

from torch import Tensor, nn

from ganforge.models.layers import records_init_args


class Generator(nn.Module):
    output_kind = "vector"

    @records_init_args
    def __init__(self, z_dim: int = 4, dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.z_dim, self.n_classes = z_dim, None
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    pack = 1
    conditional = "none"

    @records_init_args
    def __init__(self, dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x).squeeze(1)


class Unlabelled(Generator):
    # A generator that does not say what it draws: refused when the run is built.

    output_kind = None
""",
    "data.py": '''
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ganforge.data.base import InMemoryDataModule


class StripesDataModule(InMemoryDataModule):
    """8x8 grey images of stripes one pixel wide: horizontal (label 0) or vertical (label 1)."""

    name = "stripes"
    _channels, _image_size, _n_classes = 1, 8, 2

    def __init__(self, *, n_samples: int = 64, **kwargs: Any) -> None:
        self.n_samples = n_samples
        super().__init__(**kwargs)

    def load(self, split: str) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(int(split == "test"))
        label = torch.randint(2, (self.n_samples,), generator=g)
        phase = torch.randint(2, (self.n_samples, 1), generator=g)
        lines = ((torch.arange(8) + phase) % 2).to(torch.uint8) * 255  # (N, 8)
        rows = lines[:, :, None].expand(-1, 8, 8)
        image = torch.where(label[:, None, None] == 0, rows, rows.transpose(1, 2))
        return image.unsqueeze(1).contiguous(), label
''',
}
CONFIGS = {
    "loss/soft_hinge.yaml": f"""
_target_: ganforge.losses.GANLoss
name: soft_hinge
discriminator: {{_target_: {EXT}.losses.soft_hinge_d, _partial_: true}}
generator: {{_target_: {EXT}.losses.soft_hinge_g, _partial_: true}}
probabilistic: false # D's output is a score, not the logit of a probability
saturating: false
threshold: 0 # D's decision boundary: the hinge splits real from fake at 0
""",
    # A loss whose G reads D(x), with facts unlike any of ganforge's own.
    "loss/paired_hinge.yaml": f"""
_target_: ganforge.losses.GANLoss
name: paired_hinge
discriminator: {{_target_: {EXT}.losses.paired_hinge_d, _partial_: true}}
generator: {{_target_: {EXT}.losses.paired_hinge_g, _partial_: true}}
generator_needs_real: true
saturating: true
threshold: null # only differences count: no absolute boundary
""",
    "model/tiny.yaml": f"""
name: tiny
z_dim: 4
generator: {{_target_: {EXT}.nets.Generator, z_dim: "${{model.z_dim}}", dim: "${{data.dim}}"}}
discriminator: {{_target_: {EXT}.nets.Discriminator, dim: "${{data.dim}}"}}
""",
    "data/stripes.yaml": f"""
_target_: {EXT}.data.StripesDataModule
name: stripes
channels: 1
image_size: 8
n_classes: 2
n_samples: 64
batch_size: 16
flip: false
num_workers: 0
drop_last: true
""",
}
TINY_MLP = ["model=mlp", "model.z_dim=4", "model.hidden=16", "model.depth=1"]
# recipe -> the train overrides that use it (the rest from ganforge's own options).
RECIPES = {
    "loss": ["loss=soft_hinge", "data=toy_ring", "data.n_samples=512", *TINY_MLP],
    "model": ["model=tiny", "data=toy_ring", "data.n_samples=512"],
    "dataset": ["data=stripes", *TINY_MLP],
}
ALLOWED = f"allowed_classes=[{EXT}.nets.Generator,{EXT}.nets.Discriminator]"
EXTRA = {"model": [ALLOWED]}  # what sample and eval need beyond the checkpoint
EVAL = {  # small evaluations: mode coverage for the ring, FID on 20 samples for the stripes
    "loss": ["metrics.n_samples=200"],
    "model": ["metrics.n_samples=200"],
    "dataset": ["metrics.names=[fid]", "metrics.n_samples=20", "metrics.reference_count=20"],
}


def cases(root: Path) -> list[dict[str, Any]]:
    search = f"hydra.searchpath=[file://{root / 'conf'}]"
    env = {
        "GANFORGE_LOG_DIR": str(root / "logs"),
        "GANFORGE_DATA_DIR": str(root / "data"),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": None,
    }
    found = []
    for recipe, overrides in RECIPES.items():
        run, ckpt = root / recipe, root / recipe / "checkpoints" / "last.ckpt"
        common = [search, *overrides, "logger=none"]
        for name, argv in (
            ("fast", ["debug=fast_dev_run", f"hydra.run.dir={root / 'fast' / recipe}"]),
            ("train", ["debug=smoke", "train.max_iters=2", f"hydra.run.dir={run}"]),
        ):
            found.append({"id": f"{recipe}-{name}", "argv": [*common, *argv]})
        found.append(
            {
                "id": f"{recipe}-sample",
                "command": "ganforge-sample",
                "argv": [f"ckpt={ckpt}", f"out={run / 'grid.png'}", "n=16", *EXTRA.get(recipe, [])],
            }
        )
        found.append(
            {
                "id": f"{recipe}-eval",
                "command": "ganforge-eval",
                "argv": [
                    search,
                    f"ckpt={ckpt}",
                    f"out={run / 'eval.json'}",
                    *EVAL[recipe],
                    *EXTRA.get(recipe, []),
                ],
            }
        )
    # A model without the interface: refused before training, naming the member it lacks.
    found.append(
        {
            "id": "model-without-output-kind",
            "argv": [
                search,
                *RECIPES["model"],
                f"model.generator._target_={EXT}.nets.Unlabelled",
                "debug=fast_dev_run",
                f"hydra.run.dir={root / 'unlabelled'}",
            ],
        }
    )
    # The outside model's checkpoint without the allow-list: refused before anything is imported.
    found.append(
        {
            "id": "model-sample-not-allowed",
            "command": "ganforge-sample",
            "argv": [f"ckpt={root / 'model' / 'checkpoints' / 'last.ckpt'}", "out=x.png"],
        }
    )
    for case in found:
        case.update(env=env, cwd=str(root))
    return found


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("recipes")
    for name, text in SOURCES.items():
        path = root / "ext" / EXT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
    for name, text in CONFIGS.items():
        path = root / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
    (root / "cases.json").write_text(json.dumps(cases(root)))
    path = [str(root / "ext"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, str(TESTS / "commands_driver.py"), str(root / "cases.json")]
    proc = subprocess.run(
        [*cmd, str(root / "results.json")], env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return root, json.loads((root / "results.json").read_text())


def succeeded(results: dict[str, dict[str, Any]], case: str) -> None:
    assert results[case]["code"] == 0, results[case]["output"][-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_trains_fast_dev_run(outcome, recipe: str) -> None:
    root, results = outcome
    succeeded(results, f"{recipe}-fast")
    assert not (root / "fast" / recipe / "checkpoints").exists()  # fast_dev_run writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_checkpoint_names_what_it_was_built_from(outcome, recipe: str) -> None:
    import torch

    root, results = outcome
    succeeded(results, f"{recipe}-train")
    record = torch.load(root / recipe / "checkpoints" / "last.ckpt", weights_only=True)["ganforge"]
    assert record["iteration"] == 2
    if recipe == "model":
        assert record["generator"]["class"] == f"{EXT}.nets.Generator"
        assert record["discriminator"]["init_args"] == {"dim": 2, "hidden": 16}
    if recipe == "dataset":
        assert record["meta"]["data"] == "stripes"
        assert record["generator"]["init_args"]["image_size"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_samples(outcome, recipe: str) -> None:
    root, results = outcome
    succeeded(results, f"{recipe}-sample")
    grid = Image.open(root / recipe / "grid.png")
    if recipe == "dataset":
        assert grid.size == (4 * 10 + 2, 4 * 10 + 2)  # 16 images of 8 px, 2 px padding
    else:
        assert grid.size == (400, 400)  # a scatter of the generated points


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_evaluates(outcome, recipe: str) -> None:
    root, results = outcome
    succeeded(results, f"{recipe}-eval")
    report = json.loads((root / recipe / "eval.json").read_text())
    wanted = {"fid"} if recipe == "dataset" else {"modes_captured", "high_quality"}
    assert wanted <= set(report["metrics"]), report


@pytest.mark.slow
def test_outside_model_not_allowed_is_refused_naming_the_option(outcome) -> None:
    root, results = outcome
    result = results["model-sample-not-allowed"]
    assert result["code"] == 2 and "Traceback" not in result["output"], result["output"][-3000:]
    errors = [line for line in result["output"].splitlines() if ERROR_LINE.search(line)]
    assert len(errors) == 1, result["output"][-3000:]
    assert f"allowed_classes=[{EXT}.nets.Generator,{EXT}.nets.Discriminator]" in errors[0]
    assert "refusing" in errors[0] and not (root / "x.png").exists()


@pytest.mark.slow
def test_a_model_without_the_interface_is_refused_before_training(outcome) -> None:
    root, results = outcome
    result = results["model-without-output-kind"]
    assert result["code"] == 2, result["output"][-3000:]
    errors = [line for line in result["output"].splitlines() if ERROR_LINE.search(line)]
    assert len(errors) == 1 and f"model.generator ({EXT}.nets.Unlabelled)" in errors[0]
    assert "output_kind" in errors[0] and not (root / "unlabelled" / "checkpoints").exists()


def test_a_loss_given_as_functions_is_used_and_checked() -> None:
    import torch

    from ganforge.errors import ConfigError
    from ganforge.losses import GANLoss, hinge_d, hinge_g

    loss = GANLoss("mine", discriminator=hinge_d, generator=hinge_g, probabilistic=True)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert loss.discriminator(real, fake) == hinge_d(real, fake) and not loss.generator_needs_real
    assert loss.generator(fake) == hinge_g(fake)
    assert loss.d_output(torch.zeros(3)).item() == 0.5  # probabilistic: through a sigmoid
    with pytest.raises(ConfigError, match=r"loss\.generator=None must be a function"):
        GANLoss("mine", discriminator=hinge_d)
    with pytest.raises(ConfigError, match=r"loss\.probabilistic='yes' must be true or false"):
        GANLoss("mine", discriminator=hinge_d, generator=hinge_g, probabilistic="yes")


def test_a_loss_from_outside_states_its_facts_in_its_yaml(tmp_path, monkeypatch) -> None:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from conftest import quiet_trainer, toy_system
    from ganforge.health import signals
    from ganforge.health.rules import Diagnoser, Thresholds

    package = tmp_path / EXT
    package.mkdir()
    for name in ("__init__.py", "losses.py"):
        (package / name).write_text(SOURCES[name].lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    soft, paired = (
        instantiate(OmegaConf.create(CONFIGS[f"loss/{name}.yaml"]))
        for name in ("soft_hinge", "paired_hinge")
    )
    assert (soft.threshold, soft.saturating, soft.generator_needs_real) == (0.0, False, False)
    assert (paired.threshold, paired.saturating, paired.generator_needs_real) == (None, True, True)
    # The parts that ask about a loss read these facts, not its name.
    real, fake = torch.tensor([5.0, 6.0]), torch.tensor([4.0, 4.5])
    assert signals.d_accuracy(real, fake, soft) == (1.0, 0.0)  # split at 0
    assert signals.d_accuracy(real, fake, paired) == (1.0, 1.0)  # split at the means' midpoint
    assert Diagnoser(Thresholds(), 1, paired).saturating
    # G's step hands the real logits to a loss that says it needs them (its G asserts so).
    system, dm = toy_system(loss=paired, max_iters=2)
    quiet_trainer().fit(system, dm)
    assert system.iteration == 2 and math.isfinite(system.last_metrics["train/g_loss"])
