"""The faithful PacGAN grid recipe (the authors' networks) learns where ganforge's old networks
did not, through `ganforge-reproduce` at a reduced budget. Its own module: at about 5 minutes it is
the suite's longest test, and pytest-xdist (`--dist loadfile`) schedules it apart from the
harness's other tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_reproduce import QUIET, run_cli

# --- the faithful recipe learns ---------------------------------------------------------------
# Measured 2026-11-29 with this harness on 2 CPU cores shared with other jobs (load ~10),
# experiment=pacgan_grid variant=GAN (model.pack=1, batch 100), 3,000 iterations, raw G, 2,500
# samples, the paper's criterion (a mode is covered by one point within 3 std), seeds 0/1/2:
#   paper's networks (BatchNorm G, 5-piece maxout D, N(0, 0.02^2)): modes 11 / 7 / 6,
#     high quality 4.0 / 2.2 / 1.9 %, reverse KL 1.91 / 1.55 / 1.92 (16 min per seed at that load;
#     about 3.5 min on an idle core: 500 iterations took ~35 s at load ~3).
#   old pair (LeakyReLU D, no BatchNorm, torch init; same data, optimiser, batch, no EMA):
#     modes 1 / 0 / 1, high quality 6.3 / 0.0 / 9.9 %, reverse KL 3.22 / inf / 3.22
#     (log 25 = 3.22: everything on one mode); at most 2 modes at any checkpoint of 500..3,000
#     (seed 0 up to 6,000).
# The old pair's few good points all sit on one mode, so the high-quality share alone does not
# separate the two here; mode count and reverse KL do, by a wide margin.
FAITHFUL_BUDGET = 3000
MIN_MODES_EVERY_SEED = 5
MIN_HIGH_QUALITY_EVERY_SEED = 0.01
MAX_REVERSE_KL_EVERY_SEED = 2.5


@pytest.mark.slow
def test_faithful_pacgan_grid_learns_where_the_old_networks_did_not(tmp_path: Path) -> None:
    done = run_cli(
        "experiment=pacgan_grid",
        "variant=GAN",
        "seeds=3",
        f"budget={FAITHFUL_BUDGET}",
        "jobs=2",
        "threads=1",
        f"out={tmp_path}",
        *QUIET,
        timeout=3000,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(
        (tmp_path / "pacgan_grid" / f"table_GAN-{FAITHFUL_BUDGET}.json").read_text()
    )
    rows = {r["metric"]: r for r in summary["rows"]}
    modes, quality = rows["val/modes_captured"], rows["val/high_quality"]
    assert modes["n"] == 3 and modes["n_samples"] == [2500]
    kl = rows["val/reverse_kl"]
    assert min(modes["per_seed"].values()) >= MIN_MODES_EVERY_SEED, modes["per_seed"]
    assert min(quality["per_seed"].values()) >= MIN_HIGH_QUALITY_EVERY_SEED, quality["per_seed"]
    assert max(kl["per_seed"].values()) <= MAX_REVERSE_KL_EVERY_SEED, kl["per_seed"]
