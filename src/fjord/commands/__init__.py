"""The command groups below `fjord` (fjord.cli): `container`, `image` and `lab`. Each
parses, calls the layers and prints; fjord.cli loads a group by module path only when
it is used, and nothing imports these modules (tests/unit/test_import_graph.py)."""
