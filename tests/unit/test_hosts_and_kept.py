"""The /etc/hosts block and the network's view of containers kept until --prune."""

from __future__ import annotations

from fjord.config.desired import load, with_kept
from fjord.host.hosts_file import BEGIN, END, block, merge


def test_hosts_block_is_added_replaced_and_removed_leaving_the_rest():
    desired = load("examples/lab.yaml", allocations={})
    mine = "127.0.0.1\tlocalhost\n192.0.2.9\tprinter\n"
    once = merge(mine, block(desired))
    assert once.startswith(mine.rstrip("\n"))
    assert f"{BEGIN}\n10.1.0.2\ttest.example.net test\n" in once and once.endswith(END + "\n")
    assert merge(once, block(desired)) == once
    assert merge(once, []) == mine


def test_kept_containers_keep_their_addresses_in_the_network_view():
    allocations = {"gone": {"ipv4": "10.1.0.9", "ipv6": "2001:db8:151:7307:1::9",
                            "mac_private": "52:54:00:00:00:09"}}
    desired = load("examples/lab.yaml", allocations=allocations)
    assert [c.name for c in desired.containers] == ["test"]
    view = with_kept(desired)
    assert [c.name for c in view.containers] == ["test", "gone"]
    gone = view.containers[1]
    assert str(gone.ipv4) == "10.1.0.9" and str(gone.ipv6) == "2001:db8:151:7307:1::9"
    # the kept container's address is not handed to anyone else
    assert str(desired.container("test").ipv4) == "10.1.0.2"


def test_no_kept_containers_is_the_same_view():
    desired = load("examples/lab.yaml", allocations={})
    assert with_kept(desired) is desired
