"""Progress of long data preparation (parsing, stacking): a bar on a terminal, lines in a log."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("recon_lightning")


@contextmanager
def progress_counter(
    description: str, total: int, logger: logging.Logger = log, timed: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a rich bar on a terminal, a few plain log lines otherwise.

    Args:
        description: what is being counted, at the start of every line.
        total: how many items.
        logger: where the plain lines go (the caller's module logger).
        timed: append the elapsed seconds to each plain line.
    """
    console = Console(file=sys.stderr)
    if console.is_terminal:
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)
        return
    logger.info("%s: 0/%d", description, total)
    done, next_report, start = 0, 1, time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, next_report
        done += n
        # Four lines in all (25 %, 50 %, 75 %, done): enough for a log file, no flood.
        while next_report <= 4 and done * 4 >= next_report * total:
            elapsed = f" ({time.monotonic() - start:.0f}s)" if timed else ""
            logger.info("%s: %d/%d%s", description, done, total, elapsed)
            next_report += 1

    yield advance
