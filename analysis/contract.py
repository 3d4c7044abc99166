"""What a sweep writes and the analysis reads, defined once: the experiment's file names, the two
stages, the status words of a trial and the per-epoch columns.

``sweeps/`` writes with these names and ``analysis/`` reads with them, so the writer and the
reader cannot drift apart. The per-epoch metrics come from the trainable itself
(``trainable.train.METRICS``); this module adds only what Tune and the test measurement append.
"""

from __future__ import annotations

from trainable.train import METRICS

# --------------------------------------------------------------------------- the experiment directory
MARKER = ".selu-sweep.json"   # ownership marker: tool, version, name, creation time, experiment id
CONFIG_FILE = "config.yaml"   # the resolved config (passwords redacted)
DATA_FILE = "data.json"       # the data: source, sizes, digest, official release or not
RUNS_FILE = "runs.jsonl"      # one line per start or resume: time, host, command line
FINAL_LOOK_FILE = "final-look.json"  # written when the budget made a look the last: {replicates, reason}
OPTUNA_DB = "optuna.db"       # the Optuna studies (SQLite), unless search.optuna_storage names a database
REPORT_DIR = "report"         # the analysis report
VERDICT_FILE = "verdict.json"  # the verdict for machines, in REPORT_DIR
DONE_FILE = "done.json"       # in a trial's directory: its end, recorded before the driver moves on
REPLICATE_DIR_PREFIX = "replicate-"  # <stage>/replicate-<r>/: a later replicate's Tune experiment
SNAPSHOT_DIR = ".last-snapshot"  # <stage>/.last-snapshot/: a whole copy of Tune's latest snapshot

# --------------------------------------------------------------------------- stages
SEARCH, CONFIRM = "search", "confirm"
STAGES = (SEARCH, CONFIRM)    # each a Ray Tune experiment directory of that name (the first batch of
                              # replicates), holding one per later replicate of a sequential plan
# The original experiment's configuration (train.lr, the most epochs; confirm.original_seeds runs per
# arm and replicate): a secondary estimand without search luck. Its runs live in the confirmation's
# Tune experiment with "stage": ORIGINAL in their config, and are loaded as a stage of their own, so
# the primary test, the looks and the confirmation's completeness never count them.
ORIGINAL = "original"
TRIAL_STAGES = (*STAGES, ORIGINAL)  # what a trial's config may name as its stage

# --------------------------------------------------------------------------- trial statuses
FINISHED = "finished"            # ran every planned epoch
STOPPED_EARLY = "stopped_early"  # stopped by the scheduler (successive halving) before its planned end
DIVERGED = "diverged"            # its training loss exploded: an outcome, counted apart
FAILED = "failed"                # errored (Tune's ERROR)
INCOMPLETE = "incomplete"        # neither: still running, pending or interrupted
STATUSES = (FINISHED, STOPPED_EARLY, DIVERGED, FAILED, INCOMPLETE)
USABLE = (FINISHED, DIVERGED)    # ran to their planned end; diverged ones are outcomes, counted apart

# --------------------------------------------------------------------------- per-epoch columns
TEST_METRICS = ("test_loss", "test_accuracy")  # reported once, at a trial's last epoch
EPOCH_COLUMNS = (*METRICS, *TEST_METRICS, "timestamp")
ACCURACY_COLUMNS = tuple(c for c in EPOCH_COLUMNS if c.endswith("accuracy"))

# --------------------------------------------------------------------------- names
# Experiment and arm names: they become path components, study names, table cells and report text,
# so only these characters (sweeps refuses others at parse time; the loader replaces them in files).
NAME_CHARS = "A-Za-z0-9._-"
NAME_PATTERN = rf"^[A-Za-z0-9][{NAME_CHARS}]*$"
MAX_NAME = 100

# --------------------------------------------------------------------------- secrets
# No file of an experiment holds a password: every URL's ``user:password@`` becomes ``user:***@``.
REDACTED = "***"

# --------------------------------------------------------------------------- the analysis' defaults
# (config: analysis.primary, analysis.equivalence_margin; sweeps/config.py and analysis/ import them)
PRIMARY_METRIC = "final_test_accuracy"  # the confirmatory question, tested alone at alpha
PRIMARY_METRICS = ("final_test_accuracy", "final_val_accuracy", "best_val_accuracy")  # its allowed values
# Percentage points: the smallest equivalence margin the default sequential plan (3..8 replicates)
# shows with >= 90% probability when the arms do not differ, at the spread measured on real runs
# (benchmarks/README.md, calibration).
MARGIN_POINTS = 2.0


def replicate_column(df):
    """Each row's replicate as int64: 0 where the column is absent or empty (a sweep without
    replicates is one replicate). The loader applies it once; analysis functions that also take
    hand-built frames call it rather than re-defaulting the column themselves."""
    import numpy as np
    import pandas as pd

    if "replicate" not in df:
        return pd.Series(0, index=df.index, dtype=np.int64)
    return pd.to_numeric(df["replicate"], errors="coerce").fillna(0).astype(np.int64)
