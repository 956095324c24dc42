"""``recon-report DIR``: tables from the ``results.json`` of every run under DIR.

Runs are grouped per configuration (config name plus the settings and Hydra overrides that are
not the seed or fold): mean ± std of the headline over seeds (or folds), the best of the N runs
labelled as the reference's convention, the number of runs and the keys that tell each row apart.
Few-shot runs also give the paper's table (mean ± std over folds per way/shot setting, last epoch
and, beside it, the reference's test-selected best epoch). Writes ``report.md``, ``report.csv``
(one row per configuration), ``runs.csv`` (one row per run), ``fewshot.csv`` (few-shot runs
only) and ``report.png`` (per-configuration distributions) into DIR (or ``--out``) and prints
the Markdown::

    recon-train -m experiment=fewshot ckpt_path=PRETRAINED   # 40 runs
    recon-report outputs/fewshot/multiruns/<date>

The same tables from Python: :mod:`recon_lightning.evaluation.report` (``load_runs``,
``summarise``, ``to_markdown``, ``plot_runs``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.report import build_report, write_report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recon-report",
        description="Aggregate results.json files into per-configuration Markdown/CSV/PNG tables.",
    )
    parser.add_argument("dir", type=Path, help="folder searched recursively for results.json")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: DIR)")
    parser.add_argument(
        "--ddof", type=int, default=0, help="std degrees of freedom (0: population, numpy default)"
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="aggregate this metric (e.g. vote_acc) instead of each run's headline",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="a setting/override key that does not tell configurations apart (repeatable)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip (and list) results.json files that are not run records instead of failing",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write report.png")
    args = parser.parse_args(argv)
    try:
        report = build_report(
            args.dir,
            ddof=args.ddof,
            metric=args.metric,
            on_error="skip" if args.skip_invalid else "raise",
            ignore=args.ignore,
        )
    except (FileNotFoundError, ValueError, KeyError) as err:
        # Missing folder, no runs, a malformed file or an unknown --metric: one line, no trace.
        parser.error(str(err.args[0]) if isinstance(err, KeyError) else str(err))
    write_report(report, args.out or args.dir, plot=not args.no_plot)
    print(report.markdown, end="")


if __name__ == "__main__":
    main()
