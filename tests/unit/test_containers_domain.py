"""libvirt LXC domain XML: golden renderings (ovs/linux-bridge, bridged/routed IPv6)
with injected UUIDs and MACs, reading back what libvirt returns, readable differences."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from goldens import check_golden

from fjord.config.desired import Desired, load
from fjord.containers.domain import (
    INIT,
    Domain,
    Interface,
    container_uuid,
    differences,
    domain_for,
    xml_diff,
)
from fjord.errors import FjordError

GOLDEN = Path(__file__).parent / "golden" / "containers"
UUID = "0b4e6c9a-5d0c-5c57-9a66-0e1a3b2c4d5e"
ROOT = Path("/var/lib/fjord/containers/test/rootfs")

CONFIG = """
version: 1
host:
  fqdn: oslo.example.net
  switch: {{kind: {switch}}}
  ipv4: {{address: 192.0.2.5/27, gateway: 192.0.2.1}}
  ipv6: {{address: 2001:db8:151:7307::2/64, mode: {mode}}}
  dns: [192.0.2.53]
containers:
  test:
    ipv4: 10.1.0.2
    ipv6: 2001:db8:151:7307:1::1
    mac: {{private: "52:54:00:00:00:02", public: "52:54:00:01:00:02"}}
    memory: 512MiB
    vcpus: 2
    cpu_shares: 512
"""


def desired(tmp_path: Path, switch: str, mode: str) -> Desired:
    path = tmp_path / "fjord.yaml"
    path.write_text(CONFIG.format(switch=switch, mode=mode))
    return load(str(path))


def golden(name: str, text: str) -> None:
    check_golden(GOLDEN, name, text)


@pytest.mark.parametrize("switch", ["ovs", "linux-bridge"])
@pytest.mark.parametrize("mode", ["bridged", "routed"])
def test_domain_xml_golden(tmp_path, switch, mode):
    d = desired(tmp_path, switch, mode)
    dom = domain_for(d.container("test"), d, ROOT, uuid_=UUID)
    text = dom.xml()
    golden(f"domain.{switch}.{mode}.xml", text)
    root = ET.fromstring(text)
    assert root.get("type") == "lxc" and root.findtext("os/init") == INIT
    assert root.findtext("cputune/shares") == "512" and root.findtext("vcpu") == "2"
    assert root.find("memory").text == str(512 * 1024) and root.find("memory").get("unit") == "KiB"
    ifaces = root.findall("devices/interface")
    assert len(ifaces) == (2 if mode == "bridged" else 1)
    assert ifaces[0].find("source").get("bridge") == "br-int"
    assert ifaces[0].find("mac").get("address") == "52:54:00:00:00:02"
    assert (ifaces[0].find("virtualport") is not None) == (switch == "ovs")
    if mode == "bridged":
        assert ifaces[1].find("source").get("bridge") == "br-ex"


@pytest.mark.skipif(not (shutil.which("virt-xml-validate") and shutil.which("xmllint")),
                    reason="needs libvirt-clients and libxml2-utils")
def test_golden_domains_validate_against_libvirts_schema():
    for path in sorted(GOLDEN.glob("domain.*.xml")):
        out = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_render_then_parse_is_the_same_domain(tmp_path):
    d = desired(tmp_path, "ovs", "bridged")
    dom = domain_for(d.container("test"), d, ROOT, uuid_=UUID)
    assert Domain.parse(dom.xml()) == dom


def test_uuid_is_stable_and_per_container():
    test = container_uuid("oslo.example.net", "test")
    assert test == container_uuid("oslo.example.net", "test")
    assert test != container_uuid("oslo.example.net", "web")
    assert test != container_uuid("bergen.example.net", "test")


# What libvirt 9 returns for such a domain: its defaults and runtime details added.
DUMPXML = """<domain type='lxc' id='4242'>
  <name>test</name>
  <uuid>0b4e6c9a-5d0c-5c57-9a66-0e1a3b2c4d5e</uuid>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <cputune>
    <shares>512</shares>
  </cputune>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64'>exe</type>
    <init>/usr/local/sbin/fjord-init</init>
  </os>
  <features>
    <capabilities policy='default'>
      <audit_control state='off'/>
      <block_suspend state='off'/>
      <dac_read_search state='off'/>
      <linux_immutable state='off'/>
      <mac_admin state='off'/>
      <mac_override state='off'/>
      <mknod state='off'/>
      <sys_module state='off'/>
      <sys_nice state='off'/>
      <sys_pacct state='off'/>
      <sys_ptrace state='off'/>
      <sys_rawio state='off'/>
      <sys_resource state='off'/>
      <sys_time state='off'/>
      <syslog state='off'/>
      <wake_alarm state='off'/>
    </capabilities>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/lib/libvirt/libvirt_lxc</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/var/lib/fjord/containers/test/rootfs'/>
      <target dir='/'/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/var/lib/lxcfs'/>
      <target dir='/var/lib/lxcfs'/>
      <readonly/>
    </filesystem>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:02'/>
      <source bridge='br-int'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='3c1e2f4a-9b8d-4e6f-a1b2-c3d4e5f60718'/>
      </virtualport>
      <target dev='vnet0'/>
      <guest dev='eth0'/>
      <alias name='net0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:01:00:02'/>
      <source bridge='br-ex'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='7d2c1b0a-8e9f-4a3b-b4c5-d6e7f8091a2b'/>
      </virtualport>
      <target dev='vnet1'/>
      <guest dev='eth1'/>
      <alias name='net1'/>
    </interface>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <target type='lxc' port='0'/>
      <alias name='console0'/>
    </console>
  </devices>
  <seclabel type='none' model='none'/>
</domain>
"""


def test_libvirt_additions_are_not_differences(tmp_path):
    d = desired(tmp_path, "ovs", "bridged")
    wanted = domain_for(d.container("test"), d, ROOT, uuid_=UUID)
    assert differences(Domain.parse(DUMPXML), wanted) == []


def test_a_changed_memory_limit_is_a_readable_difference(tmp_path):
    d = desired(tmp_path, "ovs", "bridged")
    wanted = replace(domain_for(d.container("test"), d, ROOT, uuid_=UUID), memory=1 << 30)
    actual = Domain.parse(DUMPXML)
    assert differences(actual, wanted) == ["memory: 512 MiB -> 1 GiB"]
    diff = xml_diff(actual, wanted)
    assert "-  <memory unit=\"KiB\">524288</memory>" in diff
    assert "+  <memory unit=\"KiB\">1048576</memory>" in diff


def test_interface_differences(tmp_path):
    d = desired(tmp_path, "ovs", "routed")
    wanted = domain_for(d.container("test"), d, ROOT, uuid_=UUID)
    lines = differences(Domain.parse(DUMPXML), wanted)
    assert lines == [
        "interface eth1: not wanted (eth1 on Open vSwitch br-ex, MAC 52:54:00:01:00:02)"]
    moved = replace(wanted, interfaces=(Interface("eth0", "br-int", "52:54:00:00:00:02", False),))
    assert differences(wanted, moved) == [
        "interface eth0: eth0 on Open vSwitch br-int, MAC 52:54:00:00:00:02 -> "
        "eth0 on Linux bridge br-int, MAC 52:54:00:00:00:02"]


def test_a_domain_from_before_fjord_init_is_redefined(tmp_path):
    """A domain defined with /sbin/init as its init (before fjord-init) is a difference:
    apply redefines it, and the next start gets the cgroup namespace."""
    d = desired(tmp_path, "ovs", "bridged")
    wanted = domain_for(d.container("test"), d, ROOT, uuid_=UUID)
    old = Domain.parse(DUMPXML.replace(INIT, "/sbin/init"))
    assert INIT == "/usr/local/sbin/fjord-init"
    assert differences(old, wanted) == [f"init: /sbin/init -> {INIT}"]


def test_memory_units_are_understood():
    text = DUMPXML.replace("<memory unit='KiB'>524288</memory>", "<memory unit='MiB'>512</memory>")
    assert Domain.parse(text).memory == 512 << 20


def test_not_an_lxc_domain_is_refused():
    with pytest.raises(FjordError):
        Domain.parse("<domain type='kvm'><name>x</name></domain>")
    with pytest.raises(FjordError):
        Domain.parse("<domain")


def test_a_domain_from_before_lxcfs_gets_its_mount(tmp_path):
    d = desired(tmp_path, "ovs", "bridged")
    wanted = domain_for(d.container("test"), d, ROOT, uuid_=UUID)
    old = Domain.parse(re.sub(r"<filesystem[^>]*>\s*<source dir='/var/lib/lxcfs'/>.*?"
                              r"</filesystem>", "", DUMPXML, flags=re.S))
    assert old.lxcfs is None and Domain.parse(DUMPXML).lxcfs == "/var/lib/lxcfs"
    assert differences(old, wanted) == ["lxcfs (limit-aware /proc): none -> /var/lib/lxcfs"]
