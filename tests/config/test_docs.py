"""The examples in docs/configuration.md must keep loading as the models change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
ENV = {
    name: f"{name}-0123456789"
    for name in (
        "CRM_TOKEN",
        "SEARCH_TOKEN",
        "INTERLOCK_KEY_CLAUDE",
        "INTERLOCK_KEY_BATCH",
        "INTERLOCK_ADMIN_ALICE",
    )
}


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS)
def test_doc_example(tmp_path: Path, block: str) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(block, encoding="utf-8")
    if 'log_level = "verbose"' in block:  # the example of what errors look like
        with pytest.raises(ConfigError) as info:
            load_config(path, env={"CI_KEY": "short"})
        assert len(info.value.problems) == 7
    else:
        load_config(path, env=ENV)
