"""scripts/benchmark.py at toy sizes: it runs, reports every part, and the two Inception
extractors agree. No timing is asserted: the figures depend on the machine and its load."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ganforge.metrics.weights import default_weights_path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # train() instantiates the script's callbacks by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["benchmark"]


def test_training_and_inception_parts_report_every_figure(benchmark, tmp_path: Path) -> None:
    parts = "train,inception,gpu" if default_weights_path().is_file() else "train,gpu"
    out = tmp_path / "bench.json"
    argv = ["--only", parts, "--repeats", "2", "--warmup", "2", "--dcgan-iters", "2"]
    argv += ["--mlp-iters", "4", "--inception-images", "3", "--inception-batch", "2"]
    results = benchmark.main([*argv, "--out", str(out)])

    assert json.loads(out.read_text())["table"] == results["table"]
    for case, r in results["train"].items():
        assert len(r["ganforge_it_s"]) == len(r["hand_it_s"]) == 2, case
        assert all(v > 0 and math.isfinite(v) for v in r["ganforge_it_s"] + r["hand_it_s"])
        assert r["met"] == (r["ratio"] >= r["target"])
        assert f"| (a) {case}, it/s |" in results["table"]
    if "inception" in parts:
        r = results["inception"]
        # Correctness, not speed: ganforge's fast path computes torch-fidelity's features.
        assert 0 < r["max_rel_feature_diff"] <= 1e-4
        assert "(b) Inception features, batch 2" in results["table"]
    if not benchmark.CUDA:
        assert results["gpu"] == {"skipped": "no GPU"}
        assert "skipped: no GPU" in results["table"]


def test_grid_stop_callback_stops_at_all_modes(benchmark) -> None:
    stop = benchmark.StopAtAllModes(n_modes=25)
    trainer = SimpleNamespace(should_stop=False)
    module = SimpleNamespace(iteration=250, last_metrics={"val/modes_captured": 24.0})
    stop.on_train_batch_end(trainer, module, None, None, 0)
    assert not trainer.should_stop and benchmark.StopAtAllModes.hit is None
    module.iteration, module.last_metrics["val/modes_captured"] = 500, 25.0
    stop.on_train_batch_end(trainer, module, None, None, 0)
    assert trainer.should_stop and benchmark.StopAtAllModes.hit[0] == 500


def test_bad_options_are_refused(benchmark) -> None:
    with pytest.raises(SystemExit):
        benchmark.parse(["--only", "train,nope"])
    with pytest.raises(SystemExit):
        benchmark.parse(["--repeats", "0"])


def test_gpu_part_runs_small_on_a_cpu(benchmark) -> None:
    # The code path a lent GPU runs, at toy sizes and on the CPU, so it cannot rot unseen.
    if not default_weights_path().is_file():
        pytest.skip("no Inception weights; run ganforge-fetch-inception")
    args = SimpleNamespace(repeats=1, warmup=1, gpu_iters=2, fid_samples=6)
    tiny = {
        "dcgan_cifar10": ["model.base_width=4", "data.batch_size=8"],
        "sngan_cifar10": ["model.g_width=8", "model.d_width=8", "data.batch_size=8"],
    }
    out = benchmark.bench_gpu(args, print, device="cpu", extra=tiny)
    assert out["device"] == "cpu" and out["fid_samples"] == 6
    assert all(out[case]["median"] > 0 for case in benchmark.GPU_CASES)
    assert out["fid_value"] > 0 and out["fid_s"] > 0
    table = benchmark.table({"gpu": out})
    assert "(d) sngan_cifar10 on cpu, it/s" in table and "(d) 6-sample FID, s" in table


@pytest.mark.slow  # four compiles (a cold one) of a tiny MLP: ~80 s on 2 loaded cores
def test_compile_part_reports_every_side(benchmark, tmp_path: Path, monkeypatch) -> None:
    # (g)'s code path on the MLP case alone, narrowed so that each compile takes seconds.
    case = "2-D MLP, batch 100"
    overrides, target = benchmark.TRAIN_CASES[case]
    tiny = [*overrides, "model.hidden=16", "model.depth=2"]
    monkeypatch.setattr(benchmark, "TRAIN_CASES", {case: (tiny, target)})
    argv = ["--only", "compile", "--repeats", "1", "--warmup", "2", "--mlp-iters", "3"]
    results = benchmark.main([*argv, "--out", str(tmp_path / "bench.json")])

    r = results["compile"][case]
    sides = {"ganforge compiled", "hand eager", "hand compiled", "ganforge eager"}
    assert set(r["it_s"]) == sides
    assert all(len(v) == 1 and v[0] > 0 and math.isfinite(v[0]) for v in r["it_s"].values())
    # The cold run compiled G and D (dynamo reset first), and its time is reported apart.
    assert r["first_run"]["frames"] >= 2 and r["first_run"]["compile_s"] > 0
    assert r["target"] == benchmark.COMPILE_TARGETS[case]
    assert r["met"] == (r["ratio"]["hand eager"] >= r["target"])
    assert f"| (g) {case}, system.compile=true, it/s (cold compile) |" in results["table"]
    assert f"| (g) {case}, the same against the compiled hand loop" in results["table"]
