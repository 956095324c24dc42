"""``recon-report DIR``: tables from the ``results.json`` of every run under DIR.

Few-shot runs give the paper's table (mean ± std over folds per way/shot setting, last epoch and,
beside it, the reference's test-selected best epoch); other runs are summarised per config name.
Writes ``report.md``, ``fewshot.csv`` and ``runs.csv`` (only tables with rows) and prints the
Markdown::

    recon-train -m experiment=fewshot ckpt_path=PRETRAINED   # 40 runs
    recon-report outputs/fewshot/multiruns/<date>
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..atomic_io import write_text_atomic
from ..evaluation.fewshot_report import report, to_csv
from ..evaluation.results import write_json_atomic


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recon-report", description="Aggregate results.json files into Markdown/CSV tables."
    )
    parser.add_argument("dir", type=Path, help="folder searched recursively for results.json")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: DIR)")
    parser.add_argument(
        "--ddof", type=int, default=0, help="std degrees of freedom (0: population, numpy default)"
    )
    args = parser.parse_args(argv)
    out = report(args.dir, ddof=args.ddof)
    if not out["records"]:
        parser.error(f"no results.json found under {args.dir}")
    dest = args.out or args.dir
    dest.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest / "report.md", out["markdown"])
    for name, rows in (("fewshot.csv", out["fewshot_rows"]), ("runs.csv", out["run_rows"])):
        if rows:
            write_text_atomic(dest / name, to_csv(rows))
    write_json_atomic(
        dest / "report.json", {"fewshot": out["fewshot_rows"], "runs": out["run_rows"]}
    )
    print(out["markdown"], end="")


if __name__ == "__main__":
    main()
