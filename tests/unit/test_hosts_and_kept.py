"""The /etc/hosts block and the network's view of containers kept until --prune."""

from __future__ import annotations

from hosts import BOOKWORM, on

from fjord.config.desired import Known, load, with_kept
from fjord.host.hosts_file import BEGIN, END, block, merge


def test_hosts_block_is_added_replaced_and_removed_leaving_the_rest():
    desired = load("examples/lab.yaml")
    mine = "127.0.0.1\tlocalhost\n192.0.2.9\tprinter\n"
    once = merge(mine, block(desired))
    assert once.startswith(mine.rstrip("\n"))
    assert f"{BEGIN}\n10.1.0.2\ttest.example.net test\n" in once and once.endswith(END + "\n")
    assert merge(once, block(desired)) == once
    assert merge(once, []) == mine


def test_kept_containers_keep_their_addresses_in_the_network_view():
    allocations = {"gone": {"ipv4": "10.1.0.9", "ipv6": "2001:db8:151:7307:1::9",
                            "mac_private": "52:54:00:00:00:09"}}
    desired = load("examples/lab.yaml", Known(allocations))
    assert [c.name for c in desired.containers] == ["test"]
    view = with_kept(desired)
    assert [c.name for c in view.containers] == ["test", "gone"]
    gone = view.containers[1]
    assert str(gone.ipv4) == "10.1.0.9" and str(gone.ipv6) == "2001:db8:151:7307:1::9"
    # the kept container's address is not handed to anyone else
    assert str(desired.container("test").ipv4) == "10.1.0.2"


def test_no_kept_containers_is_the_same_view():
    desired = load("examples/lab.yaml")
    assert with_kept(desired) is desired


# --- `apply --prune` leaves what a file without the pruned container would have -------

GONE = {"gone": {"ipv4": "10.1.0.9", "ipv6": "2001:db8:151:7307:1::9",
                 "mac_private": "52:54:00:00:00:09", "mac_public": "52:54:00:00:01:09"}}


def _hosts_lines(resources):
    from fjord.host.hosts_file import HostsBlock

    (hosts,) = [r for r in resources if isinstance(r, HostsBlock)]
    return hosts.lines


def test_prune_drops_the_pruned_containers_names_and_routes_in_the_same_apply(monkeypatch):
    from fjord.containers import rootfs
    from fjord.resources import all_resources

    monkeypatch.setattr(rootfs, "all_records", lambda base=None: [])
    desired = load("examples/lab.yaml", on(BOOKWORM, GONE))
    clean = load("examples/lab.yaml", on(BOOKWORM))
    kept = all_resources(desired)
    assert any("gone" in line for line in _hosts_lines(kept))
    pruned = all_resources(desired, prune=True)
    # the host's /etc/hosts block, and the network, as for a file that never had it
    assert _hosts_lines(pruned) == _hosts_lines(all_resources(clean))
    # ... and the orphan that destroys it, or frees its addresses when nothing else
    # of it is left (here: no record)
    assert sorted(r.id for r in pruned) == sorted(
        [*(r.id for r in all_resources(clean)), "container gone"])
    assert not [r for r in pruned if "1::9" in r.id]


def test_prune_customises_the_kept_containers_without_the_pruned_one():
    from fjord.containers import customize
    from fjord.containers.resources import after_prune
    from fjord.engine.resource import Context, Options

    desired = load("examples/lab.yaml", Known(GONE))
    test = desired.container("test")
    assert "gone" in customize.hosts(test, after_prune(Context(desired)))
    clean = customize.hosts(test, load("examples/lab.yaml"))
    assert customize.hosts(test, after_prune(Context(desired, options=Options(prune=True)))) \
        == clean


class Routes:
    """Netlink as far as the route cleanup asks it."""

    def __init__(self, *dsts: str) -> None:
        import socket

        from fjord.net.links import Route

        self.made = [Route(d, None, "br-int", socket.AF_INET6) for d in dsts]

    def link(self, name):
        return object()

    def routes(self, family, dev=None):
        return [r for r in self.made if dev is None or r.dev == dev]

    def delete_route(self, dst, dev):
        self.made = [r for r in self.made if (r.dst, r.dev) != (dst, dev)]

    def close(self):
        pass


def test_a_route_no_container_has_any_more_is_removed_from_the_internal_bridge():
    from fjord.engine.resource import Context
    from fjord.net import resources

    desired = load("examples/lab.yaml")  # routed IPv6: test has 1::1
    nl = Routes("2001:db8:151:7307:1::1/128", "2001:db8:151:7307:1::9/128",
                "2001:db8:ffff::1/128", "2001:db8:151:7307::/64")
    ctx = Context(desired)
    ctx.drivers["netlink"] = nl
    (cleanup,) = [r for r in resources.resources(desired) if r.kind == "route-cleanup"]
    (change,) = cleanup.changes(ctx)
    assert change.action == "delete" and "1::9/128" in change.detail
    change.run(ctx)
    assert cleanup.changes(ctx) == []
    # the container's own route, the gateway's /64, and routes outside the prefix stay
    assert [r.dst for r in nl.made] == ["2001:db8:151:7307:1::1/128",
                                        "2001:db8:ffff::1/128", "2001:db8:151:7307::/64"]
