"""Valid configurations of many shapes, generated from a seed (issue 15 item 2).

The lab tests drive examples/lab.yaml and a few variations of it; this module makes
configurations across the schema instead: the lab's three providers, IPv6 routed,
bridged or absent, both switch kinds, other address plans (public prefix and gateway,
private network, the /64 and its gateway), bridge and uplink names, 0 to 3 containers
of either suite with either root mode and run state, forwards, limits, resolvers
and the host's input firewall.

Every configuration is one that validation accepts and that the lab can simulate
(`generate` checks both, so a generator bug shows as such): public and private
networks away from the lab's far side (198.51.100.0/24, 2001:db8:ffff::/64), at least
one IPv4 resolver the lab's upstream serves, bridged IPv6 only with the `bridged`
provider (the others drop foreign MACs, as Hetzner does), a link-local gateway with
`routed`, proxy NDP wherever the /64 is on-link.

Reproducible: ``generate(seed)`` always gives the same configuration, and
``mutate(config, seed)`` the same day-2 change. The lab test prints the seed (and the
file) of a failing configuration; ``FJORD_CONFIG_SEED`` replays it.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

import yaml

from fjord.config.loader import Document
from fjord.config.validate import check
from fjord.lab.provider import ONLINK_GATEWAY, PROVIDERS
from fjord.lab.spec import from_host

IPV6_MODES = ("none", "routed", "bridged")
SWITCHES = ("ovs", "linux-bridge")
SUITES = ("bookworm", "trixie")

UPLINKS = ("eth0", "ens3", "enp1s0", "eno1", "eth1")
EXTERNAL = ("br-ex", "br0", "vmbr0", "ext", "br-public")
INTERNAL = ("br-int", "br1", "vmbr1", "int", "br-private")
NAMES = ("test", "web", "db", "mail", "app-1", "cache", "x")
DOCUMENTATION4 = (IPv4Network("192.0.2.0/24"), IPv4Network("203.0.113.0/24"))
FAR_NAME = "far.example.org"
FAR4, FAR6 = "198.51.100.10", "2001:db8:ffff::10"
DNS6 = "2001:db8:53::53"


def allowed(provider: str, ipv6: str) -> bool:
    """Whether the lab can simulate the combination: bridged IPv6 shows container MACs
    on the uplink, which the `routed` and `onlink` providers drop."""
    return ipv6 != "bridged" or provider == "bridged"


COMBINATIONS = tuple((p, v6, sw) for p in PROVIDERS for v6 in IPV6_MODES for sw in SWITCHES
                     if allowed(p, v6))


@dataclass
class Generated:
    seed: int
    provider: str                      # the lab's provider
    data: dict[str, Any]               # the configuration (ssh_keys added by the test)
    notes: list[str] = field(default_factory=list)

    @property
    def ipv6(self) -> str:
        v6 = self.data["host"].get("ipv6")
        return "none" if v6 is None else v6.get("mode", "routed")

    @property
    def switch(self) -> str:
        return str(self.data["host"]["switch"]["kind"])

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.provider, self.ipv6, self.switch)

    def text(self, ssh_key: str | None = None) -> str:
        data = copy.deepcopy(self.data)
        if ssh_key is not None:
            data.setdefault("defaults", {})["ssh_keys"] = [ssh_key]
        return yaml.safe_dump(data, sort_keys=False)

    def describe(self) -> str:
        host = self.data["host"]
        n = len(self.data.get("containers") or {})
        return (f"seed {self.seed}: provider {self.provider}, IPv6 {self.ipv6}, switch "
                f"{self.switch}, {host['ipv4']['address']}, private "
                f"{host['private']['address']}, {n} container{'s' * (n != 1)}")


def _pick_subnet(rng: random.Random, base: IPv4Network, prefix: int) -> IPv4Network:
    subnets = list(base.subnets(new_prefix=prefix))
    return rng.choice(subnets)


def _hosts(net: IPv4Network, first: int = 0, last: int = 64) -> list[str]:
    """Usable addresses of ``net``: ``first`` to ``last`` from the start (negative: from
    the end), without listing a /8's sixteen million."""
    size = net.num_addresses - 2 if net.prefixlen < 31 else net.num_addresses
    start = 1 if net.prefixlen < 31 else 0
    lo, hi = (first, last) if first >= 0 else (size + first, size + last if last < 0 else size)
    return [str(net.network_address + start + i) for i in range(max(lo, 0), min(hi, size))]


def _public4(rng: random.Random) -> tuple[dict[str, str], IPv4Network]:
    base = rng.choice(DOCUMENTATION4)
    net = _pick_subnet(rng, base, rng.choice((24, 25, 26, 27, 28, 29, 29, 30)))
    hosts = _hosts(net, 0, 256)
    gateway = rng.choice((hosts[0], hosts[-1]))
    address = rng.choice([h for h in hosts if h != gateway])
    return {"address": f"{address}/{net.prefixlen}", "gateway": gateway}, net


def _public4_onlink(rng: random.Random) -> tuple[dict[str, str], IPv4Network]:
    """Hetzner Cloud's shape: a /32, the gateway outside it (on-link)."""
    base, other = rng.sample(DOCUMENTATION4, 2)
    address = _hosts(base, 0, 256)[rng.randrange(1, 250)]
    gateway = _hosts(other, 0, 256)[rng.choice((0, 253))]
    return {"address": f"{address}/32", "gateway": gateway}, IPv4Network(f"{address}/32")


def _resolver4(rng: random.Random, public: IPv4Network) -> str:
    """An IPv4 resolver the lab's upstream serves: outside the server's networks."""
    while True:
        base = rng.choice(DOCUMENTATION4)
        address = _hosts(base, 0, 256)[rng.randrange(1, 250)]
        if ip_network(address).subnet_of(public):  # type: ignore[arg-type]
            continue
        return address


def _private(rng: random.Random) -> tuple[str, IPv4Network]:
    kind = rng.randrange(3)
    if kind == 0:
        prefix = rng.choice((8, 12, 16, 16, 20, 24))
        net = _pick_subnet(rng, IPv4Network(f"10.{rng.randrange(256)}.0.0/16"), max(prefix, 16)) \
            if prefix >= 16 else IPv4Network(f"10.0.0.0/{prefix}")
    elif kind == 1:
        net = _pick_subnet(rng, IPv4Network("172.16.0.0/12"), rng.choice((16, 20, 24)))
    else:
        net = _pick_subnet(rng, IPv4Network("192.168.0.0/16"), rng.choice((24, 24, 26, 28)))
    hosts = _hosts(net, 0, 50)
    address = hosts[0] if rng.random() < 0.7 else rng.choice(hosts)
    return f"{address}/{net.prefixlen}", net


def _ipv6(rng: random.Random, provider: str, mode: str) -> dict[str, Any]:
    while True:
        third, fourth = rng.randrange(1, 0xfff0), rng.randrange(0, 0x10000)
        if third not in (0x53, 0xffff):
            break
    prefix = IPv6Network(f"2001:db8:{third:x}:{fourth:x}::/64")
    iid = rng.choice((2, 2, 3, 0x10, 0xa5))
    address = prefix.network_address + iid
    v6: dict[str, Any] = {"address": f"{address}/64"}
    # The routed provider routes the /64 to the server's link-local address, so its
    # gateway is link-local too (lab/spec.py refuses anything else there).
    if provider not in ("routed", "hetzner-cloud") and rng.random() < 0.3:
        v6["gateway"] = str(prefix.network_address + 1)
    elif rng.random() < 0.5:
        v6["gateway"] = "fe80::1"
    if mode == "bridged" or rng.random() < 0.8:
        v6["mode"] = mode
    # Proxy NDP answers the router for container addresses: needed wherever the /64 is
    # on-link (bridged and onlink providers); the routed provider does without.
    if mode == "routed" and provider in ("routed", "hetzner-cloud") and rng.random() < 0.5:
        v6["proxy_ndp"] = False
    return v6


def generate(seed: int, provider: str | None = None, ipv6: str | None = None,
             switch: str | None = None, containers: tuple[int, int] = (0, 3)) -> Generated:
    """The configuration of ``seed``; ``provider``, ``ipv6`` and ``switch`` fix those axes,
    ``containers`` bounds the number of containers."""
    rng = random.Random(seed)
    provider = provider or rng.choice(PROVIDERS)
    ipv6 = ipv6 or rng.choice([m for m in IPV6_MODES if allowed(provider, m)])
    switch = switch or rng.choice(SWITCHES)
    if not allowed(provider, ipv6):
        raise ValueError(f"the lab cannot simulate IPv6 {ipv6} with provider {provider}")

    public4, net4 = _public4_onlink(rng) if provider in ONLINK_GATEWAY else _public4(rng)
    private, net_private = _private(rng)
    uplink = rng.choice(UPLINKS)
    external = rng.choice(EXTERNAL)
    internal = rng.choice([b for b in INTERNAL if b != external])
    sw: dict[str, Any] = {"kind": switch, "external": external, "internal": internal}
    if switch == "ovs":
        sw["datapath"] = "netdev"  # the lab has no openvswitch kernel module
    dns = [_resolver4(rng, net4)]
    if rng.random() < 0.3:
        dns.append(_resolver4(rng, net4))
    # once each, and never the gateway's own address (the lab's router holds it)
    dns = [d for i, d in enumerate(dns) if d not in dns[:i] and d != public4["gateway"]]
    if not dns:
        dns = [_resolver4(rng, net4)]
    host: dict[str, Any] = {
        "fqdn": f"{rng.choice(('oslo', 'bergen', 'tromso', 'h1'))}.example.net",
        # hetzner and ovh refuse bridged IPv6 (they filter MACs); generic takes anything
        "provider": "generic" if ipv6 == "bridged" else rng.choice(("generic", "hetzner", "ovh")),
        "uplink": uplink,
        "switch": sw,
        "ipv4": public4,
    }
    if ipv6 != "none":
        host["ipv6"] = _ipv6(rng, provider, ipv6)
        if rng.random() < 0.7:
            dns.append(DNS6)
    host["private"] = {"address": private}
    host["dns"] = dns
    if rng.random() < 0.3:
        host["ssh_port"] = rng.choice((2200, 22022))
    suite = rng.choice(SUITES)
    host["apt"] = {"suite": suite}
    check_targets = {"ipv4": FAR4, "name": FAR_NAME}
    if ipv6 != "none":
        check_targets["ipv6"] = FAR6
    host["check"] = check_targets

    defaults: dict[str, Any] = {"domain": rng.choice(("example.net", "example.org"))}
    if rng.random() < 0.5:
        defaults["memory"] = rng.choice(("256MiB", "512MiB", "384M"))
    if rng.random() < 0.3:
        defaults["suite"] = rng.choice(SUITES)
    specs: dict[str, Any] = {}
    for name in rng.sample(NAMES, rng.randint(*containers)):
        specs[name] = _container(rng, net_private, host, defaults, taken=specs)
    forwards = _forwards(rng, list(specs), host.get("ssh_port", 22))
    if forwards:
        host["forwards"] = forwards
    if rng.random() < 0.3:  # the host's own input firewall (drawn last: earlier draws keep)
        firewall: dict[str, Any] = {"tcp": rng.sample((80, 443, 8443), rng.randint(0, 2))}
        if rng.random() < 0.5:
            firewall["udp"] = [51820]
        host["firewall"] = firewall
    data = {"version": 1, "host": host, "defaults": defaults, "containers": specs}
    gen = Generated(seed, provider, data)
    validate(gen)
    return gen


def _container(rng: random.Random, net: IPv4Network, host: dict[str, Any],
               defaults: dict[str, Any], taken: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if rng.random() < 0.3:
        spec["suite"] = rng.choice(SUITES)
    # the file's suite, else trixie: a new container does not follow host.apt.suite
    suite = spec.get("suite") or defaults.get("suite") or "trixie"
    if rng.random() < 0.3:
        used = {c.get("ipv4") for c in taken.values()} | {host_ip(host)}
        spec["ipv4"] = rng.choice([a for a in _hosts(net, -40, 0) if a not in used])
    if rng.random() < 0.3:
        spec["rootfs"] = rng.choice(("overlay", "copy"))
    if rng.random() < 0.25:
        spec["state"] = rng.choice(("running", "stopped"))
    if rng.random() < 0.4:
        spec["memory"] = rng.choice(("128MiB", "256MiB", "640MiB", "1GiB"))
    if rng.random() < 0.3:
        spec["vcpus"] = rng.choice((1, 2))
    if rng.random() < 0.3:
        spec["cpu_shares"] = rng.choice((256, 512, 2048))
    if suite == "trixie" and rng.random() < 0.2:
        # the Puppet agent's image is cached for trixie (examples/lab.yaml's)
        spec["puppet"] = {"server": "tromso.example.net"}
    return spec


def host_ip(host: dict[str, Any]) -> str:
    return str(host["private"]["address"]).split("/")[0]


def _forwards(rng: random.Random, names: list[str], ssh_port: int) -> list[dict[str, Any]]:
    forwards: list[dict[str, Any]] = []
    if not names:
        return forwards
    used: set[tuple[str, int]] = set()
    for _ in range(rng.randint(0, 2)):
        protocol = rng.choice(("tcp", "tcp", "udp"))
        port = rng.choice((80, 443, 2222, 8080, 5353, 60000))
        if (protocol, port) in used or (protocol == "tcp" and port == ssh_port):
            continue
        used.add((protocol, port))
        fwd: dict[str, Any] = {"protocol": protocol, "port": port, "container": rng.choice(names)}
        # `fjord check` connects to a TCP forward: its target must listen, and sshd is
        # what a fresh container runs (UDP forwards are not checked)
        if protocol == "tcp":
            fwd["to_port"] = 22
        elif rng.random() < 0.5:
            fwd["to_port"] = rng.choice((53, 5353, 8000))
        forwards.append(fwd)
    return forwards


def validate(gen: Generated) -> None:
    """Raise if validation or the lab refuses the configuration (a generator bug)."""
    config = check(Document(copy.deepcopy(gen.data), "generated.yaml"))
    from_host("generated", config.host, gen.provider)


# --- day-2 changes -------------------------------------------------------------------------

MUTATIONS = ("add container", "remove container", "limits", "forwards", "dns")


@dataclass
class Mutation:
    kind: str
    data: dict[str, Any]
    prune: bool = False
    detail: str = ""


def mutate(gen: Generated, seed: int) -> Mutation:
    """One random day-2 change of ``gen`` (reproducible from ``seed``)."""
    rng = random.Random(seed)
    data = copy.deepcopy(gen.data)
    containers: dict[str, Any] = data["containers"]
    host = data["host"]
    kinds = ["add container", "dns"]
    if containers:
        kinds += ["remove container", "limits", "forwards"]
    kind = rng.choice(kinds)
    detail = ""
    if kind == "add container":
        free = [n for n in NAMES if n not in containers]
        name = rng.choice(free)
        containers[name] = {}
        detail = f"add {name}"
    elif kind == "remove container":
        name = rng.choice(sorted(containers))
        del containers[name]
        kept = [f for f in host.get("forwards", []) if f["container"] != name]
        host.pop("forwards", None)
        if kept:
            host["forwards"] = kept
        detail = f"remove {name}"
    elif kind == "limits":
        name = rng.choice(sorted(containers))
        spec = containers[name]
        what = rng.choice(("memory", "vcpus", "cpu_shares"))
        spec[what] = {"memory": rng.choice([m for m in ("192MiB", "768MiB")
                                            if m != spec.get("memory")]),
                      "vcpus": 2 if spec.get("vcpus", 1) == 1 else 1,
                      "cpu_shares": rng.choice((128, 4096))}[what]
        detail = f"{name}.{what} = {spec[what]}"
    elif kind == "forwards":
        forwards = host.get("forwards", [])
        ssh = host.get("ssh_port", 22)
        if forwards and rng.random() < 0.5:
            gone = forwards.pop(rng.randrange(len(forwards)))
            detail = f"drop forward {gone['protocol']}/{gone['port']}"
        else:
            taken = {(f["protocol"], f["port"]) for f in forwards}
            port = rng.choice([p for p in (8443, 9000, 10022) if ("tcp", p) not in taken
                               and p != ssh])
            forwards.append({"protocol": "tcp", "port": port,
                             "container": rng.choice(sorted(containers)), "to_port": 22})
            detail = f"forward tcp/{port}"
        host.pop("forwards", None)
        if forwards:
            host["forwards"] = forwards
    else:
        dns: list[str] = host["dns"]
        net4 = IPv4Network(host["ipv4"]["address"], strict=False)
        if len(dns) > 1 and rng.random() < 0.5:
            # the first IPv4 resolver stays first (containers without IPv6 use it)
            dns.pop()
        else:
            extra = _resolver4(rng, net4)
            while extra in dns:
                extra = _resolver4(rng, net4)
            dns.insert(1, extra)
        detail = f"dns = {dns}"
    mutated = Generated(gen.seed, gen.provider, data)
    validate(mutated)
    return Mutation(kind, data, prune=kind == "remove container", detail=detail)
