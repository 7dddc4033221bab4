"""The README stays true to the code: generated reference fresh, the two commands first,
relative links resolve, and the chart values it names exist."""

from __future__ import annotations

import re

import readme_reference
import yaml
from chart_helpers import CHART, ROOT

README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    block = re.search(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    assert README.index(block.group(0)) < README.index("\n## ")


def test_ttsservice_reference_is_generated_from_the_current_crd() -> None:
    assert readme_reference.current() == readme_reference.render(), (
        "README's TTSService reference is stale: .venv/bin/python "
        "tests/chart/readme_reference.py --write"
    )


def test_reference_lists_every_spec_field() -> None:
    crd = yaml.safe_load(readme_reference.CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for key in spec["properties"]:
        assert f"| `spec.{key}`" in README


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
