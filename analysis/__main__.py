"""``python -m analysis EXPERIMENT_DIR [...] [--out DIR]``: write the SELU-vs-ReLU report.

Exit codes: 0 written, 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.load import AnalysisError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise AnalysisError(f"{message} (see --help)")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m analysis", description="Write report.md, report.html, trials.csv, "
                     "epochs.csv (+ Parquet) and figures/*.png for one or more experiment directories.")
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="directories created by sweeps/run.py (or plain Ray Tune experiments)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: EXPERIMENT_DIR/report "
                        "for one experiment, ./report for several)")
    try:
        args = parser.parse_args(argv)
        out = Path(args.out) if args.out else (Path(args.experiments[0]) / "report"
                                               if len(args.experiments) == 1 else Path("report"))
        if out.exists() and not out.is_dir():
            raise AnalysisError(f"--out {out}: exists and is not a directory; choose another path")
        from analysis.report import write_report

        written = write_report(args.experiments, out)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {written['md']}\n        {written['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
