"""CBAM on vs off in the OHEM cascade of the rare Sandal+Bag task.

Protocol 6 of shared/DATA.md: the cascade benchmark (bench/cascade.py: same pool, label noise,
test split, epochs and seeds) run twice, once with CBAM (Woo et al., ECCV 2018; mlcore.attention,
inserted after each small_cnn stage by mlcore.backbones) in both stages and once without; the
single stage-1 network is trained in each setting too, so the table shows what attention does
alone and inside the cascade. The only difference between the two runs is ``BackboneConfig.cbam``.
"""

from __future__ import annotations

from bench import common
from bench.cascade import FULL, Budget, run_arms
from bench.cascade import rare_data as cascade_data
from mlcore.metrics import plot_pr_curves

# Smaller than the cascade's quick pool: this runs the cascade benchmark twice, once with CBAM.
QUICK = Budget(pool_size=2000, epochs=4, test_size=2000)


def run(*, quick: bool, seed: int) -> dict:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    data = cascade_data(budget, seed=seed)
    outcomes = {
        "cbam_off": run_arms(data, epochs=budget.epochs, seed=seed, cbam=False),
        "cbam_on": run_arms(data, epochs=budget.epochs, seed=seed, cbam=True),
    }
    path = common.image_name("attention", quick)
    plot_pr_curves(
        {
            "cascade, CBAM off": outcomes["cbam_off"]["curves"]["cascade, AND (t1 = t2)"],
            "cascade, CBAM on": outcomes["cbam_on"]["curves"]["cascade, AND (t1 = t2)"],
            "single, CBAM off": outcomes["cbam_off"]["curves"]["single stage 1"],
            "single, CBAM on": outcomes["cbam_on"]["curves"]["single stage 1"],
        },
        path,
        title="CBAM on/off, Sandal+Bag at 1% prevalence",
    )
    return common.rounded(
        {
            "network": {
                "cbam_off": common.backbone(2, cbam=False).__dict__,
                "cbam_on": common.backbone(2, cbam=True).__dict__,
            },
            "torch_threads": threads,
            "pool_size": len(data.pool),
            "pool_positives": int(data.pool.y.sum()),
            "test_size": len(data.test),
            "epochs": budget.epochs,
            **{name: outcome["figures"] for name, outcome in outcomes.items()},
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
