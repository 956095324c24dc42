"""Lightning callbacks shared by every task: progress that suits the console, the run summary."""

from .checkpointing import AtomicCheckpointIO, CheckpointOnSigterm
from .grad_norm import GradNormMonitor
from .progress import LineProgressBar, auto_progress_bar, is_interactive, track
from .reconstructions import ReconstructionLogger, plot_reconstructions
from .run_summary import RunSummary

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointOnSigterm",
    "GradNormMonitor",
    "LineProgressBar",
    "ReconstructionLogger",
    "RunSummary",
    "auto_progress_bar",
    "is_interactive",
    "plot_reconstructions",
    "track",
]
