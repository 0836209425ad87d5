"""Configuration: YAML loading with positions, typed models, semantic validation, allocation."""

from fjord.config.problems import ConfigError, Problem

__all__ = ["ConfigError", "Problem"]
