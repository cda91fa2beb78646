"""The YAML mappings docs/mappings.md shows (Typeform, Calendly, Paddle), run with their tests
(on the sources docs/sources.md configures)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from normalizers.testing import run_source_tests

DOCS = Path(__file__).parents[2] / "docs"
SOURCES = (DOCS / "sources.md").read_text()
SIGNATURES = dict(re.findall(r"```yaml\n# vendor: (\w+)\n(.*?)```", SOURCES, re.S))
MAPPINGS_DOC = (DOCS / "mappings.md").read_text()
MAPPINGS = dict(re.findall(r"```yaml\n# mapping: (\w+)\n(.*?)```", MAPPINGS_DOC, re.S))


def test_readme_maps_typeform_calendly_and_paddle():
    assert {"typeform", "calendly", "paddle"} <= set(MAPPINGS)


@pytest.mark.parametrize("vendor", sorted(MAPPINGS))
def test_readme_mapping_and_its_tests(vendor, tmp_path):
    source = yaml.safe_load(SIGNATURES[vendor])["sources"][vendor]
    source.update(yaml.safe_load(MAPPINGS[vendor])["sources"][vendor])
    text = yaml.safe_dump({"sources": {vendor: source}}, sort_keys=False)
    config = parse_config(text, "readme.yaml", {f"{vendor.upper()}_WEBHOOK_SECRET": "s"})
    results = list(run_source_tests(vendor, config.sources[vendor], tmp_path))
    assert results, "the docs/mappings.md mapping has no tests"
    failures = [f"{r.name}:\n{r.diff}" for r in results if not r.ok]
    assert not failures, "\n\n".join(failures)
