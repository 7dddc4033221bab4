"""The README stays true to the code: the two commands first, relative links resolve, and the
chart values it names exist. (Its generated TTSService reference is checked for freshness by
tests/operator/test_op_docgen.py, next to the generator.)"""

from __future__ import annotations

import re

import yaml
from chart_helpers import CHART, ROOT

README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    block = re.search(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    assert README.index(block.group(0)) < README.index("\n## ")


def test_relative_links_resolve() -> None:
    links = re.findall(r"\]\(((?!https?://|#)[^)]+)\)", README)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_chart_values_named_in_the_readme_exist() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = README[README.index("| Value | Default |") :].split("\n\n")[0]
    first_cells = [row.split("|")[1] for row in table.splitlines()[2:]]
    keys = [k for cell in first_cells for k in re.findall(r"`([^`]+)`", cell)]
    assert len(keys) > 10
    for key in keys:
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"README names {key}, not in values"
            node = node[part]
