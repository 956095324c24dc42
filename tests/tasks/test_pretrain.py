"""The pretraining task: reference optimiser groups, a one-batch fit, falling loss, checkpoints."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import torch

from recon_lightning.checkpoints.keymap import to_official
from recon_lightning.tasks.pretrain import PretrainTask
from recon_lightning.teachers import build_teachers

TINY = {
    "encoder": {
        "trans_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "num_group": 16,
        "group_size": 16,
        "drop_path_rate": 0.0,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    },
    "masking": {"mask_type": "rand", "mask_ratio": 0.6},
}


class _FixedTeachers(torch.nn.Module):
    """Deterministic stand-in teacher: features are fixed functions of the label."""

    def __init__(self, img_dim: int = 24, text_dim: int = 16) -> None:
        super().__init__()
        self.img_dim, self.text_dim = img_dim, text_dim

    def targets(self, batch):
        label = batch["label"].float().unsqueeze(1)
        img = torch.sin(label * torch.arange(1, self.img_dim + 1) / 7)
        txt = torch.cos(label * torch.arange(1, self.text_dim + 1) / 5)
        return img, txt


def _batch(n: int = 8, points: int = 256, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, points, 3, generator=g) * torch.tensor([1.0, 0.5, 0.3])
    return {
        "points": pts / pts.norm(dim=-1).amax(1, keepdim=True).unsqueeze(-1),
        "label": torch.arange(n) % 4,
    }


def test_param_groups_equal_reference(official_dir):
    ref = json.loads((official_dir / "e_optim" / "param_groups.json").read_text())["pretrain"]
    cfg = json.loads((official_dir / "configs.json").read_text())["pretrain"]["model"]
    model_cfg = {**cfg["transformer_config"], "num_group": 16, "group_size": 8, "loss": "cdl2"}
    model_cfg.pop("encoder_dims")
    # The reference's teachers: in21k ViT-B/16 (768) and CLIP ViT-B/32 text (512).
    task = PretrainTask(
        {"encoder": model_cfg}, teachers=_FixedTeachers(768, 512), scheduler={"epochs": 300}
    )
    opt = task.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in task.model.named_parameters()}
    ours = [
        sorted(to_official(names[id(p)], "pretrain") for p in g["params"]) for g in opt.param_groups
    ]
    expected = [sorted(g["params"]) for g in ref["groups"] if g["params"]]
    assert ours == expected
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]
    assert [g["lr"] for g in opt.param_groups] == [1e-6, 1e-6]  # warm-up start, as the reference


def test_loss_falls_over_a_few_dozen_steps():
    torch.manual_seed(0)
    task = PretrainTask(
        TINY, teachers=_FixedTeachers(), optimizer={"lr": 2e-3, "weight_decay": 0.05}
    )
    opt = torch.optim.AdamW(task.model.parameters(), lr=2e-3)
    batch = _batch()
    history = []
    for _ in range(40):
        loss = task._losses(batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5


def test_fit_one_batch_and_checkpoint_roundtrip(tmp_path):
    from recon_lightning.data.synthetic import SyntheticShapesDataModule

    torch.manual_seed(0)
    dm = SyntheticShapesDataModule(
        mode="pretrain",
        train_size=8,
        val_size=4,
        test_size=4,
        num_points=512,
        npoints=256,
        batch_size=4,
        num_workers=0,
        persistent_workers=False,
    )
    teachers = build_teachers(mode="random", tiny=True)
    task = PretrainTask(TINY, teachers=teachers)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        limit_val_batches=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert {"train/chamfer", "train/img", "train/text", "val/loss"} <= set(trainer.callback_metrics)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert not any(k.startswith("teachers.") for k in ckpt["state_dict"])  # frozen, never stored
    assert ckpt["hyper_parameters"]["model"]["img_dim"] == teachers.img_dim
    restored = PretrainTask.load_from_checkpoint(path, teachers=teachers, weights_only=True)
    for (n, a), b in zip(
        task.model.state_dict().items(), restored.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), n


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_ckpt_path_starts_pretraining_from_our_checkpoint(tmp_path):
    torch.manual_seed(0)
    teachers = _FixedTeachers()
    source = PretrainTask(TINY, teachers=teachers)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(source)
    path = tmp_path / "pretrained.ckpt"
    trainer.save_checkpoint(path)
    torch.manual_seed(1)  # a different initialisation, which the checkpoint must replace
    started = PretrainTask(TINY, teachers=teachers, ckpt_path=str(path))
    _assert_same_weights(source.model, started.model)
    assert not started.init_report.missing


def test_ckpt_path_starts_pretraining_from_an_official_checkpoint(official_dir):
    from recon_lightning.checkpoints import load_official

    ckpt = official_dir / "a_pretrain" / "ckpt-epoch-300.pth"
    cfg = json.loads((official_dir / "configs.json").read_text())["pretrain"]["model"]
    size = {**cfg["transformer_config"], "num_group": 16, "group_size": 8}
    size.pop("encoder_dims")
    reference = load_official(ckpt, num_group=16, group_size=8, num_heads=size["num_heads"])
    task = PretrainTask({"encoder": size}, teachers=_FixedTeachers(768, 512), ckpt_path=str(ckpt))
    _assert_same_weights(reference, task.model)
    assert not task.init_report.missing
