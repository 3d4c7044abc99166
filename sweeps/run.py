#!/usr/bin/env python
"""Run a SELU-vs-ReLU sweep: Optuna search through Ray Tune, confirmation over seeds, report.

    python sweeps/run.py                                   # configs/default.yaml
    python sweeps/run.py --config sweeps/configs/smoke.yaml --name demo
    python sweeps/run.py --name default --resume           # continue after any interruption
    python -m sweeps --config sweeps/configs/smoke.yaml    # the same, as a module
    python sweeps/run.py --set search.num_samples=16 --set resources.gpus_per_trial=0.25

Exit codes: 0 done, 2 bad input (nothing started or written), 1 failure while running.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from sweeps.config import DEFAULT_CONFIG, ConfigError, check_name, parse_config, read_yaml  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, not argparse's usage dump
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    prog = "selu-sweep" if os.path.basename(sys.argv[0]) == "selu-sweep" else "sweeps/run.py"
    p = _Parser(prog=prog, description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Configs: sweeps/configs/{default,smoke,blog,selu-paper}.yaml. Results: "
                       "<storage-path>/<name>/ holding config.yaml, optuna.db, search/, confirm/, report/.")
    p.add_argument("--config", metavar="FILE", help=f"sweep config YAML (default: {DEFAULT_CONFIG.name}; "
                   "with --resume or --confirm-only, the sweep's saved config.yaml)")
    p.add_argument("--name", help="experiment name (directory under --storage-path); overrides `name`")
    p.add_argument("--storage-path", metavar="PATH", help="where experiments live: a local dir or "
                   "s3://, gs:// (default: results)")
    p.add_argument("--data-dir", metavar="PATH", help="local CIFAR-10: a cifar-10-batches-py dir or "
                   "cifar-10-python.tar.gz (default: the Keras download cache)")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster to join ('auto' = the running one); "
                   "default: RAY_ADDRESS if set, else a private local Ray")
    p.add_argument("--optuna-storage", metavar="URL", help="SQLAlchemy URL of the Optuna study "
                   "(default: sqlite file in the experiment dir)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this name")
    p.add_argument("--overwrite", action="store_true", help="delete an existing sweep of this name first")
    p.add_argument("--skip-confirm", action="store_true", help="run the search stage only")
    p.add_argument("--confirm-only", action="store_true", help="run only the confirmation stage, "
                   "from the best configs of an existing search")
    p.add_argument("--no-report", action="store_true", help="do not write the analysis report")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set search.num_samples=8 (repeatable)")
    return p


def parse(argv: list[str] | None = None):
    """Parse the command line and the config; returns (SweepConfig, RunOptions). No side effects.

    Every override is applied here, once: ``--set`` values are YAML-typed, flags are taken
    literally. ``name`` and ``storage_path`` are resolved first (flags, then ``--set``, then the
    config file), because ``--resume`` and ``--confirm-only`` continue from the saved config; that
    config's ``address`` is not used (a resumed run joins only a cluster its command line names).
    The command line is recorded with every URL's password redacted (``--flag URL``,
    ``--flag=URL``, ``--set key=URL``): the one place it is redacted, before anything is written.
    """
    from analysis._files import redact_text
    from analysis.contract import CONFIG_FILE
    from sweeps.config import parse_assignment, parse_yaml_text, show
    from sweeps.experiment import Experiment, check_storage_path, has_redacted_password
    from sweeps.prepare import RunOptions
    from sweeps.studies import has_env_password, without_password

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    flags = {key: getattr(args, attr) for attr, key in (
        ("name", "name"), ("storage_path", "storage_path"), ("data_dir", "data.data_dir"),
        ("address", "address"), ("optuna_storage", "search.optuna_storage"))
        if getattr(args, attr) is not None}
    sets = dict(parse_assignment(a) for a in args.overrides)
    raw = read_yaml(args.config) if args.config else read_yaml(DEFAULT_CONFIG)
    if (args.resume or args.confirm_only) and args.config is None:
        # Continue what was started: the saved, resolved config (plus any --set/flag changes).
        name = str(flags.get("name", sets.get("name", raw.get("name", ""))))
        storage = str(flags.get("storage_path", sets.get("storage_path", raw.get("storage_path", "results"))))
        check_name("name", name)
        check_storage_path(storage)
        text = Experiment(storage, name).read_text(CONFIG_FILE)
        if text is not None:
            raw = parse_yaml_text(text, f"{show(storage, 200)}/{name}/{CONFIG_FILE} (saved config)")
            raw.pop("address", None)  # never join the saved cluster unless the command line names it
    cfg = parse_config(raw, args.overrides, flags)
    url = cfg.search.optuna_storage
    if has_redacted_password(url):
        if not has_env_password(url):
            raise ConfigError("search.optuna_storage: the saved config hides the database password; pass "
                              "--optuna-storage URL again, or set PGPASSWORD (or ~/.pgpass) / MYSQL_PWD")
        cfg = replace(cfg, search=replace(cfg.search, optuna_storage=without_password(url)))
    options = RunOptions(resume=args.resume, overwrite=args.overwrite, skip_confirm=args.skip_confirm,
                         confirm_only=args.confirm_only, report=not args.no_report,
                         command=redact_text(shlex.join(["sweeps/run.py", *argv])))
    return cfg, options


INTERRUPTED = "interrupted; resume with --resume"  # the last line of any interrupted run (exit 1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code. Its last line (``done: PATH`` on stdout, or an
    error or ``INTERRUPTED`` on stderr) is printed after Ray has stopped, with Ctrl-C and SIGTERM
    ignored from the end of the run to that line: a second Ctrl-C while Ray stops (in its own
    ``atexit`` hook, before this) printed a traceback after the last line. Called with no
    ``argv`` (the command line: this process exits next), they stay ignored to the exit; called
    with an ``argv`` list (in-process), the handlers are put back and a Ray the caller had started
    before is left running."""
    import signal

    stop = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in stop}
    ray_before = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # a caller's own Ray stays
    try:
        code, line = _main(argv)
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's stop was being handled
        code, line = 1, INTERRUPTED
    finally:
        for sig in stop:
            signal.signal(sig, signal.SIG_IGN)
    try:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized() and not ray_before:
            ray.shutdown()
        print(line, file=sys.stdout if code == 0 else sys.stderr, flush=True)
    finally:
        if argv is not None:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    return code


def _main(argv: list[str] | None) -> tuple[int, str]:
    """The run; returns the exit code and the last line to print."""
    import signal

    from analysis.contract import STAGES
    from sweeps.experiment import Experiment, redact
    from sweeps.prepare import SweepFailed, SweepInterrupted, validate
    from sweeps.studies import export_password
    from sweeps.trust import verify_dir
    from trainable.cifar10 import DataError

    # SIGTERM stops like Ctrl-C until the sweep installs its own handlers (sweeps.runner.stop_signals).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cfg, options = parse(argv)
        export_password(cfg.search.optuna_storage)  # the secret, once: where the clients read it
        exp = Experiment(cfg.storage_path, cfg.name)
        validate(cfg, options, exp)  # once, and fast: before Ray is imported
        if options.overwrite and exp.has_sweep():  # only the sweep's own entries, of this very directory
            exp.check_deletable()
        if options.resume or options.confirm_only:  # what a restore would unpickle: signed by this user?
            for stage in STAGES:
                if exp.has_stage(stage):
                    verify_dir(exp.join(stage))
        from sweeps.runner import run_sweep

        path = run_sweep(cfg, options, exp=exp, validated=True)
    except (ConfigError, DataError) as exc:
        return 2, f"error: {exc}"
    except SweepInterrupted as exc:
        return 1, f"{exc}\n{INTERRUPTED}"
    except KeyboardInterrupt:
        return 1, INTERRUPTED
    except SweepFailed as exc:
        return 1, f"failed: {exc}"
    except OSError as exc:  # e.g. a full disk: what finished is kept, and a write was atomic
        where = f" ({redact(exc.filename)})" if getattr(exc, "filename", None) else ""
        return 1, f"failed: {exc.strerror or exc}{where}; free the space or fix the path, then --resume"
    return 0, f"done: {redact(path)}"


if __name__ == "__main__":
    sys.exit(main())
