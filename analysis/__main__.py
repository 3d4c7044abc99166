"""``python -m analysis EXPERIMENT_DIR [...] [--out DIR]``: write the SELU-vs-ReLU report.

Only reads the experiments: the one place it writes is ``--out`` (default ``EXPERIMENT_DIR/report``
for one experiment, ``./report`` for several). Damaged trials are skipped and listed in the
report's notes. Several experiments are compared, never paired with each other: only arms of
one experiment are paired (by replicate); arms of different experiments are compared by Welch's
t-test on replicate means (analysis.compare).

Exit codes: 0 written; 2 bad input (one line on stderr saying what is wrong and how to fix it,
nothing written); 1 a bug in the analysis itself (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from analysis.load import AnalysisError, _text, check_experiment


def _prog() -> str:
    """The name the user typed: the installed ``selu-analysis`` command, else ``python -m analysis``."""
    return "selu-analysis" if os.path.basename(sys.argv[0]) == "selu-analysis" else "python -m analysis"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise AnalysisError(f"{message} (see --help)")


def _parser() -> _Parser:
    parser = _Parser(prog=_prog(), description="Write report.md, report.html, trials.csv, "
                     "epochs.csv (+ Parquet) and figures/*.png for one or more experiment directories. "
                     "Reads the experiments only; writes nothing but --out.")
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="directories created by sweeps/run.py (or plain Ray Tune experiments)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: EXPERIMENT_DIR/report "
                        "for one experiment, ./report for several)")
    parser.add_argument("--optuna-storage", metavar="URL", help="database URL of the sweeps' Optuna "
                        "studies, with its password (default: each config.yaml's search.optuna_storage, "
                        "whose saved URL has no password: set PGPASSWORD or ~/.pgpass; else optuna.db)")
    parser.add_argument("--debug", action="store_true",
                        help="show warnings, and the traceback of an internal error")
    return parser


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_out(out: Path, experiments: list[str]) -> None:
    """Refuse an output directory that is a file, cannot be created, or lies inside an experiment
    (other than its ``report/``): the report must never mix with or overwrite results."""
    shown = _text(out)
    try:
        resolved = out.resolve()
        exps = [Path(e).expanduser().resolve() for e in experiments]
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        raise AnalysisError(f"--out {shown}: cannot be resolved (a symbolic link loop?); choose another "
                            f"--out") from None
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"--out {shown}: exists and is not a directory; choose another path")
    lexical = Path(os.path.abspath(out))
    for raw, exp in zip(experiments, exps):
        under = Path(os.path.abspath(Path(raw).expanduser()))
        if _inside(lexical, under) and not _inside(resolved, exp):
            # EXPERIMENT/report a symbolic link out of the experiment: never followed, never written
            raise AnalysisError(f"--out {shown}: a symbolic link out of the experiment {_text(exp)}; "
                                f"remove the link, or pass --out with a directory of your own")
        if _inside(resolved, exp) and not _inside(resolved, exp / "report"):
            raise AnalysisError(f"--out {shown}: inside the experiment {_text(exp)}, whose files must stay "
                                f"untouched; use {_text(exp / 'report')} or a directory outside it")
    ancestor = resolved
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AnalysisError(f"--out {shown}: {_text(ancestor)} is a file, not a directory; choose another "
                            f"--out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AnalysisError(f"--out {shown}: {_text(ancestor)} is not writable; choose another --out")


def _run(args: argparse.Namespace) -> dict[str, str]:
    if any(not e for e in args.experiments) or args.out == "":
        raise AnalysisError("an empty path was given; pass an experiment dir such as results/NAME")
    for exp in args.experiments:
        check_experiment(exp)  # every experiment is valid before anything is written
    out = Path(args.out).expanduser() if args.out else (
        Path(args.experiments[0]).expanduser() / "report" if len(args.experiments) == 1 else Path("report"))
    check_out(out, args.experiments)
    if args.optuna_storage is not None and ("\0" in args.optuna_storage or len(args.optuna_storage) > 4096):
        raise AnalysisError("--optuna-storage: not a database URL; pass e.g. "
                            "postgresql+psycopg://user:password@host/db")
    from analysis.report import write_report

    try:
        return write_report(args.experiments, out, optuna_storage=args.optuna_storage)
    except OSError as exc:
        where = _text(exc.filename) if exc.filename else _text(out)
        raise AnalysisError(f"cannot write the report: {where}: {exc.strerror or exc}; choose another "
                            f"--out or free some space") from None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings(record=not debug):
            if not debug:
                warnings.simplefilter("ignore")  # the report's notes say what matters
            written = _run(parser.parse_args(argv))
    except AnalysisError as exc:
        print(f"error: {_text(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not bad input: say so in one line
        if debug:
            raise
        print(f"internal error: {_text(exc.__class__.__name__)}: {_text(exc)[:300]} (a bug in the analysis; "
              f"rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1
    print(f"report: {_text(written['md'])}\n        {_text(written['html'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
