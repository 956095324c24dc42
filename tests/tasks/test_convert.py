"""recon-convert: official checkpoints -> Lightning .ckpt files of our tasks, loadable and exact."""

from __future__ import annotations

import pytest
import torch

from conftest import load_fixture
from recon_lightning.checkpoints import load_official
from recon_lightning.cli.convert import convert, main, parse_overrides
from recon_lightning.tasks.classification import ClassificationTask
from recon_lightning.tasks.pretrain import PretrainTask

SIZE = {"num_heads": 3, "num_group": 16, "group_size": 8}


@pytest.mark.parametrize("protocol", ["full", "mlp3", "linear"])
def test_classifier_round_trip_gives_reference_logits(official_dir, tmp_path, protocol):
    case = official_dir / f"b_classifier_{protocol}"
    dst = tmp_path / "cls.ckpt"
    convert(case / "ckpt-best.pth", dst, type=protocol, **SIZE)
    ckpt = torch.load(dst, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 123 and ckpt["converted_from"]["kind"] == "classification"
    task = ClassificationTask.load_from_checkpoint(dst, map_location="cpu")
    assert task.protocol == protocol and task.model.cls_dim == 15
    data = load_fixture(case / "data.pt")
    with torch.no_grad():
        logits = task.double().eval()(data["inputs"]["points"])
    torch.testing.assert_close(logits, data["eval"]["logits"], rtol=1e-10, atol=1e-10)


def test_pretrain_checkpoint_becomes_a_pretrain_task(official_dir, tmp_path):
    src = official_dir / "a_pretrain" / "ckpt-epoch-300.pth"
    dst = tmp_path / "pretrain.ckpt"
    main([str(src), str(dst), "--set", "num_heads=3", "num_group=16"])
    task = PretrainTask.load_from_checkpoint(dst, map_location="cpu")
    reference = load_official(src, num_heads=3, num_group=16)
    ours = task.model.state_dict()
    assert ours.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours[key], value), key
    # It also serves as ckpt_path of a downstream recipe: the encoder loads, the head is new.
    model = {"encoder": {"trans_dim": 72, "depth": 3, **SIZE}, "cls_dim": 15}
    cls = ClassificationTask(model=model, ckpt_path=str(dst))
    assert cls.init_report.missing and all(k.startswith("head.") for k in cls.init_report.missing)


def test_overrides_parse_yaml_scalars_and_reject_garbage():
    assert parse_overrides(["num_heads=6", "type=mlp3", "drop_path_rate=0.1"]) == {
        "num_heads": 6,
        "type": "mlp3",
        "drop_path_rate": 0.1,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["num_heads"])


def test_contradicting_override_is_refused(official_dir, tmp_path):
    src = official_dir / "b_classifier_linear" / "ckpt-best.pth"
    with pytest.raises(ValueError, match="contradicts"):
        convert(src, tmp_path / "x.ckpt", type="full", **SIZE)
    assert not (tmp_path / "x.ckpt").exists()
