"""The engine: resources read actual state and diff it with the desired one; plan orders
their changes, apply executes them and re-reads to prove convergence."""

from fjord.engine.change import Change, Unchanged
from fjord.engine.resource import Context, Resource

__all__ = ["Change", "Context", "Resource", "Unchanged"]
