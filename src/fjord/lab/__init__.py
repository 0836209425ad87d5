"""The lab: a whole rented server and its upstream simulated in Linux namespaces.

`Lab` (fjord.lab.lab) is the API; `fjord lab ...` (fjord.commands.lab) the command line.
Imports are lazy: the enter helper (`python -m fjord.lab.enter`) runs for every
`lab exec` and must not pay for pyroute2 or pydantic.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "labs", "orphans"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fjord.lab import lab

        return getattr(lab, name)
    raise AttributeError(name)
