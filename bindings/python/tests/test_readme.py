"""README's "Use from Python" example runs as written, from the repository root."""
import os
import re

from conftest import ROOT


def test_readme_example(capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(here)
    assert "heatmap" in capsys.readouterr().out
