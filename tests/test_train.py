import torch

from generators import base
from generators.train import TrainConfig, train


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 3, 32, 32, generator=g) * 2 - 1


def _model():
    torch.manual_seed(0)  # the same initial weights for every run
    return base.create("vae", "tiny")


def test_resume_continues_exactly(tmp_path):
    data = _data()
    full, _ = train(_model(), data, TrainConfig(steps=6, batch_size=8, save_every=3),
                    progress=False)
    part_dir = tmp_path / "state"
    train(_model(), data, TrainConfig(steps=3, batch_size=8), state_dir=part_dir, progress=False)
    resumed, res = train(_model(), data, TrainConfig(steps=6, batch_size=8),
                         state_dir=part_dir, progress=False)
    assert res.resumed_from == 3 and res.steps == 6
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_resume_accepts_config_fields_added_later_but_not_changed_ones(tmp_path, capsys):
    import json

    import pytest

    data = _data()
    state = tmp_path / "state"
    train(_model(), data, TrainConfig(steps=2, batch_size=8), state_dir=state, progress=False)
    meta = json.loads((state / "state.json").read_text())
    del meta["config"]["free_bits"]                  # as if saved before the family had this field
    (state / "state.json").write_text(json.dumps(meta))
    _, res = train(_model(), data, TrainConfig(steps=3, batch_size=8), state_dir=state, progress=False)
    assert res.resumed_from == 2 and res.steps == 3
    assert "free_bits" in capsys.readouterr().err    # the fine-tune is said, not silent
    meta = json.loads((state / "state.json").read_text())
    meta["config"]["z_dim"] += 1                    # a changed field still refuses
    (state / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another model/config"):
        train(_model(), data, TrainConfig(steps=4, batch_size=8), state_dir=state, progress=False)


def test_checkpoint_round_trip_and_registry(tmp_path):
    m = base.create("vae", "tiny")
    m.save(tmp_path / "ck")
    m2 = base.load(tmp_path / "ck")
    assert type(m2) is type(m) and len(base.checkpoint_sha256(tmp_path / "ck")) == 64
    g = torch.Generator().manual_seed(1)
    x = m2.sample(3, generator=g)
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert "vae" in base.names()
