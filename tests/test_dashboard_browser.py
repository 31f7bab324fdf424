"""optuna-dashboard in a real browser: headless Chromium renders the study page, and the
page a person sees names both objectives.

The dashboard is a JavaScript single-page app: its HTML holds no study, the browser
fetches the study from the API and draws it. So the check reads the DOM Chromium has
after running the page (``--dump-dom`` after ``--virtual-time-budget``), not the HTML
the server sent. The screenshot is written for people to look at
(``$DASHBOARD_SCREENSHOT``, or the test's temporary folder); the DOM is what is asserted.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from test_dashboard import dashboard  # noqa: F401  (the live server on the finished study)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: `apt-get install chromium` (Debian; .ci/run installs it)")

# Virtual time lets the page's timers and fetches run to completion without waiting for
# them in real time; 15 s of it covers loading the bundle, the API calls and the plots.
VIRTUAL_MS = 15000


def _chromium(url: str, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox",  # root in a container: no user namespace
         "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--window-size=1400,1000",
         f"--virtual-time-budget={VIRTUAL_MS}", *flags, url],
        capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def study_page(dashboard, tmp_path_factory):  # noqa: F811
    """The study page as Chromium rendered it: (its visible text, the screenshot)."""
    base, study_id, _ = dashboard
    url = f"{base}/dashboard/studies/{study_id}"
    tmp = tmp_path_factory.mktemp("chromium")
    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT", tmp / "dashboard.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    dom = _chromium(url, tmp / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    png = _chromium(url, tmp / "profile", f"--screenshot={shot}")
    assert png.returncode == 0 and shot.is_file(), png.stderr[-2000:]
    (tmp / "dom.html").write_text(dom.stdout)
    return dom.stdout, shot


def _text(html: str) -> str:
    """The page's text as a reader sees it: scripts, styles and tags removed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_study_page_names_both_objectives(study_page, finished_study):
    html, shot = study_page
    # The study's user attributes are printed at the foot of the page, and a search's
    # attributes can hold the same words: only the drawn part counts.
    text = _text(html).split("Study User Attributes")[0]
    assert f"{finished_study[1]} (id=" in text, text[:500]  # the study's own page, drawn
    for name in ("val_loss", "latency_ms"):  # nas.study sets them (study.set_metric_names)
        assert name in text, f"{name} is not on the rendered study page: {text[:1500]}"
    assert shot.stat().st_size > 0
