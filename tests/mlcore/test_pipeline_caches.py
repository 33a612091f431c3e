"""The pipeline's shortcuts compute the same numbers as the long way round.

fit_cascade spends most of its time in passes over the training set besides the epochs: the
baseline probe's frozen features and the loss-prediction module's inputs. Both are now computed
once (docs/transfer.md, "What a fit costs"); these tests hold them to the plain computation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.backbones import HeadOnly, build_backbone
from mlcore.config import seed_everything
from mlcore.data import ArrayImageDataset, make_loader
from mlcore.loss_prediction import LossPredictionModule, margin_ranking_loss
from mlcore.metrics import average_precision
from mlcore.pipeline import (
    CascadeSpec,
    _EncodedFirstView,
    cascade_backbones,
    encode_images,
    fit_cascade,
    fit_loss_prediction,
    pretrained_embeddings,
    probe_baseline_scores,
)
from tests.mlcore.conftest import make_square_images


def _encoded(count: int, seed: int = 0):
    images, labels = make_square_images(count, size=28, seed=seed)
    spec = CascadeSpec(preset="cpu_transfer", views=1, epochs=1, batch_a=8, hard_b=4)
    config = cascade_backbones(spec)[0]
    trunk = build_backbone(config)
    return config, trunk, encode_images(trunk, ArrayImageDataset(images, labels))


def test_pretrained_features_are_cached_per_network_and_follow_subsets():
    config, _trunk, encoded = _encoded(24)
    whole = pretrained_embeddings(config, encoded)
    assert len(encoded.pretrained_pooled) == 1
    rows = np.array([5, 0, 17, 3])
    part = encoded.subset(rows)
    assert np.array_equal(pretrained_embeddings(config, part), whole[rows])
    # Computed afresh on the subset (no cache), the numbers are the same.
    part.pretrained_pooled.clear()
    np.testing.assert_allclose(pretrained_embeddings(config, part), whole[rows], atol=1e-5)
    assert encoded.relabel(np.zeros(24, np.int64)).pretrained_pooled is encoded.pretrained_pooled


def _loss_prediction_every_epoch(stage1, loader, *, epochs, seed, hidden):
    """The module trained the long way: stage 1's forward pass in every epoch."""
    seed_everything(seed)
    module = LossPredictionModule(list(stage1.feature_channels), hidden=hidden)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    stage1.eval()
    for _ in range(epochs):
        module.train()
        for inputs, labels, _ in loader:
            labels = torch.as_tensor(labels)
            keep = labels >= 0
            if keep.sum() < 2:
                continue
            with torch.no_grad():
                logits, features = stage1.forward_with_features(inputs[keep])
                targets = F.cross_entropy(logits, labels[keep], reduction="none")
            loss = margin_ranking_loss(module(features), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return module.eval()


def test_loss_prediction_on_memoised_features_matches_a_forward_pass_per_epoch():
    config, _trunk, encoded = _encoded(30)
    labels = encoded.labels.copy()
    labels[[2, 11]] = -1  # unlabeled items are skipped either way
    encoded = encoded.relabel(labels)
    stage1 = HeadOnly(build_backbone(config))

    def loader():
        return make_loader(_EncodedFirstView(encoded), batch_size=8, shuffle=True, seed=3)

    fast = fit_loss_prediction(
        stage1, loader(), epochs=3, device=torch.device("cpu"), seed=1, hidden=16
    )
    slow = _loss_prediction_every_epoch(stage1, loader(), epochs=3, seed=1, hidden=16)
    for (name, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_the_fit_returns_the_baseline_probe_it_reported():
    _config, _trunk, train = _encoded(48, seed=1)
    _config, _trunk, validation = _encoded(24, seed=2)
    spec = CascadeSpec(preset="cpu_transfer", views=1, epochs=1, batch_a=8, hard_b=4, lp_epochs=1)
    fit = fit_cascade(train, validation, spec=spec)
    assert fit.baseline_probe is not None
    config = cascade_backbones(spec)[0]
    scores = probe_baseline_scores(fit.baseline_probe, config, validation)
    expected = fit.metrics["baseline"]["ap"]
    assert round(average_precision(validation.labels == 1, scores), 6) == expected
    assert fit.metrics["baseline"]["seconds"] >= 0


def test_a_fit_resumed_from_its_epoch_checkpoint_ends_where_an_uninterrupted_fit_ends(tmp_path):
    """A training job killed after epoch 1 of 2 resumes from the state saved then (written to
    disk and read back as weights only) and ends with the same networks, history and epoch
    selection as the run that was never interrupted."""
    from mlcore.resume import load_training_state, save_training_state

    _config, _trunk, train = _encoded(48, seed=3)
    _config, _trunk, validation = _encoded(24, seed=4)
    spec = CascadeSpec(preset="cpu_transfer", views=1, epochs=2, batch_a=8, hard_b=4, lp_epochs=1)
    saved: list[int] = []

    def keep(state):
        saved.append(state.epochs_done)
        save_training_state(tmp_path / f"epoch{state.epochs_done}.safetensors", state)

    whole = fit_cascade(train, validation, spec=spec, on_checkpoint=keep)
    assert saved == [1, 2]

    state, _meta = load_training_state(tmp_path / "epoch1.safetensors")
    resumed = fit_cascade(train, validation, spec=spec, resume=state)

    for a, b in zip(whole.stage1.state_dict().values(), resumed.stage1.state_dict().values()):
        torch.testing.assert_close(a, b)
    for a, b in zip(whole.stage2.state_dict().values(), resumed.stage2.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert [h["stage1_loss"] for h in whole.history] == [h["stage1_loss"] for h in resumed.history]
    assert whole.metrics["epoch_selection"] == resumed.metrics["epoch_selection"]
    assert whole.thresholds == resumed.thresholds
