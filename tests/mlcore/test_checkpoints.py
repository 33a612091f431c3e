import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from mlcore.backbones import build_backbone
from mlcore.checkpoints import (
    UnsafeCheckpointError,
    build_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_classifier,
)
from mlcore.config import BackboneConfig
from mlcore.loss_prediction import LossPredictionModule

CONFIG = BackboneConfig(name="mobilenet_v2", num_classes=2, width_mult=0.25, input_size=32)


def test_round_trip_restores_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_backbone(CONFIG)
    # One training-mode pass moves the BatchNorm running statistics away from their defaults,
    # so the round trip must carry buffers as well as weights.
    model(torch.randn(4, 3, 32, 32))
    model.eval()
    lp = LossPredictionModule(model.feature_channels, hidden=8)
    path = save_classifier(
        tmp_path / "v1.safetensors",
        model,
        class_keys=["clean", "disgusting"],
        extra_state_dicts={"loss_prediction": lp.state_dict()},
        extra_config={"train": {"epochs": 3}},
        metadata={"project": 7, "note": "unicode ok: é"},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.class_keys == ["clean", "disgusting"]
    assert checkpoint.metadata == {"project": 7, "note": "unicode ok: é"}
    assert checkpoint.config["train"] == {"epochs": 3}
    assert set(checkpoint.state_dicts) == {"model", "loss_prediction"}

    rebuilt = build_from_checkpoint(checkpoint)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), rebuilt(x))
        restored_lp = LossPredictionModule(model.feature_channels, hidden=8)
        restored_lp.load_state_dict(checkpoint.state_dicts["loss_prediction"])
        features = model.forward_with_features(x)[1]
        assert torch.equal(lp(features), restored_lp(features))
    assert not list(tmp_path.glob("*.partial"))


def test_state_dicts_without_a_model_and_empty_ones_round_trip(tmp_path):
    tensors = {"weight": torch.arange(6.0).view(2, 3), "count": torch.tensor(3)}
    path = save_checkpoint(
        tmp_path / "plain.safetensors",
        state_dicts={"calibration": tensors, "empty": {}},
        config={},
        class_keys=[],
    )
    checkpoint = load_checkpoint(path)
    assert torch.equal(checkpoint.state_dicts["calibration"]["weight"], tensors["weight"])
    assert checkpoint.state_dicts["empty"] == {}
    with pytest.raises(ValueError, match="no 'backbone'"):
        build_from_checkpoint(checkpoint)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.bad_input
def test_pickles_are_refused(tmp_path, capsys):
    model = build_backbone(CONFIG)
    saved_model = tmp_path / "model.pt"
    torch.save(model, saved_model)
    state_dict_zip = tmp_path / "weights.pt"
    torch.save(model.state_dict(), state_dict_zip)
    raw_pickle = tmp_path / "payload.pkl"
    raw_pickle.write_bytes(pickle.dumps(Exploit()))
    old_protocol = tmp_path / "old.pkl"
    old_protocol.write_bytes(pickle.dumps({"a": 1}, protocol=0))
    for path in (saved_model, state_dict_zip, raw_pickle, old_protocol):
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.bad_input
def test_foreign_or_corrupt_safetensors_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UnsafeCheckpointError, match="not an mlcore-checkpoint"):
        load_checkpoint(foreign)

    model = build_backbone(CONFIG)
    good = save_classifier(tmp_path / "good.safetensors", model, class_keys=["a", "b"])
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(UnsafeCheckpointError, match="corrupt"):
        load_checkpoint(truncated)

    header = json.dumps({"__metadata__": {"format": "x"}}).encode()
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", 10**9) + header)
    with pytest.raises(UnsafeCheckpointError, match="bad header"):
        load_checkpoint(lying)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_bad_arguments_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="contain no '/'"):
        save_checkpoint(tmp_path / "x", state_dicts={"a/b": {}}, config={}, class_keys=[])
    with pytest.raises(ValueError, match="3 class keys"):
        save_classifier(tmp_path / "x", build_backbone(CONFIG), class_keys=["a", "b", "c"])
    assert not list(tmp_path.iterdir())
