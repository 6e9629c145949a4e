"""The README's snippets run as written (issue 18 item 12: the plain-tools snippet prints only
what it shows)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str, language: str = "python") -> str:
    """The first ``language`` code block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(heading)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match, heading
    return match.group(1)


def test_the_plain_tools_snippet_prints_only_its_table(smoke_zoo, tmp_path):
    code = readme_block("### Reading a zoo with plain tools (no weightzoo import)")
    assert "import weightzoo" not in code and "from weightzoo" not in code
    (tmp_path / "zoo").symlink_to(smoke_zoo)
    script = tmp_path / "snippet.py"
    script.write_text(code + "\nprint('shape', w.shape)\n")
    env = {key: value for key, value in __import__("os").environ.items() if key != "ICECHUNK_LOG"}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1].startswith("shape (3, "), run.stdout  # [snapshot, param] of the first model
    table = [line for line in lines[:-1] if line.strip()]
    assert table and all(line[0] in "┌│├└" for line in table), run.stdout  # DuckDB's table, nothing else
    assert "WARN" not in run.stdout and "digits" in run.stdout


def test_the_torch_loader_example_runs_as_a_script(smoke_zoo, tmp_path):
    """Issue 18 item 8: pasted into a script, the example works (forkserver workers need the guard)."""
    text = README.read_text()
    start = text.index("`torch_loader` is a `DataLoader` whose workers start with `forkserver`")
    code = re.compile(r"```python\n(.*?)```", re.S).search(text, start).group(1)
    assert 'if __name__ == "__main__":' in code
    (tmp_path / "zoo").symlink_to(smoke_zoo)
    code = code.replace("range(10)", "range(2)").replace(
        'batch["weights"], batch["k"], batch["model_id"]', 'print("batch", tuple(batch["weights"].shape))')
    script = tmp_path / "loader.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    shapes = [line for line in run.stdout.splitlines() if line.startswith("batch")]
    assert shapes, run.stdout
