"""The desired state: defaults merged into containers, addresses and MACs allocated and
kept (from what the state layer read), allocations persisted by a change of the plan."""

from __future__ import annotations

import json
import os
import re
from ipaddress import IPv4Address, IPv6Address

import pytest
from hosts import BOOKWORM

from fjord.config import desired
from fjord.config.desired import Desired, HostRelease, Known, load, resolve
from fjord.config.loader import parse
from fjord.config.models import Puppet
from fjord.config.problems import ConfigError
from fjord.config.validate import check
from fjord.containers.allocations import Allocations
from fjord.state import allocations as state
from fjord.state import known
from fjord.state.allocations import forget

read_allocations = state.read


def save_allocations(d: Desired) -> bool:
    """Plan and apply the allocations resource alone; True when it changed the file."""
    resource = Allocations(d.allocations)
    changes = resource.changes(None)  # type: ignore[arg-type]
    for change in changes:
        change.run(None)  # type: ignore[arg-type]
    assert resource.changes(None) == []  # type: ignore[arg-type]
    return bool(changes)

HOST = """\
host:
  fqdn: oslo.example.net
  ipv4: {address: 192.0.2.5/27, gateway: 192.0.2.1}
  ipv6: {address: 2001:db8:151:7307::2/64}
  dns: [192.0.2.53]
  capacity: {memory: 64GiB, cpus: 16}
"""

MAC = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


def make(containers: str, allocations: dict | None = None, host: str = HOST,
         defaults: str = "", built: dict | None = None,
         release: HostRelease | None = BOOKWORM) -> Desired:
    text = host + defaults + "containers:\n" + containers
    doc = parse(text)
    return resolve(doc, check(doc), Known({} if allocations is None else allocations,
                                          {} if built is None else built, release))


def names(*items: str) -> str:
    return "".join(f"  {n}: {{}}\n" for n in items)


# --- defaults -----------------------------------------------------------------------------


def test_a_new_container_is_trixie_whatever_the_hosts_suite():
    host = HOST + "  apt: {suite: bookworm}\n"
    assert make(names("web"), host=host).container("web").suite == "trixie"


def test_an_existing_container_keeps_the_suite_it_was_built_from():
    # its record says bookworm and the file names no suite: the moved default is no drift
    d = make(names("old", "new"), built={"old": "bookworm"})
    old, new = d.container("old"), d.container("new")
    assert (old.suite, old.suite_kept) == ("bookworm", "bookworm")
    assert (new.suite, new.suite_kept) == ("trixie", None)


@pytest.mark.parametrize("where", ["container", "defaults"])
def test_a_suite_named_in_the_file_wins_over_the_record(where: str):
    if where == "container":
        d = make("  old: {suite: trixie}\n", built={"old": "bookworm"})
    else:
        d = make(names("old"), built={"old": "bookworm"}, defaults="defaults: {suite: trixie}\n")
    assert (d.container("old").suite, d.container("old").suite_kept) == ("trixie", None)


def test_built_suites_come_from_the_records(state_dir):
    for name, image in [("old", "bookworm-amd64-0123456789abcdef"),
                        ("new", "trixie-amd64-0123456789abcdef"),
                        ("lost", ""), ("odd", "gentoo-amd64-0123456789abcdef")]:
        (state_dir / "containers" / name).mkdir(parents=True)
        (state_dir / "containers" / name / "container.json").write_text(json.dumps(
            {"name": name, "mode": "overlay", "image": image, "lower": "", "created": 0}))
    (state_dir / "containers" / "corrupt").mkdir()
    (state_dir / "containers" / "corrupt" / "container.json").write_text("{")
    assert known.built_suites() == {"old": "bookworm", "new": "trixie"}
    doc = parse(HOST + "containers:\n" + names("old", "new", "lost", "fresh"))
    d = resolve(doc, check(doc), known.known())
    assert [c.suite for c in d.containers] == ["trixie", "trixie", "trixie", "bookworm"]


def test_built_in_defaults():
    c = make(names("web")).container("web")
    assert c.fqdn == "web.example.net"          # the host's domain
    assert c.suite == "trixie"                  # a new container: the current stable
    assert c.suite_kept is None
    assert (c.memory, c.vcpus, c.cpu_shares) == (512 << 20, 1, 1024)
    assert (c.packages, c.ssh_keys, c.puppet) == ((), (), None)
    assert (c.autostart, c.rootfs, c.locale) == (True, "overlay", "C.UTF-8")


def test_defaults_section_applies_and_the_container_value_replaces_it():
    d = make(
        "  plain: {}\n"
        "  own:\n"
        "    domain: other.org\n"
        "    packages: [nginx]\n"
        "    memory: 2G\n"
        "    puppet: {server: p2.example.net}\n"
        "    autostart: false\n"
        "    rootfs: copy\n",
        defaults="defaults:\n  domain: lan.example.net\n  packages: [curl, less]\n"
                 "  memory: 1G\n  vcpus: 2\n  puppet: {server: p1.example.net, enable: true}\n"
                 "  suite: trixie\n",
    )
    plain, own = d.container("plain"), d.container("own")
    assert plain.fqdn == "plain.lan.example.net"
    assert plain.packages == ("curl", "less")
    assert plain.memory == 1 << 30 and plain.vcpus == 2 and plain.suite == "trixie"
    assert plain.puppet == Puppet(server="p1.example.net", enable=True)
    # replaced, not merged: the lists and the puppet mapping are the container's own
    assert own.fqdn == "own.other.org"
    assert own.packages == ("nginx",)
    assert own.memory == 2 << 30 and own.vcpus == 2
    assert own.puppet == Puppet(server="p2.example.net", enable=False)
    assert (own.autostart, own.rootfs) == (False, "copy")


def test_an_empty_list_in_a_container_replaces_the_default_list():
    d = make("  bare: {packages: []}\n", defaults="defaults:\n  packages: [curl]\n")
    assert d.container("bare").packages == ()


def test_false_in_a_container_is_not_mistaken_for_unset():
    d = make("  manual: {autostart: false}\n", defaults="defaults:\n  autostart: true\n")
    assert d.container("manual").autostart is False


def test_the_host_suite_is_the_default_suite():
    host = HOST + "  apt: {suite: trixie}\n"
    assert make(names("web"), host=host).container("web").suite == "trixie"


def test_desired_container_lookup():
    d = make(names("b", "a"))
    assert [c.name for c in d.containers] == ["a", "b"]
    with pytest.raises(KeyError):
        d.container("c")


# --- allocation -----------------------------------------------------------------------------


def addresses(d: Desired) -> dict[str, tuple]:
    return {c.name: (str(c.ipv4), str(c.ipv6), c.mac_private, c.mac_public)
            for c in d.containers}


def test_explicit_values_are_respected_and_never_given_to_others():
    d = make("  a: {}\n  b: {ipv4: 10.1.0.2, ipv6: '2001:db8:151:7307:1::1',"
             " mac: {private: '52:54:00:00:00:01'}}\n  c: {}\n")
    b = d.container("b")
    assert (str(b.ipv4), str(b.ipv6), b.mac_private) == (
        "10.1.0.2", "2001:db8:151:7307:1::1", "52:54:00:00:00:01")
    assert str(d.container("a").ipv4) == "10.1.0.3"
    assert str(d.container("c").ipv4) == "10.1.0.4"
    assert str(d.container("a").ipv6) == "2001:db8:151:7307:1::2"


def test_ipv6_starts_at_prefix_1_colon_colon_1_like_the_original():
    d = make(names("a", "b"))
    assert d.container("a").ipv6 == IPv6Address("2001:db8:151:7307:1::1")
    assert d.container("b").ipv6 == IPv6Address("2001:db8:151:7307:1::2")
    assert d.container("a").ipv4 == IPv4Address("10.1.0.2")  # 10.1.0.1 is the host


def test_ipv6_allocation_skips_a_gateway_in_the_range():
    host = HOST.replace("ipv6: {address: 2001:db8:151:7307::2/64}",
                        "ipv6: {address: 2001:db8:151:7307::2/64, gateway: "
                        "'2001:db8:151:7307:1::1'}")
    assert str(make(names("a"), host=host).container("a").ipv6) == "2001:db8:151:7307:1::2"


def test_automatic_values_are_unique_and_well_formed():
    d = make(names(*(f"c{i}" for i in range(200))))
    seen = [v for values in addresses(d).values() for v in values]
    assert len(seen) == len(set(seen)) == 800
    for c in d.containers:
        assert MAC.match(c.mac_private) and c.mac_public and MAC.match(c.mac_public)
    assert {str(c.ipv4) for c in d.containers} == {str(IPv4Address("10.1.0.2") + i)
                                                   for i in range(200)}


def test_ipv4_only_host_has_no_public_values():
    host = HOST.replace("  ipv6: {address: 2001:db8:151:7307::2/64}\n", "")
    d = make(names("a"), host=host)
    c = d.container("a")
    assert c.ipv6 is None and c.mac_public is None
    assert set(d.allocations["a"]) == {"ipv4", "mac_private"}


def test_macs_do_not_depend_on_other_containers_or_on_memory():
    alone = make(names("web")).container("web")
    crowd = make(names("a", "b", "web", "z")).container("web")
    assert (alone.mac_private, alone.mac_public) == (crowd.mac_private, crowd.mac_public)
    other_host = make(names("web"), host=HOST.replace("oslo.", "bergen.")).container("web")
    assert other_host.mac_private != alone.mac_private


def test_stable_across_runs_with_the_remembered_allocations():
    first = make(names("a", "b", "c"))
    again = make(names("a", "b", "c"), first.allocations)
    assert addresses(again) == addresses(first)
    assert again.allocations == first.allocations


def test_adding_a_container_that_sorts_first_moves_nobody():
    first = make(names("m", "z"))
    second = make(names("a", "m", "z"), first.allocations)
    for name in ("m", "z"):
        assert addresses(second)[name] == addresses(first)[name]
    assert str(second.container("a").ipv4) == "10.1.0.4"   # the lowest free one


def test_a_removed_container_keeps_its_addresses_until_forgotten(state_dir):
    first = make(names("a", "b", "c"))
    without_b = make(names("a", "c"), first.allocations)
    assert without_b.allocations["b"] == first.allocations["b"]    # kept, not pruned
    newcomer = make(names("a", "c", "d"), without_b.allocations).container("d")
    assert str(newcomer.ipv4) not in first.allocations["b"].values()
    assert str(newcomer.ipv4) == "10.1.0.5"
    # once forgotten (after destroy), its addresses are free again
    save_allocations(without_b)
    forget(["b"])
    assert "b" not in read_allocations()
    reused = make(names("a", "c", "d"), read_allocations()).container("d")
    assert str(reused.ipv4) == first.allocations["b"]["ipv4"]


def test_remembered_values_outside_the_new_networks_are_reallocated():
    first = make(names("a"))
    moved = HOST.replace("capacity:", "private: {address: 172.16.0.1/24}\n  capacity:")
    second = make(names("a"), first.allocations, host=moved)
    assert str(second.container("a").ipv4) == "172.16.0.2"
    assert second.container("a").mac_private == first.container("a").mac_private


def test_an_explicit_value_wins_over_a_remembered_one():
    first = make(names("a", "b"))
    taken = str(first.container("a").ipv4)
    second = make(f"  a: {{}}\n  b: {{ipv4: {taken}}}\n", first.allocations)
    assert str(second.container("b").ipv4) == taken
    assert second.container("a").ipv4 != second.container("b").ipv4


@pytest.mark.parametrize("damaged", [
    {"a": {"ipv4": "not an address", "mac_private": "zz", "ipv6": 5}},
    {"a": "nonsense"},
    {"a": {"ipv4": "10.1.0.0"}},                     # the network address
    {"a": {"mac_private": "01:00:5e:00:00:01"}},      # multicast
])
def test_damaged_remembered_values_are_ignored(damaged):
    c = make(names("a"), damaged).container("a")
    assert str(c.ipv4) == "10.1.0.2" and MAC.match(c.mac_private)


def test_two_containers_remembering_the_same_address():
    d = make(names("a", "b"), {"a": {"ipv4": "10.1.0.7"}, "b": {"ipv4": "10.1.0.7"}})
    assert str(d.container("a").ipv4) == "10.1.0.7"
    assert str(d.container("b").ipv4) == "10.1.0.2"


def test_exhausted_private_network_is_a_config_error():
    host = HOST.replace("capacity:", "private: {address: 10.1.0.1/30}\n  capacity:")
    assert str(make(names("a"), host=host).container("a").ipv4) == "10.1.0.2"
    with pytest.raises(ConfigError) as exc:
        make(names("a", "b"), host=host)
    assert str(exc.value).startswith("containers.b: no free IPv4 address left in 10.1.0.0/30")


def test_allocation_of_many_containers_is_linear(monkeypatch):
    # Every new address is one string conversion: none is tried twice.
    calls = 0
    real = desired.IPv4Address

    def counting(value):
        nonlocal calls
        calls += 1
        return real(value)

    monkeypatch.setattr(desired, "IPv4Address", counting)
    make(names(*(f"c{i}" for i in range(300))))
    assert calls < 2 * 300 + 10


# --- persistence --------------------------------------------------------------------------


def test_save_allocations_writes_once_and_reads_back(state_dir):
    d = make(names("a", "b"))
    assert read_allocations() == {}
    assert save_allocations(d) is True
    assert save_allocations(d) is False                  # unchanged: not rewritten
    data = json.loads((state_dir / "allocations.json").read_text())
    assert data == {"version": 1, "containers": d.allocations}
    assert read_allocations() == d.allocations
    assert [p.name for p in state_dir.iterdir()] == ["allocations.json"]  # no temp file left


def test_the_state_layer_gives_the_remembered_allocations(state_dir, tmp_path):
    first = make(names("m"))
    save_allocations(first)
    doc = parse(HOST + "containers:\n" + names("a", "m"))
    again = resolve(doc, check(doc), known.known())
    assert again.container("m").ipv4 == first.container("m").ipv4
    f = tmp_path / "fjord.yaml"
    f.write_text(HOST + "containers:\n" + names("a", "m"))
    assert known.load(str(f)).container("m").ipv4 == first.container("m").ipv4
    # the configuration layer alone reads the file only: a fresh server's addresses
    assert str(resolve(doc, check(doc)).container("m").ipv4) == "10.1.0.3"


def test_recording_the_allocations_is_a_change_of_the_plan(state_dir):
    """A new container's addresses: `+ record the addresses of …` (the file is new), once;
    another: an update naming it; the plan writes nothing, its change does."""
    # nothing handed out, nothing to record: no file
    assert Allocations({}).changes(None) == []  # type: ignore[arg-type]
    d = make(names("a", "b"))
    (change,) = Allocations(d.allocations).changes(None)  # type: ignore[arg-type]
    assert change.action == "create"
    assert change.headline == f"record the addresses of a, b in {state.path()}"
    assert not state_dir.exists()
    change.run(None)  # type: ignore[arg-type]
    assert Allocations(d.allocations).changes(None) == []  # type: ignore[arg-type]
    more = make(names("a", "b", "c"), read_allocations())
    (change,) = Allocations(more.allocations).changes(None)  # type: ignore[arg-type]
    assert (change.action, change.detail) == (
        "update", f"record the addresses of c in {state.path()}")


def test_the_catalogue_records_the_allocations_before_any_container_is_made(state_dir):
    from fjord.engine.order import order
    from fjord.resources import all_resources

    d = make(names("a"))
    ids = [r.id for r in order(all_resources(d))]
    where = ids.index(f"allocations {state.path()}")
    assert where < ids.index("rootfs a") < ids.index("domain a") < ids.index("container a")
    only = [r.id for r in all_resources(d, frozenset({"containers"}), prune=True)]
    assert f"allocations {state.path()}" in only


def test_save_is_atomic(state_dir, monkeypatch):
    first = make(names("a"))
    save_allocations(first)
    before = (state_dir / "allocations.json").read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        state.write(make(names("a", "b")).allocations)
    assert (state_dir / "allocations.json").read_bytes() == before
    assert [p.name for p in state_dir.iterdir()] == ["allocations.json"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"", b"\x00\xff",
                                     b'{"containers": [1]}', b'{"containers": "x"}'])
def test_corrupt_state_file_is_detected_and_rebuilt(state_dir, content):
    state_dir.mkdir()
    (state_dir / "allocations.json").write_bytes(content)
    assert read_allocations() == {}
    d = load_text(names("a"))
    assert save_allocations(d) is True
    assert read_allocations() == d.allocations
    assert json.loads((state_dir / "allocations.json").read_text())["version"] == 1
    try:
        json.loads(content)
    except ValueError:   # unreadable JSON is kept aside for inspection
        assert (state_dir / "allocations.json.corrupt").read_bytes() == content


def test_a_lost_allocations_file_is_rebuilt_from_the_containers_records(state_dir):
    """Each existing container's record keeps its addresses: a lost or corrupt
    allocations.json gives them back, a kept container (out of the file) included, and a
    newcomer gets none of them."""
    first = make(names("a", "b", "web"), {"web": {"ipv4": "10.1.0.50"}})
    for c in first.containers:
        record = state_dir / "containers" / c.name / "container.json"
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"name": c.name, "mode": "overlay", "image": "k",
                                      "lower": "/l", "created": 1.0,
                                      "addresses": first.allocations[c.name]}))
    (state_dir / "allocations.json").write_bytes(b"{garbage")
    assert read_allocations() == first.allocations
    later = load_text(names("a", "web", "z"))       # b kept (out of the file), z new
    assert later.allocations["b"] == first.allocations["b"]
    assert later.container("web").ipv4 == first.container("web").ipv4
    assert str(later.container("web").ipv4) == "10.1.0.50"
    taken = {v for n in ("a", "b", "web") for v in first.allocations[n].values()}
    assert not set(later.allocations["z"].values()) & taken


def load_text(containers: str):
    doc = parse(HOST + "containers:\n" + containers)
    return resolve(doc, check(doc), known.known())


def test_load_reads_checks_and_resolves(tmp_path, state_dir):
    f = tmp_path / "fjord.yaml"
    f.write_text(HOST + "containers:\n" + names("web"))
    d = load(str(f))
    assert d.filename == str(f)
    assert d.container("web").fqdn == "web.example.net"
    assert not state_dir.exists()     # loading never writes


def test_moving_the_default_builds_no_image_for_an_existing_container(state_dir):
    """examples/lab.yaml names no suite: its container `test`, made from a bookworm image,
    still asks for that image (no build, no replacement); the plan's note says why."""
    from fjord.containers.image import spec_for
    from fjord.containers.resources import ImageResource, RootResource, resources

    (state_dir / "containers" / "test").mkdir(parents=True)
    (state_dir / "containers" / "test" / "container.json").write_text(json.dumps(
        {"name": "test", "mode": "overlay", "image": "bookworm-amd64-0123456789abcdef",
         "lower": "", "created": 0}))
    d = known.load("examples/lab.yaml")
    assert spec_for(d.container("test"), d).suite == "bookworm"
    found = resources(d)
    assert [r.spec.suite for r in found if isinstance(r, ImageResource)] == ["bookworm"]
    (root,) = [r for r in found if isinstance(r, RootResource)]
    note = root.unchanged_reason(None)  # type: ignore[arg-type]
    assert "stays on bookworm" in note and "fjord container destroy test" in note
    # without the record (a new server, or the configuration layer alone), trixie
    fresh = load("examples/lab.yaml")
    assert spec_for(fresh.container("test"), fresh).suite == "trixie"
