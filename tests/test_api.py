"""The Python API (``from nas import run_search``): the README's example, run as written."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import ROOT, cli_env


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"### {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path):
    code = _readme_block("From Python (a notebook)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # The summary the command prints, then what the example prints of the result.
    assert "Pareto front on cpu" in r.stdout and "winner     :" in r.stdout
    assert "ArchConfig(" in r.stdout and "20 trials in outputs/notebook" in r.stdout
    assert (tmp_path / "outputs" / "notebook" / "pareto.csv").is_file()


def test_a_bad_override_raises_one_line_naming_the_key(tmp_path, monkeypatch):
    from nas import run_search
    from nas.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^search.seed: 'abc'") as e:
        run_search("tiny", "cpu", overrides=["search.seed=abc"])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "outputs").exists()
