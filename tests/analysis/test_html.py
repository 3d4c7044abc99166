"""analysis/html.py: Markdown tables from DataFrames, and the report as one self-contained HTML page."""

import base64
import html as html_lib
import re
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis.html import markdown_table, render_html  # noqa: E402
from analysis.report import _table  # noqa: E402
from analysis.report import render_html as report_render_html  # noqa: E402


def _png(path, color="tab:blue"):
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([1, 2, 3], [0.3, 0.5, 0.6], color=color, marker="o")
    ax.set(title="val_accuracy", xlabel="epoch")
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return str(path)


def _visible_text(page: str) -> str:
    body = page.split("<body>", 1)[1]
    return html_lib.unescape(re.sub(r"<[^>]+>", "", body))


def _summary() -> pd.DataFrame:
    return pd.DataFrame({"arm": ["relu", "selu"], "n": [5, 5], "mean": [0.61234, np.nan],
                         "ci_low": [0.5, 0.48], "significant": [True, False]})


def test_markdown_table_right_aligns_numeric_columns_only():
    lines = markdown_table(_summary()).splitlines()
    assert lines[0] == "| arm | n | mean | ci_low | significant |", "intraword _ needs no escape"
    assert lines[1] == "|---|---:|---:|---:|---|", "numbers right, text and booleans left"
    assert lines[2] == "| relu | 5 | 0.6123 | 0.5000 | True |"


def test_markdown_table_shows_missing_values_as_a_dash_not_nan():
    df = pd.DataFrame({"arm": ["relu", None], "mean": [np.nan, 0.25], "n": pd.array([3, None], dtype="Int64"),
                       "trials": [4.0, np.nan]})
    table = markdown_table(df, floatfmt=".2f")
    assert "nan" not in table.lower() and "None" not in table and "<NA>" not in table
    assert table.splitlines()[2:] == ["| relu | – | 3 | 4 |", "| – | 0.25 | – | – |"], \
        "a float column of whole numbers with a gap (a count) prints as integers"
    assert markdown_table(pd.DataFrame(columns=["a"])) == "_(none)_"


def test_report_table_is_markdown_table():
    assert _table(_summary()) == markdown_table(_summary())


def test_data_cannot_become_markup():
    df = pd.DataFrame({"arm": ["<script>alert(1)</script>", "a|b", "**bold** `code` [x](y) _e_ & <b>"],
                       "v": [1.0, 2.0, 3.0]})
    table = markdown_table(df)
    assert len(table.splitlines()[3].split(" | ")) == 2, "a pipe in data stays inside its cell"
    page = render_html(table, {})
    assert "<script>" not in page and "<b>" not in page and "<strong>" not in page and "<code>" not in page
    assert "<a " not in page and "<em>" not in page
    text = _visible_text(page)
    for cell in df["arm"]:
        assert cell in text, f"{cell!r} is shown literally"


def test_rendered_page_has_no_markdown_left():
    md = ("# SELU vs ReLU\n\nExperiments: `default` (results/default).  \nsecond line\n\n## Verdict\n\n"
          "- **selu** beats `relu` by 0.02 (n=5 per arm, 95% CI [0.01, 0.03], Welch's t-test)\n"
          "- second item with `code`\n\n### Table\n\n" + markdown_table(_summary()) + "\n")
    page = render_html(md, {})
    text = _visible_text(page)
    assert "`" not in text and "**" not in text and "|---" not in text and "#" not in text
    assert "<h1>SELU vs ReLU</h1>" in page and "<h2>Verdict</h2>" in page and "<h3>Table</h3>" in page
    assert page.count("<li>") == 2 and "<ul>" in page
    assert "<code>relu</code>" in page and "<strong>selu</strong>" in page
    assert '<meta charset="utf-8">' in page and "<br" in page


def test_numbers_are_right_aligned_in_html_tables():
    hand_written = "| arm | acc | n |\n|---|---|---|\n| relu | 0.51 | 3 |\n| selu | – | 12 |\n"
    for md in (markdown_table(_summary()), hand_written):
        page = render_html(md, {})
        assert re.search(r'<th style="text-align:right">(n|mean)</th>', page)
        assert '<td style="text-align:right">' in page
        assert "<td>relu</td>" in page, "text stays left-aligned"


def test_images_are_embedded_as_data_uris(tmp_path):
    png = _png(tmp_path / "curves.png")
    page = render_html("intro\n\n![learning_curves](figures/curves.png)\n", {"figures/curves.png": png})
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == (tmp_path / "curves.png").read_bytes()
    assert 'alt="learning_curves"' in page


@pytest.mark.parametrize("src", ["figures/missing.png", "y", "https://evil.example/x.png"])
def test_an_image_without_a_file_is_shown_as_text_never_fetched_nor_an_error(tmp_path, src):
    """An arm named ``![x](y)`` once made the analysis exit 1 after report.md was written."""
    page = render_html(f"![x]({src})\n", {"figures/other.png": _png(tmp_path / "o.png")})
    assert "<img" not in page and f"[image {src}: x]" in page


def test_report_wrapper_maps_figure_names_to_their_links(tmp_path):
    png = _png(tmp_path / "figures_learning_curves.png")
    page = report_render_html("![learning_curves](figures/figures_learning_curves.png)\n",
                              {"learning_curves": png})
    assert page.count("data:image/png;base64,") == 1


def test_title_is_escaped():
    assert "<title>a &lt;b&gt; &amp; c</title>" in render_html("x", {}, title="a <b> & c")


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def test_report_page_loads_cleanly_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                   "'.[dev]')")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); Playwright cannot download one offline")
    figures = {f"figures/{n}.png": _png(tmp_path / f"{n}.png", c)
               for n, c in (("learning_curves", "tab:blue"), ("search_progress", "tab:orange"))}
    md = ("# SELU vs ReLU: sweep report\n\n## Verdict\n\n- `selu` vs `relu`: **no difference**\n\n"
          + markdown_table(_summary()) + "\n\n## Figures\n\n"
          + "\n".join(f"![{k}]({k})" for k in figures) + "\n")
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(md, figures), encoding="utf-8")

    errors, requests = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, timeout=120_000)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({complete: e.complete, w: e.naturalWidth}))")
            aligns = page.eval_on_selector_all(
                "td", "els => els.map(e => [e.textContent, getComputedStyle(e).textAlign])")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(images) == 2 and all(i["complete"] and i["w"] > 0 for i in images), images
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [], "the page is self-contained"
    assert ["0.6123", "right"] in aligns and ["relu", "start"] in aligns


# Where each figure belongs: the section (h2) whose table it illustrates.
FIGURE_SECTIONS = {
    "replicate_differences": "Answer", "replicate_means": "Activation level",
    "overfitting_by_epoch": "Overfitting",
    "learning_curves": "Overfitting", "overfitting": "Overfitting", "lr_sensitivity": "Search stage",
    "expected_best": "Search stage", "search_progress": "Search stage", "param_importance": "Search stage",
}


def test_every_report_figure_loads_in_chromium_in_its_section_with_a_caption(tmp_path):
    """A whole report (handmade experiment): every figure drawn loads, sits inside the section of
    the table it illustrates (not at the page's end), and has a caption under it naming its n."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                   "'.[dev]')")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); Playwright cannot download one offline")
    from analysis.report import write_report
    from tests.analysis.handmade import make_experiment

    written = write_report([make_experiment(tmp_path / "exp")], tmp_path / "report")
    drawn = {p.stem for p in (tmp_path / "report" / "figures").glob("*.png")}
    assert drawn == set(FIGURE_SECTIONS), drawn
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, timeout=120_000)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((tmp_path / "report" / "report.html").as_uri(), wait_until="load")
            figures = page.eval_on_selector_all("img", """els => els.map(img => {
                const heads = [...document.querySelectorAll('h2')];
                const top = img.getBoundingClientRect().top + window.scrollY;
                const before = heads.filter(h => h.getBoundingClientRect().top + window.scrollY < top);
                const section = before[before.length - 1];
                const caption = img.closest('p').nextElementSibling;
                return {alt: img.alt, complete: img.complete, w: img.naturalWidth,
                        section: section ? section.textContent : null,
                        below_heading: top - (section.getBoundingClientRect().top + window.scrollY),
                        caption: caption ? caption.textContent : ''};
            })""")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert sorted(f["alt"] for f in figures) == sorted(drawn), "each drawn figure appears once"
    for f in figures:
        assert f["complete"] and f["w"] > 0, f
        assert f["section"].startswith(FIGURE_SECTIONS[f["alt"]]), f
        assert f["below_heading"] < 3000, f"{f['alt']} sits {f['below_heading']:.0f} px below its heading"
        assert f["caption"].startswith("Figure: ") and "n=" in f["caption"], f
    assert "## Figures" not in open(written["md"]).read()
