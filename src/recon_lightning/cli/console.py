"""What the console shows: each log line once, no warning our defaults cause, user errors short.

- Hydra configures the root logger (console + the run folder's log file) and Lightning adds its
  own console handler to ``lightning.pytorch``: every Lightning message printed twice. Lightning's
  own handlers are removed so its messages go through Hydra's.
- The frozen teachers (and a frozen mlp3/linear backbone in ``frozen_backbone_mode=eval``) are in
  eval mode on purpose; Lightning's "module(s) in eval mode" warning about them is filtered.
- A known user error (missing or malformed data, missing teacher weights, a bad config value)
  prints its message and exits with status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("recon_lightning")
F = TypeVar("F", bound=Callable[..., Any])

#: Errors whose message is the whole story for a user: what is wrong and what to do.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError)


class _DropAdverts(logging.Filter):
    """Lightning's "💡 Tip: try installing ..." lines advertise services, once per run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def route_lightning_logs() -> None:
    """Send Lightning's log records through the root handlers only (no second console line)."""
    import lightning.pytorch  # noqa: F401 - its import adds the handler removed here

    advert_filter = _DropAdverts()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(advert_filter)
    if not logging.getLogger().handlers:
        return  # nobody else prints them: keep Lightning's own handler
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                logger.removeHandler(handler)
        logger.propagate = True


def filter_expected_warnings() -> None:
    """Silence warnings about states our configuration chooses on purpose."""
    warnings.filterwarnings(
        "ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training"
    )
    # Lightning's own use of a torch API that newer torch deprecates; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def setup_console() -> None:
    """Everything above, once per entry point (call inside the Hydra task function)."""
    route_lightning_logs()
    filter_expected_warnings()


def full_error_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report_user_errors(fn: F) -> F:
    """Turn a known user error raised by ``fn`` into one log line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            if full_error_requested():
                raise
            log.error("%s: %s", type(err).__name__, err)
            log.error("(set HYDRA_FULL_ERROR=1 for the traceback)")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
