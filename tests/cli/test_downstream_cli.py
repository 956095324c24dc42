"""recon-train / recon-eval / recon-report on the real recipes, shrunk to CPU size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recon_lightning.cli import report as report_cli
from recon_lightning.cli.eval import run_eval
from recon_lightning.cli.train import run
from recon_lightning.models import build_pretrainer

CONF = Path(__file__).resolve().parents[2] / "conf"
ENCODER = [
    "encoder.trans_dim=32",
    "encoder.depth=2",
    "encoder.num_heads=2",
    "encoder.num_group=8",
    "encoder.group_size=8",
]
DATA = [
    "data=synthetic_cls",
    "data.num_classes=4",
    "data.num_points=80",
    "data.npoints=64",
    "data.num_workers=0",
    "data.train_size=16",
    "data.val_size=8",
    "data.test_size=8",
    "data.total_bs=8",
]
CPU = ["trainer=cpu", "logger=none", "++trainer.enable_progress_bar=false"]
QUIET = ["~callbacks.progress_bar", "~callbacks.lr_monitor"]


def compose_cfg(root: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=root, overrides=overrides)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_finetune_recipe_then_eval_of_its_checkpoint(tmp_path):
    out = tmp_path / "ft"
    overrides = [
        "experiment=finetune_scan_objbg",
        f"paths.output_dir={out}",
        "trainer.max_epochs=2",
    ]
    cfg = compose_cfg("train", [*overrides, *ENCODER, *DATA, *CPU, *QUIET])
    metrics = run(cfg)
    record = results(out)
    assert record["config_name"] == "finetune_scan_objbg" and record["checkpoint"] is None
    m = record["metrics"]
    assert m["last_epoch"] == 1 and m["epochs_validated"] == 2
    assert m["best_epoch_acc_test_selected"] >= m["last_epoch_acc"]
    assert {"test_acc", "vote_acc"} <= set(m) and m["vote_times"] == 10
    assert "vote_acc_max_reference" not in m  # the reference's max over repeats is opt-in only
    assert record["headline"] == {"metric": "test_acc", "value": metrics["test/acc"]}
    assert record["setting"]["dataset"] == "synthetic_shapes" and record["wall_time_s"] > 0
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("best_test_selected_epoch_") for n in ckpts)

    # recon-eval of the last checkpoint: same weights, same deterministic test pass.
    evaluated = tmp_path / "eval"
    cfg = compose_cfg(
        "eval",
        [
            "experiment=finetune_scan_objbg",
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            f"paths.output_dir={evaluated}",
            "task.vote.reference_repeats=2",
            *ENCODER,
            *DATA,
            *CPU,
        ],
    )
    eval_metrics = run_eval(cfg)
    assert eval_metrics["test/acc"] == pytest.approx(m["test_acc"])
    record = results(evaluated)
    assert record["headline"]["metric"] == "test_acc"
    assert record["metrics"]["vote_repeats"] == 2 and "vote_acc_max_reference" in record["metrics"]
    assert record["setting"]["random_init_entries"] == []


def test_recon_eval_refuses_a_pretraining_checkpoint_for_test_and_vote(tmp_path):
    torch.manual_seed(0)
    pre = build_pretrainer(trans_dim=32, depth=2, num_heads=2, num_group=8, group_size=8)
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in pre.state_dict().items()}}, ckpt)
    overrides = ["experiment=finetune_scan_objbg", f"ckpt_path={ckpt}"]
    cfg = compose_cfg("eval", [*overrides, f"paths.output_dir={tmp_path}", *ENCODER, *DATA, *CPU])
    with pytest.raises(ValueError, match="not a fine-tuned classifier"):
        run_eval(cfg)


def test_svm_recipe_on_a_random_encoder(tmp_path):
    overrides = ["experiment=svm_modelnet40", "ckpt_path=null", f"paths.output_dir={tmp_path}"]
    metrics = run_eval(compose_cfg("eval", [*overrides, *ENCODER, *DATA, *CPU]))
    record = results(tmp_path)
    assert record["config_name"] == "svm_modelnet40" and record["setting"]["random_init"]
    assert record["headline"] == {"metric": "svm_acc", "value": metrics["svm_acc"]}
    assert metrics["num_train"] == 16 and metrics["num_test"] == 8


def test_zeroshot_recipe_with_a_clip_teacher_checkpoint(tmp_path):
    torch.manual_seed(0)
    pre = build_pretrainer(
        trans_dim=32, depth=2, num_heads=2, num_group=8, group_size=8, img_dim=512, text_dim=512
    )
    ckpt = tmp_path / "clip_pre.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in pre.state_dict().items()}}, ckpt)
    overrides = [
        "experiment=zeroshot_modelnet10",
        f"ckpt_path={ckpt}",
        f"paths.output_dir={tmp_path / 'zs'}",
        "task.text_teacher.pretrained=false",
        "task.text_teacher.tiny=true",
    ]
    metrics = run_eval(compose_cfg("eval", [*overrides, *ENCODER, *DATA, *CPU]))
    record = results(tmp_path / "zs")
    assert set(metrics) == {"zeroshot_acc", "acc_test"}
    assert record["setting"]["split"] == "test" and record["setting"]["ratio"] == 0.2
    assert record["setting"]["num_classes"] == 4


def test_recon_train_points_eval_only_recipes_to_recon_eval(tmp_path):
    overrides = ["experiment=svm_modelnet40", f"paths.output_dir={tmp_path}"]
    cfg = compose_cfg("train", [*overrides, *ENCODER, *DATA, *CPU, "callbacks=none"])
    with pytest.raises(ValueError, match="recon-eval"):
        run(cfg)


def test_recon_report_writes_tables(tmp_path, capsys):
    for fold, acc in enumerate([90.0, 94.0]):
        run_dir = tmp_path / f"5way_10shot/fold{fold}"
        run_dir.mkdir(parents=True)
        record = {
            "schema": 1,
            "task": "classification",
            "config_name": "fewshot",
            "setting": {"way": 5, "shot": 10, "fold": fold},
            "headline": {"metric": "last_epoch_acc", "value": acc},
            "metrics": {"last_epoch_acc": acc, "best_epoch_acc_test_selected": acc + 1},
        }
        (run_dir / "results.json").write_text(json.dumps(record))
    report_cli.main([str(tmp_path), "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    assert "| last epoch | 92.0 ± 2.0 (n=2/10) |" in printed
    assert (tmp_path / "report" / "report.md").read_text() == printed
    csv_lines = (tmp_path / "report" / "fewshot.csv").read_text().splitlines()
    assert csv_lines[1].startswith("5-way 10-shot,5,10,last_epoch_acc,last epoch,2,2,92.0,2.0")
    assert len((tmp_path / "report" / "runs.csv").read_text().splitlines()) == 1 + 2  # each run
    per_config = (tmp_path / "report" / "report.csv").read_text().splitlines()
    assert len(per_config) == 1 + 1 and per_config[1].startswith("fewshot,,classification")
    assert (tmp_path / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        report_cli.main([str(tmp_path / "report")])  # no results.json there
