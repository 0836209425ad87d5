"""The lab's reserved ranges are documented where a lab user reads (issue 15, item 9):
`lab up` refuses a configuration that overlaps its far side, and docs/lab.md says so."""

from __future__ import annotations

from pathlib import Path

from fjord.lab.spec import FAR_IPV4, FAR_IPV6


def test_docs_lab_names_the_ranges_lab_up_refuses():
    text = " ".join(Path("docs/lab.md").read_text().split())
    for net in (FAR_IPV4.network, FAR_IPV6.network):
        assert f"**{net}**" in text, f"docs/lab.md does not say that {net} is reserved"
    assert "`lab up` refuses a configuration whose" in text
