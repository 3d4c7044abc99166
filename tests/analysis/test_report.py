"""analysis/report.py: every report file is written; the HTML is self-contained; the CLI works."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd

from analysis.report import write_report


def test_report_files_exist_and_html_embeds_its_images(smoke_sweep, tmp_path):
    _, exp, _ = smoke_sweep
    out = tmp_path / "report"
    written = write_report([exp], out)
    for name in ("report.md", "report.html", "trials.csv", "epochs.csv", "trials.parquet",
                 "epochs.parquet"):
        assert (out / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"learning_curves.png", "overfitting.png", "lr_sensitivity.png",
            "search_progress.png"} <= set(figures)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert not re.search(r'src="(?!data:)', html), "every image is embedded, none linked"
    md = (out / "report.md").read_text()
    assert "## Verdict" in md and "n=2 seeds each" in md and "95% CI" in md and "Welch" in md
    trials = pd.read_csv(written["trials_csv"])
    assert len(trials) == 10 and len(pd.read_parquet(out / "epochs.parquet")) == 20


def test_cli_writes_the_report(smoke_sweep, tmp_path):
    _, exp, _ = smoke_sweep
    proc = subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "report.html").exists()
