"""The training settings have one owner, `ganforge.settings.Settings`: the config's `system` node
is its fields at their defaults, and conf/system/default.yaml sets only what other groups give.
The health monitor's likewise: `ganforge.health.settings.HealthSettings`, `callbacks.health`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, compose_train
from ganforge import overrides
from ganforge.errors import ConfigError
from ganforge.health.rules import STATES
from ganforge.health.settings import HealthSettings
from ganforge.regularizers import PENALTIES
from ganforge.settings import Settings, field_defaults

FIELDS = [f.name for f in dataclasses.fields(Settings)]
# What conf/system/default.yaml itself says about the settings: nothing but where a value comes
# from (every value an interpolation of another group's key).
OWN = yaml.safe_load((CONF / "system" / "default.yaml").read_text())


def test_the_yaml_sets_only_what_other_groups_give() -> None:
    wired = {k: v for k, v in OWN.items() if k in FIELDS}
    assert wired, "the yaml reads train.max_iters, seed, optim.* and data.* into the settings"
    for key, value in wired.items():
        assert isinstance(value, str) and value.startswith("${"), (key, value)
    # Everything else in the file is the wiring of the parts, not a setting.
    parts = {"defaults", "_target_", "generator", "discriminator", "loss"}
    assert set(OWN) - set(wired) == parts | {"g_optimizer", "d_optimizer"}


def test_every_setting_is_in_the_composed_config_at_its_default(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path)
    system = OmegaConf.to_container(cfg.system, resolve=True)
    assert [k for k in system if k in FIELDS] == FIELDS  # each once, in the record's order
    defaults = field_defaults(Settings)
    for name in FIELDS:
        if name not in OWN:
            assert system[name] == defaults[name], name
    # The wired ones are what their groups say.
    assert system["max_iters"] == cfg.train.max_iters == 2000
    assert system["seed"] == cfg.seed == 0
    assert system["batch_size"] == cfg.data.batch_size
    assert Settings(**{k: system[k] for k in FIELDS}) == Settings(
        max_iters=2000, batch_size=cfg.data.batch_size
    )


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("system.r2_gamma=0.5", "r2_gamma", 0.5),
        ("system.nan_policy=skip", "nan_policy", "skip"),
        ("system.ema_decay=null", "ema_decay", None),
        ("system.compile=reduce-overhead", "compile", "reduce-overhead"),
        ("system.max_iters=7", "max_iters", 7),  # a wired key can still be set directly
    ],
)
def test_a_setting_the_yaml_does_not_list_is_overridden(tmp_path, override, field, value) -> None:
    overrides.check_argv([override], CONF, "train", "ganforge-train")  # no did-you-mean refusal
    system = compose_train(tmp_path, override).system
    assert OmegaConf.to_container(system, resolve=True)[field] == value


def test_a_misspelt_setting_names_the_closest_field() -> None:
    with pytest.raises(ConfigError, match=r"system.n_critc is not a setting; did you mean "
                       r"system.n_critic\?"):  # fmt: skip
        overrides.check_argv(["system.n_critc=2"], CONF, "train", "ganforge-train")


def test_every_penalty_weight_and_interval_is_a_system_key(tmp_path: Path) -> None:
    system = compose_train(tmp_path).system
    for p in PENALTIES:
        for key in filter(None, (p.weight, p.interval)):
            assert key in FIELDS and key in system, key
            assert compose_train(tmp_path, f"system.{key}=3").system[key] == 3


# --- the health monitor's settings: one record, HealthSettings ----------------------------------
def test_every_health_setting_is_in_the_composed_config_at_its_default(tmp_path: Path) -> None:
    own = yaml.safe_load((CONF / "callbacks" / "default.yaml").read_text())["health"]
    assert set(own) == {"_target_", "dirpath"}  # the yaml repeats no setting
    cfg = compose_train(tmp_path, "callbacks=eval")
    # The callbacks keep their order (health after the others; evaluation, from eval.yaml, last).
    assert list(cfg.callbacks) == ["checkpoint", "samples", "plots", "health", "evaluation"]
    health = OmegaConf.to_container(cfg.callbacks.health, resolve=True)
    assert {k: v for k, v in health.items() if k not in own} == field_defaults(HealthSettings)
    monitor = instantiate(compose_train(tmp_path, "callbacks.health.relax=0.2").callbacks.health)
    assert monitor.settings == HealthSettings(relax=0.2) and monitor.dirpath == tmp_path


def test_one_action_setting_per_state() -> None:
    actions = [f.name for f in dataclasses.fields(HealthSettings) if f.name.startswith("on_")]
    assert sorted(actions) == sorted(f"on_{state}" for state in STATES)
    stop = HealthSettings(on_stalled="stop").on_state
    assert list(stop) == list(STATES) and stop["stalled"] == "stop"
    assert {a for s, a in stop.items() if s != "stalled"} == {"warn"}
