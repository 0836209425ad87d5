"""A container as a libvirt LXC domain: a small model, rendered to XML with ElementTree
in a fixed order, and read back from what libvirt returns (``virDomainGetXMLDesc``, as
``virsh dumpxml`` prints it) so that the two can be compared field by field.

Only what fjord declares is modelled; what libvirt adds (emulator, seclabel, aliases,
resource partition, PCI-less device addresses) is ignored by the comparison.
"""

from __future__ import annotations

import difflib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from fjord.containers.limits import INIT_PATH, LXCFS_DIR, LXCFS_TARGET
from fjord.containers.sandbox import LIBVIRT_OFF
from fjord.errors import FjordError

if TYPE_CHECKING:
    from fjord.config.desired import Container, Desired

# Stable UUIDs: the same host and container name give the same UUID on every apply,
# and nothing needs recording. (A domain that already exists keeps its own: pass it.)
UUID_NAMESPACE = uuid.UUID("5b6f1c7e-2a4d-4b8e-9c0f-6a1d3e5f7b92")
# fjord-init: gives the container a cgroup namespace rooted in its own cgroup, then
# becomes /sbin/init (fjord.containers.limits; customisation writes it).
INIT = INIT_PATH
IDMAP_COUNT = 65536
_UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20,
          "mib": 1 << 20, "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
          "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


def container_uuid(host_fqdn: str, name: str) -> uuid.UUID:
    return uuid.uuid5(UUID_NAMESPACE, f"{host_fqdn}/{name}")


@dataclass(frozen=True)
class Interface:
    """A veth whose host end is a port of ``bridge`` and whose inner end is ``guest``."""

    guest: str          # eth0, eth1 inside the container
    bridge: str
    mac: str
    openvswitch: bool   # an OVS port (virtualport type='openvswitch') or a Linux bridge port

    def describe(self) -> str:
        kind = "Open vSwitch" if self.openvswitch else "Linux bridge"
        return f"{self.guest} on {kind} {self.bridge}, MAC {self.mac}"


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    memory: int                         # bytes (libvirt's memory cgroup limit)
    vcpus: int
    cpu_shares: int
    root: str                           # host directory mounted as the container's /
    interfaces: tuple[Interface, ...] = ()
    init: str = INIT
    console: bool = True
    # capabilities libvirt turns off (its names, sorted): fjord.containers.sandbox
    caps_off: tuple[str, ...] = tuple(sorted(LIBVIRT_OFF))
    # Unprivileged: the container's ids 0..65535 are the host's idmap..idmap+65535 (a user
    # namespace of its own); None: privileged (no user namespace).
    idmap: int | None = None
    # The host's lxcfs mount, mounted read-only at LXCFS_TARGET in the container, where
    # fjord-init binds its files over /proc (limit-aware free, top, uptime); None: none.
    lxcfs: str | None = LXCFS_DIR

    # --- XML ------------------------------------------------------------------------

    def element(self) -> ET.Element:
        dom = ET.Element("domain", type="lxc")
        ET.SubElement(dom, "name").text = self.name
        ET.SubElement(dom, "uuid").text = self.uuid
        ET.SubElement(dom, "memory", unit="KiB").text = str(self.memory // 1024)
        ET.SubElement(dom, "vcpu").text = str(self.vcpus)
        tune = ET.SubElement(dom, "cputune")
        ET.SubElement(tune, "shares").text = str(self.cpu_shares)
        os_ = ET.SubElement(dom, "os")
        ET.SubElement(os_, "type").text = "exe"
        ET.SubElement(os_, "init").text = self.init
        if self.caps_off:
            features = ET.SubElement(dom, "features")
            caps = ET.SubElement(features, "capabilities", policy="default")
            for name in self.caps_off:
                ET.SubElement(caps, name, state="off")
        if self.idmap is not None:
            idmap = ET.SubElement(dom, "idmap")
            for kind in ("uid", "gid"):
                ET.SubElement(idmap, kind, start="0", target=str(self.idmap),
                              count=str(IDMAP_COUNT))
        devices = ET.SubElement(dom, "devices")
        fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="passthrough")
        ET.SubElement(fs, "source", dir=self.root)
        ET.SubElement(fs, "target", dir="/")
        if self.lxcfs is not None:
            fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="passthrough")
            ET.SubElement(fs, "source", dir=self.lxcfs)
            ET.SubElement(fs, "target", dir=LXCFS_TARGET)
            ET.SubElement(fs, "readonly")
        for iface in self.interfaces:
            el = ET.SubElement(devices, "interface", type="bridge")
            ET.SubElement(el, "mac", address=iface.mac)
            ET.SubElement(el, "source", bridge=iface.bridge)
            if iface.openvswitch:
                ET.SubElement(el, "virtualport", type="openvswitch")
            ET.SubElement(el, "guest", dev=iface.guest)
        if self.console:
            console = ET.SubElement(devices, "console", type="pty")
            ET.SubElement(console, "target", type="lxc", port="0")
        return dom

    def xml(self) -> str:
        dom = self.element()
        ET.indent(dom, space="  ")
        return ET.tostring(dom, encoding="unicode") + "\n"

    @classmethod
    def parse(cls, text: str) -> Domain:
        """Read a domain's XML as libvirt returns it (extra elements are ignored)."""
        try:
            dom = ET.fromstring(text)
        except ET.ParseError as exc:
            raise FjordError(f"libvirt returned XML fjord cannot parse: {exc}") from exc
        if dom.tag != "domain" or dom.get("type") != "lxc":
            raise FjordError(f"not an LXC domain: <{dom.tag} type={dom.get('type')!r}>")
        root = ""
        lxcfs = None
        for fs in dom.iterfind("devices/filesystem"):
            if fs.get("type", "mount") == "mount" and _attr(fs, "target", "dir") == "/":
                root = _attr(fs, "source", "dir")
            if (fs.get("type", "mount") == "mount"
                    and _attr(fs, "target", "dir") == LXCFS_TARGET):
                lxcfs = _attr(fs, "source", "dir")
        interfaces = []
        for n, el in enumerate(dom.iterfind("devices/interface")):
            virtualport = el.find("virtualport")
            interfaces.append(Interface(
                guest=_attr(el, "guest", "dev") or f"eth{n}",
                bridge=_attr(el, "source", "bridge") or _attr(el, "source", "network"),
                mac=_attr(el, "mac", "address").lower(),
                openvswitch=virtualport is not None
                and virtualport.get("type") == "openvswitch",
            ))
        return cls(
            name=_text(dom, "name"),
            uuid=_text(dom, "uuid"),
            # the limit in force: a running domain lowered live keeps its boot-time
            # <memory> (the maximum) and shows the new limit as <currentMemory>
            memory=_bytes(dom.find("currentMemory") if dom.find("currentMemory") is not None
                          else dom.find("memory")),
            vcpus=int(_text(dom, "vcpu") or 1),
            cpu_shares=int(_text(dom, "cputune/shares") or 1024),
            root=root,
            interfaces=tuple(interfaces),
            init=_text(dom, "os/init"),
            console=dom.find("devices/console") is not None,
            caps_off=_caps_off(dom),
            idmap=_idmap(dom),
            lxcfs=lxcfs,
        )


def _caps_off(dom: ET.Element) -> tuple[str, ...]:
    """The capabilities a domain turns off (policy 'default' or 'allow' and state
    'off'); a 'deny' policy is read as nothing turned off, which fjord redefines."""
    caps = dom.find("features/capabilities")
    if caps is None or caps.get("policy", "default") == "deny":
        return ()
    return tuple(sorted(el.tag for el in caps if el.get("state") == "off"))


def _idmap(dom: ET.Element) -> int | None:
    """The first host id of a domain's idmap when it maps uids and gids as fjord does
    (0..65535 to one range); anything else is shown as -1, which differs from both."""
    maps = [(el.tag, el.get("start"), el.get("target"), el.get("count"))
            for el in dom.iterfind("idmap/*")]
    if not maps:
        return None
    targets = {t for _, _, t, _ in maps}
    if (sorted(tag for tag, *_ in maps) != ["gid", "uid"] or len(targets) != 1
            or any(s != "0" or c != str(IDMAP_COUNT) for _, s, _, c in maps)):
        return -1
    target = targets.pop()
    return int(target) if target and target.isdigit() else -1


def _text(el: ET.Element, path: str) -> str:
    found = el.find(path)
    return (found.text or "").strip() if found is not None else ""


def _attr(el: ET.Element, path: str, name: str) -> str:
    found = el.find(path)
    return found.get(name, "") if found is not None else ""


def _bytes(el: ET.Element | None) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    unit = el.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise FjordError(f"unknown memory unit in domain XML: {unit}")
    return int(el.text or 0) * _UNITS[unit]


def domain_for(container: Container, desired: Desired, root: Path,
               uuid_: str | None = None, idmap: int | None = None) -> Domain:
    """The domain a container should be. ``uuid_``: the existing domain's, when there is
    one (libvirt refuses to redefine a name with another UUID). ``idmap``: the range its
    root was made for (its record's), None when privileged."""
    host = desired.host
    ovs = host.switch.kind == "ovs"
    interfaces = [Interface("eth0", host.switch.internal, container.mac_private, ovs)]
    bridged = host.ipv6 is not None and host.ipv6.effective_mode == "bridged"
    # Routed IPv6 travels over eth0 (see customize.network_for): no port on the uplink's
    # bridge, so the container's MAC never reaches the provider.
    if bridged and container.ipv6 is not None and container.mac_public is not None:
        interfaces.append(Interface("eth1", host.switch.external, container.mac_public, ovs))
    return Domain(
        name=container.name,
        uuid=uuid_ or str(container_uuid(host.fqdn, container.name)),
        memory=-(-container.memory // 1024) * 1024,  # libvirt counts KiB
        vcpus=container.vcpus,
        cpu_shares=container.cpu_shares,
        root=str(root),
        interfaces=tuple(interfaces),
        idmap=idmap,
    )


def differences(actual: Domain, wanted: Domain) -> list[str]:
    """What differs, one readable line per difference (empty: the same domain)."""
    out = []
    for f in fields(Domain):
        if f.name == "interfaces":
            continue
        old, new = getattr(actual, f.name), getattr(wanted, f.name)
        if old != new:
            if f.name == "caps_off":
                gone, more = sorted(set(old) - set(new)), sorted(set(new) - set(old))
                said = ([f"turn off {', '.join(more)}"] if more else []) + \
                    ([f"turn on {', '.join(gone)}"] if gone else [])
                out.append(f"capabilities: {'; '.join(said)}")
                continue
            if f.name == "memory":
                old, new = human_bytes(old), human_bytes(new)
            if f.name == "idmap":
                old, new = (_ids(old), _ids(new))
            if f.name == "lxcfs":
                old, new = old or "none", new or "none"
            label = {"cpu_shares": "CPU shares", "root": "root filesystem",
                     "vcpus": "vCPUs", "uuid": "UUID",
                     "idmap": "user namespace",
                     "lxcfs": "lxcfs (limit-aware /proc)"}.get(f.name, f.name)
            out.append(f"{label}: {old} -> {new}")
    have = {i.guest: i for i in actual.interfaces}
    want = {i.guest: i for i in wanted.interfaces}
    for guest in sorted(have.keys() | want.keys()):
        a, w = have.get(guest), want.get(guest)
        if a == w:
            continue
        if a is None:
            assert w is not None
            out.append(f"interface {guest}: missing, wanted {w.describe()}")
        elif w is None:
            out.append(f"interface {guest}: not wanted ({a.describe()})")
        else:
            out.append(f"interface {guest}: {a.describe()} -> {w.describe()}")
    return out


def _ids(idmap: int | None) -> str:
    if idmap is None:
        return "none (privileged)"
    if idmap < 0:
        return "not fjord's"
    return f"ids {idmap}-{idmap + IDMAP_COUNT - 1}"


def canonical_xml(text: str) -> str:
    """``text`` pretty-printed one way whoever wrote it: whitespace between elements
    dropped, attributes sorted by name, two spaces a level, double quotes."""
    root = ET.fromstring(text)
    for el in root.iter():
        if el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None
        if el.attrib:
            items = sorted(el.attrib.items())
            el.attrib.clear()
            el.attrib.update(items)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def xml_diff(actual: str | Domain | None, wanted: Domain) -> str:
    """A unified diff (for `plan -v`) of the domain as libvirt has it (its XMLDesc, or
    a Domain) and as fjord would define it, both pretty-printed by canonical_xml: what
    libvirt adds on its own (the emulator, a console, …) shows as removed lines."""
    if actual is None:  # not defined yet
        now = ""
    else:
        text = actual if isinstance(actual, str) else actual.xml()
        try:
            now = canonical_xml(text)
        except ET.ParseError:
            now = text
    diff = difflib.unified_diff(now.splitlines(keepends=True),
                                canonical_xml(wanted.xml()).splitlines(keepends=True),
                                fromfile=f"domain {wanted.name} (libvirt XMLDesc)"
                                if actual is not None else "/dev/null",
                                tofile=f"domain {wanted.name} (declared)")
    return "".join(d if d.endswith("\n") else d + "\n" for d in diff)


def human_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"

