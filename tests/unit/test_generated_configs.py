"""The generator of tests/lab/test_generated_configs.py (tests/lab/configgen.py): what it
makes is valid and simulable, reproducible from its seed, and the CI sample covers every
combination of provider x IPv6 mode x switch kind the lab can simulate."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

import configgen

from fjord.lab.provider import PROVIDERS


def test_every_seed_gives_a_valid_configuration_and_a_valid_day_two_change():
    # generate() and mutate() validate what they make (config check + lab spec)
    for seed in range(300):
        gen = configgen.generate(seed)
        change = configgen.mutate(gen, seed)
        assert change.kind in configgen.MUTATIONS
        assert change.data != gen.data


def test_the_same_seed_gives_the_same_configuration():
    assert configgen.generate(7).text("k") == configgen.generate(7).text("k")
    assert configgen.mutate(configgen.generate(7), 7) == configgen.mutate(
        configgen.generate(7), 7)


def test_combinations_are_what_the_lab_can_simulate():
    combos = set(configgen.COMBINATIONS)
    # bridged IPv6 shows container MACs on the uplink: only the bridged provider takes it
    assert ("routed", "bridged", "ovs") not in combos
    assert len(combos) == len(PROVIDERS) * 2 * 2 + 2
    gens = [configgen.generate(0, *combo) for combo in configgen.COMBINATIONS]
    assert [g.combination for g in gens] == list(configgen.COMBINATIONS)
