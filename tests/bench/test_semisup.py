"""The semi-supervised benchmark's protocol: disjoint splits (validation never trained on),
options that reach the budget and settings, and each arm calling the function it names."""

from __future__ import annotations

import numpy as np
import pytest

from bench import semisup


def test_split_is_disjoint_and_sized():
    split = semisup.make_split(labeled=300, validation=200, seed=4)
    assert len(split.labels) == 300 and len(split.validation_labels) == 200
    assert len(split.unlabeled_images) == 60000 - 500
    rows = [split.labeled_images, split.validation_images, split.unlabeled_images]
    # Fashion-MNIST has a few duplicate images; compare by content hash with counts instead.
    seen = [{image.tobytes() for image in part} for part in rows]
    assert len(seen[0] & seen[1]) <= 2 and len(seen[1] & seen[2]) <= 20
    again = semisup.make_split(labeled=300, validation=200, seed=4)
    assert np.array_equal(again.labels, split.labels)
    other = semisup.make_split(labeled=300, validation=200, seed=5)
    assert not np.array_equal(other.labels, split.labels)


def test_resolve_applies_overrides_and_refuses_unknown_ones():
    budget, settings = semisup.resolve(
        quick=True, overrides={"epochs": 7, "consistency_weight": 3.0, "test_size": 0}
    )
    assert budget.epochs == 7 and budget.test_size is None
    assert settings.consistency_weight == 3.0
    assert semisup.resolve(quick=False, overrides={})[0] == semisup.FULL
    with pytest.raises(ValueError, match="unknown"):
        semisup.resolve(quick=True, overrides={"nonsense": 1})


@pytest.mark.parametrize("arm", semisup.ARMS)
def test_each_arm_trains_through_the_function_it_records(arm):
    split = semisup.make_split(labeled=256, validation=64, seed=0)
    budget = semisup.Budget(labeled=256, validation=64, epochs=1, rampup_epochs=1, test_size=64)
    networks, record = semisup.train_arm(
        arm, split, budget=budget, settings=semisup.Settings(), seed=0
    )
    if arm == "supervised":
        assert record["function"] == "mlcore.train.fit" and set(networks) == {"network"}
    else:
        assert record["function"] == "mlcore.mean_teacher.train_mean_teacher"
        assert set(networks) == {"teacher", "student"}
        two_heads = record["config"]["logit_distance_cost"] is not None
        assert two_heads == (arm == "mt_two_heads")
        assert (record["final"]["logit_distance"] > 0) == two_heads
    assert record["steps"] == 2
