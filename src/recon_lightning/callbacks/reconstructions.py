"""Pictures of what the generative student reconstructs, for every logger a run has.

Every ``every_n_epochs`` epochs and after the last one, a few training shapes go through
``model.reconstruct``: a matplotlib PNG (input, visible patches, visible + predicted patches) is
written into the run folder and sent to TensorBoard and wandb, and wandb also gets each shape as
a coloured ``wandb.Object3D`` point cloud (grey input, blue visible, red predicted).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

log = logging.getLogger("recon_lightning")

#: RGB colours of the 3D clouds: input, visible patches, predicted patches.
COLOURS = {"input": (150, 150, 150), "visible": (31, 119, 180), "predicted": (214, 39, 40)}


def plot_reconstructions(model: Any, points: torch.Tensor, path: str | Path) -> Path:
    """Input, visible patches and predicted masked patches of a few clouds, as one PNG.

    Args:
        model: a ``ReConPretrainer`` (``reconstruct(points)``).
        points: (S, N, 3) clouds on the model's device.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = _reconstruct(model, points)
    n = points.shape[0]
    fig = plt.figure(figsize=(9, 3 * n))
    for i in range(n):
        visible, predicted = rec["visible"][i], rec["predicted"][i]
        panels = [
            ("input", rec["input"][i], "tab:gray"),
            ("visible patches", visible, "tab:blue"),
            ("visible + predicted", None, None),
        ]
        for j, (title, pts, color) in enumerate(panels):
            ax = fig.add_subplot(n, 3, 3 * i + j + 1, projection="3d")
            if pts is None:
                ax.scatter(*visible.T, s=1, c="tab:blue")
                ax.scatter(*predicted.T, s=1, c="tab:red")
            else:
                ax.scatter(*pts.T, s=1, c=color)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
            ax.view_init(elev=20, azim=-60)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@torch.no_grad()
def _reconstruct(model: Any, points: torch.Tensor) -> dict[str, list[np.ndarray]]:
    was_training = model.training
    model.eval()
    try:
        rec = model.reconstruct(points)
        visible = rec.visible_points().float().cpu()
        predicted = rec.predicted_points().float().cpu()
    finally:
        model.train(was_training)
    n = points.shape[0]
    return {
        "input": [points[i].float().cpu().numpy() for i in range(n)],
        "visible": [visible[i].reshape(-1, 3).numpy() for i in range(n)],
        "predicted": [predicted[i].reshape(-1, 3).numpy() for i in range(n)],
    }


def coloured_cloud(rec: dict[str, list[np.ndarray]], i: int) -> np.ndarray:
    """(P, 6) xyz + RGB of shape ``i``: the input beside (x + 2.5) visible + predicted patches."""
    parts = []
    for name, shift in (("input", 0.0), ("visible", 2.5), ("predicted", 2.5)):
        xyz = rec[name][i].copy()
        xyz[:, 0] += shift
        rgb = np.broadcast_to(np.asarray(COLOURS[name], dtype=np.float64), (len(xyz), 3))
        parts.append(np.concatenate([xyz, rgb], axis=1))
    return np.concatenate(parts)


class ReconstructionLogger(pl.Callback):
    """Logs reconstructions of the pretraining task every ``every_n_epochs`` and at the end.

    Tasks without a ``model.reconstruct`` (the downstream ones) are left alone.

    Args:
        every_n_epochs: how often (0: only after the last epoch).
        num_shapes: training shapes shown (the same shapes every time).
    """

    def __init__(self, every_n_epochs: int = 25, num_shapes: int = 4) -> None:
        self.every_n_epochs = int(every_n_epochs)
        self.num_shapes = int(num_shapes)
        self._last_logged_step: int | None = None

    @staticmethod
    def _applies(pl_module: pl.LightningModule) -> bool:
        return hasattr(getattr(pl_module, "model", None), "reconstruct")

    def _shapes(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.Tensor | None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "dataset"):
            return None
        dataset = dm.dataset("train")
        count = min(self.num_shapes, len(dataset))
        points = torch.stack([torch.as_tensor(dataset[i]["points"]) for i in range(count)])
        return points.to(pl_module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            self.log_now(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_logged_step != trainer.global_step:  # the last epoch not shown yet
            self.log_now(trainer, pl_module)

    def log_now(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        """Write and send the reconstructions of the current model; returns the PNG (rank 0)."""
        if not trainer.is_global_zero or not self._applies(pl_module):
            return None
        points = self._shapes(trainer, pl_module)
        if points is None or len(points) == 0:
            return None
        self._last_logged_step = trainer.global_step
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "reconstructions"
        png = plot_reconstructions(
            pl_module.model, points, folder / f"epoch_{trainer.current_epoch:03d}.png"
        )
        rec = _reconstruct(pl_module.model, points)
        for logger in trainer.loggers:
            _send(logger, png, rec, trainer.global_step)
        return png


def _send(logger: Any, png: Path, rec: dict[str, list[np.ndarray]], step: int) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        import wandb

        media: dict[str, Any] = {"reconstructions/png": wandb.Image(str(png))}
        for i in range(len(rec["input"])):
            media[f"reconstructions/shape_{i}"] = wandb.Object3D(coloured_cloud(rec, i))
        logger.experiment.log({**media, "trainer/global_step": step})
    elif isinstance(logger, TensorBoardLogger):
        import matplotlib.image as mpimg

        image = mpimg.imread(png)[..., :3]
        logger.experiment.add_image("reconstructions", image, step, dataformats="HWC")
