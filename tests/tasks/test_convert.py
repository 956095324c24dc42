"""recon-convert: official checkpoints -> Lightning .ckpt files of our tasks, loadable and exact."""

from __future__ import annotations

import pytest
import torch

from conftest import load_fixture
from recon_lightning.checkpoints import load_official, to_official
from recon_lightning.cli.convert import convert, main, parse_overrides
from recon_lightning.models import ReConPartSegmentation
from recon_lightning.tasks.classification import ClassificationTask
from recon_lightning.tasks.pretrain import PretrainTask
from recon_lightning.tasks.segmentation import PartSegmentationTask

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


# --------------------------------------------------------------------------- part segmentation

PARTSEG = {
    "trans_dim": 24,
    "depth": 3,
    "num_heads": 3,
    "num_group": 8,
    "group_size": 8,
    "propagation_dims": (32, 32),
    "head_dims": (32, 16),
}


def _official_partseg(tmp_path):
    """A small segmentation model saved as segmentation/main.py saves ``best_model.pth``."""
    torch.manual_seed(0)
    model = ReConPartSegmentation(**PARTSEG).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for name, value in model.state_dict().items():
            if value.is_floating_point() and "running_var" in name:
                value.uniform_(0.5, 1.5)
            elif value.is_floating_point() and value.ndim == 1:
                value.uniform_(-0.5, 0.5)
    state = {to_official(k, "partseg"): v for k, v in model.state_dict().items()}
    assert None not in state
    src = tmp_path / "best_model.pth"
    torch.save({"epoch": 7, "inctance_avg_iou": 0.5, "model_state_dict": state}, src)
    return model, src


def test_partseg_round_trip_gives_the_same_log_probs(tmp_path):
    model, src = _official_partseg(tmp_path)
    dst = tmp_path / "partseg.ckpt"
    main([str(src), str(dst), "--kind", "partseg", "--set", "num_heads=3", "num_group=8"])
    ckpt = torch.load(dst, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 7 and ckpt["converted_from"]["kind"] == "partseg"
    task = PartSegmentationTask.load_from_checkpoint(dst, map_location="cpu").eval()
    assert task.model.feature_blocks == (0, 1, 2) and task.model.num_parts == 50
    points, category = torch.randn(2, 64, 3), torch.tensor([4, 15])
    ours = task.model.state_dict()
    assert ours.keys() == model.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(task(points, category), model(points, category))
    # As ckpt_path of the recipe's task, ours and the official file both load every weight.
    config = {"encoder": {k: v for k, v in PARTSEG.items() if "dims" not in k}, **PARTSEG}
    for path in (dst, src):
        loaded = PartSegmentationTask(model=config, ckpt_path=str(path))
        assert loaded.init_report.missing == [] and loaded.init_report.unexpected == []
        loaded.check_trained()


def test_partseg_kind_is_inferred_and_checked(tmp_path):
    _, src = _official_partseg(tmp_path)
    convert(src, tmp_path / "a.ckpt", num_heads=3, num_group=8)  # kind from label_conv.*
    with pytest.raises(ValueError, match="feature_blocks"):
        convert(src, tmp_path / "b.ckpt", num_heads=3, num_group=8, feature_blocks=[0, 2])
    assert not (tmp_path / "b.ckpt").exists()


@pytest.mark.slow
def test_official_segmentation_weights_convert_to_reference_log_probs(official_dir, tmp_path):
    """The base-size fixture weights (rebuilt as test_official_equivalence does), through
    recon-convert and load_from_checkpoint, give the reference's log-probabilities."""
    import json

    from test_official_equivalence import generated_state_dict

    case = official_dir / "d_segmentation"
    state = generated_state_dict(json.loads((case / "weights_checksums.json").read_text()))
    src = tmp_path / "best_model.pth"
    torch.save({"epoch": 1, "model_state_dict": state}, src)
    dst = convert(src, tmp_path / "partseg.ckpt")
    task = PartSegmentationTask.load_from_checkpoint(dst, map_location="cpu").double().eval()
    data = load_fixture(case / "data.pt")
    with torch.no_grad():
        log_probs = task(data["inputs"]["points"], data["inputs"]["category"])
    torch.testing.assert_close(log_probs, data["eval"]["log_probs"], rtol=1e-10, atol=1e-10)
