"""The plan says what is declared and what is there (issue 15, item 9): no "SSH keys"
for a container without keys, no "running" for a stopped container."""

from __future__ import annotations

from pathlib import Path

import pytest

from fjord.containers.libvirt import DomainState
from fjord.containers.resources import Orphan, RootResource
from fjord.engine.resource import Context

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQegTl+dk1r+ldKeigLZdt7kkZb4uBda3sRNj8oO5Df "
       "admin@example.net")


def _desired(tmp_path: Path, containers: str):
    from fjord.config.desired import load

    text = Path("examples/lab.yaml").read_text().split("\ncontainers:")[0]
    path = tmp_path / "fjord.yaml"
    path.write_text(text + "\ncontainers:\n" + containers)
    return load(str(path))


class Domains:
    def __init__(self, **running: bool) -> None:
        self.running = running

    def domain(self, name: str) -> DomainState | None:
        if name not in self.running:
            return None
        return DomainState(name, "u", self.running[name], False, "<domain/>")


@pytest.mark.parametrize(("spec", "said"), [
    ("{}", "(network, names, DNS)"),
    (f"{{ssh_keys: ['{KEY}']}}", "(network, names, DNS, 1 SSH key)"),
    (f"{{ssh_keys: ['{KEY}', '{KEY} 2'], puppet: {{server: p.example.net}}}}",
     "(network, names, DNS, 2 SSH keys, Puppet)"),
])
def test_a_new_root_is_customised_with_what_is_declared(tmp_path, state_dir, spec, said):
    from fjord.containers.image import make_spec

    desired = _desired(tmp_path, f"  test: {spec}\n")
    image = make_spec(suite="bookworm", mirror="http://deb.debian.org/debian",
                      architecture="amd64")
    (change,) = RootResource(desired.container("test"), image).changes(Context(desired))
    assert change.action == "create"
    assert change.detail.endswith(f"customised {said}")


@pytest.mark.parametrize(("running", "said"), [
    (True, "kept, running as it is;"),
    (False, "kept, stopped as it is;"),
])
def test_a_container_out_of_the_file_is_kept_as_it_is(tmp_path, state_dir, running, said):
    desired = _desired(tmp_path, "  test: {}\n")
    ctx = Context(desired)
    ctx.drivers["libvirt"] = Domains(old=running)
    assert Orphan("old").changes(ctx) == []
    (warning,) = ctx.warnings
    assert said in warning
    assert ("running" in warning) is running


def test_a_root_without_a_domain_is_kept_as_a_root(tmp_path, state_dir):
    from fjord.containers import rootfs

    desired = _desired(tmp_path, "  test: {}\n")
    rootfs.RootfsLayout.of("old").base.mkdir(parents=True)
    ctx = Context(desired)
    ctx.drivers["libvirt"] = Domains()
    assert Orphan("old").changes(ctx) == []
    (warning,) = ctx.warnings
    assert "its root filesystem only (no libvirt domain)" in warning


def test_a_container_of_which_only_addresses_are_left_is_freed_by_prune(tmp_path, state_dir):
    """Root and domain removed by hand: its addresses (and so its routes, names, rules)
    were kept for good, even by --prune, which had nothing to find it by."""
    from fjord.containers.resources import resources
    from fjord.engine.resource import Options
    from fjord.state import allocations

    desired = _desired(tmp_path, "  test: {}\n")
    allocations.write({"ghost": {"ipv4": "10.1.0.9", "mac_private": "52:54:00:00:00:09"}})
    orphans = [r for r in resources(desired, allocations.read()) if isinstance(r, Orphan)]
    assert [r.id for r in orphans] == ["container ghost"]
    ctx = Context(desired)
    ctx.drivers["libvirt"] = Domains()
    assert orphans[0].changes(ctx) == []
    (warning,) = ctx.warnings
    assert "ghost is gone" in warning and "--prune" in warning
    ctx = Context(desired, options=Options(prune=True))
    ctx.drivers["libvirt"] = Domains()
    (change,) = orphans[0].changes(ctx)
    assert change.action == "delete" and "free the addresses of ghost" in change.detail
    change.run(ctx)
    assert "ghost" not in allocations.read()
    assert orphans[0].changes(ctx) == []
