"""Lightning callbacks shared by every task: progress that suits the console, the run summary."""

from .progress import LineProgressBar, auto_progress_bar, is_interactive, track
from .run_summary import RunSummary

__all__ = ["LineProgressBar", "RunSummary", "auto_progress_bar", "is_interactive", "track"]
