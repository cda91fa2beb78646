"""The YAML mappings README.md shows (Typeform, Calendly, Paddle), run with their tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from normalizers.testing import run_source_tests

README = (Path(__file__).parents[2] / "README.md").read_text()
SIGNATURES = dict(re.findall(r"```yaml\n# vendor: (\w+)\n(.*?)```", README, re.S))
MAPPINGS = dict(re.findall(r"```yaml\n# mapping: (\w+)\n(.*?)```", README, re.S))


def test_readme_maps_typeform_calendly_and_paddle():
    assert {"typeform", "calendly", "paddle"} <= set(MAPPINGS)


@pytest.mark.parametrize("vendor", sorted(MAPPINGS))
def test_readme_mapping_and_its_tests(vendor, tmp_path):
    source = yaml.safe_load(SIGNATURES[vendor])["sources"][vendor]
    source.update(yaml.safe_load(MAPPINGS[vendor])["sources"][vendor])
    text = yaml.safe_dump({"sources": {vendor: source}}, sort_keys=False)
    config = parse_config(text, "readme.yaml", {f"{vendor.upper()}_WEBHOOK_SECRET": "s"})
    results = list(run_source_tests(vendor, config.sources[vendor], tmp_path))
    assert results, "the README mapping has no tests"
    failures = [f"{r.name}:\n{r.diff}" for r in results if not r.ok]
    assert not failures, "\n\n".join(failures)
