"""How much one selection round takes (mlcore.selection.round_sizes)."""

from __future__ import annotations

import math

import pytest

from mlcore.selection import AUTO_ROUND_DEFAULT, round_sizes


@pytest.mark.parametrize("eligible", [1, 2, 7, 30, 300, 1_000, 123_457])
@pytest.mark.parametrize("share", [0.01, 0.05, 0.1, 0.2, 1.0])
@pytest.mark.parametrize("audit_share", [0.05, 0.1, 0.5])
def test_a_round_stays_in_its_share_and_always_audits(eligible, share, audit_share):
    for fixed in (None, (200, 200), (5, 0)):
        k_band, k_loss = fixed or (None, None)
        sizes = round_sizes(
            eligible, max_share=share, audit_share=audit_share, k_band=k_band, k_loss=k_loss
        )
        assert sizes.cap == min(eligible, max(1, math.floor(share * eligible + 1e-9)))
        assert sizes.total <= sizes.cap
        assert sizes.audit >= 1  # never empties
        # The ranked part is as large as the cap allows beside its audit.
        assert sizes.ranked_max + sizes.audit_for(sizes.ranked_max) <= sizes.cap
        assert sizes.audit_for(0) == min(1, sizes.cap)


def test_automatic_sizes_follow_the_labeling_rate_and_default_without_history():
    big = round_sizes(10_000_000, max_share=0.2, audit_share=0.05)
    assert big.k_band + big.k_loss == AUTO_ROUND_DEFAULT
    busy = round_sizes(10_000_000, max_share=0.2, audit_share=0.05, daily_rate=2_500)
    assert busy.k_band + busy.k_loss == 2_500
    small = round_sizes(300, max_share=0.2, audit_share=0.05)
    assert small.total == 60 and small.audit == 3 and "capped" in small.rule


def test_an_audit_share_of_zero_is_off():
    assert round_sizes(300, max_share=0.2, audit_share=0.0).audit == 0
