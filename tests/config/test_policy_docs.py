"""The examples in docs/policies.md must keep loading (or failing as shown) as the models change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.pipeline import load_policies

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```toml\n(.*?)```", TEXT, re.DOTALL)
SHOWN_ERRORS = re.search(r"the gateway reports \(.*?\):\n\n```\n(.*?)```", TEXT, re.DOTALL)


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 2 and SHOWN_ERRORS is not None


@pytest.mark.parametrize("block", BLOCKS)
def test_doc_example(tmp_path: Path, block: str) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "crm.toml").write_text(block, encoding="utf-8")
    if 'name = "crm refunds"' not in block:
        load_policies(folder)
        return
    with pytest.raises(ConfigError) as info:
        load_policies(folder)
    assert SHOWN_ERRORS is not None
    got = str(info.value).replace(str(folder), "policies").splitlines()
    shown = SHOWN_ERRORS[1].splitlines()
    assert len(got) == len(shown)
    for line, expected in zip(got, shown, strict=True):
        head, _, tail = expected.partition("...")
        assert line.startswith(head) and line.endswith(tail), (line, expected)
