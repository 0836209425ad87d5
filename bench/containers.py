#!/usr/bin/env python3
"""How long fjord takes to launch containers, against a hand-made libvirt baseline on
the same simulated server; what a container costs in memory and disk; destroy times.

    sudo .venv/bin/python bench/containers.py [-n ROUNDS] [--quick]

Everything happens in one fresh lab (removed at the end, failed or not):

1. ``fjord apply`` of examples/lab.yaml's host with one warm-up container (network,
   libvirt hook, page cache); the warm-up container is destroyed, and a hand-made one
   is made and destroyed too.
2. For each case (overlay or copy root; 1 or 10 containers), ROUNDS rounds, each
   **A** and **B**, in turns (A B, then B A: the machine is noisy, and neither side
   should always come after the other's clean-up); before each side, the previous
   side's deletions and writeback are let finish (``_settle``):

   - **A, hand-made**: for each container, its root (``mount -t overlay`` on the
     image, or ``tar -x`` of a tarball of the image), its hostname, network file (the
     same as fjord writes, IPv4 only), SSH host key (ed25519) and authorized key,
     then ``virsh define`` of an equivalent domain XML (same memory, vCPU, init, root
     mount, eth0 on br-int through Open vSwitch, console) and ``virsh start``.
   - **B, fjord**: ``fjord apply -c CFG --yes --json`` with the host plus those
     containers (``rootfs: overlay|copy``, fixed IPv4, the SSH key).

   Each is timed from its first command until every container answers ping from the
   server; then its containers are destroyed (timed per container: ``virsh destroy``
   by hand, ``fjord container destroy`` for fjord's).
3. In the last round of fjord's 10 overlay containers, 5 s after they all answered:
   the memory each uses as the host sees it and the disk each adds.

The commands run on the server through one driver process per step (this file with
``--in-lab``, entered once with ``fjord.lab``), so neither side pays for entering the
lab. The driver pings with a raw ICMP socket every 20 ms per container (rather than a
``ping -c1 -W0.2`` process per attempt: 20 ms resolution for 10 containers at once).

Prints JSON: the figures (see ``measure``). Needs root and the bookworm base image in
the labs' shared cache (built first on the machine if missing: needs the mirror).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    SSH_KEY,
    containers_that_fit,
    figure,
    fjord_argv,
    lab_host_config,
    last_json,
    log,
    tail,
    unique_name,
)

# Targets (issue 9): seconds from the first command until every container answers ping.
TARGETS = {"overlay_1": 1.0, "overlay_10": 5.0, "ratio_overlay_1": 2.0, "ratio_copy": 1.2,
           "destroy": 1.0, "disk_overlay_mb": 10.0}
UNAVAILABLE = "fjord container lifecycle not available"
PING_TIMEOUT = 120.0
HAND_DIR = "/var/lib/libvirt/fjord-bench"   # the lab's own /var/lib/libvirt: same disk
VIRSH = ["virsh", "-q", "-c", "lxc:///"]
IDLE_SECONDS = 5.0


# ======================================================================================
# On the lab's server (``--in-lab JOB``): one step, its timings as JSON on stdout.
# ======================================================================================


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Pinger:
    """Echo requests to every address not yet answering, every ``interval`` seconds, from
    one raw ICMP socket; ``answered[ip]`` is when the first reply came
    (time.perf_counter())."""

    def __init__(self, ips: list[str], interval: float = 0.02) -> None:
        self.pending = set(ips)
        self.answered: dict[str, float] = {}
        self.interval = interval
        self.ident = os.getpid() & 0xFFFF
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Pinger:
        self.thread.start()
        return self

    def _send(self, ip: str, seq: int) -> None:
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq & 0xFFFF)
        payload = b"fjord-bench"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self.ident,
                             seq & 0xFFFF) + payload
        try:
            self.sock.sendto(packet, (ip, 0))
        except OSError:
            pass  # no neighbour yet (EHOSTUNREACH) or a full queue: try again later

    def _run(self) -> None:
        seq = 0
        next_send = 0.0
        while self.pending and not self.stop.is_set():
            now = time.perf_counter()
            if now >= next_send:
                seq += 1
                for ip in sorted(self.pending):
                    self._send(ip, seq)
                next_send = now + self.interval
            ready, _, _ = select.select([self.sock], [], [], max(0.0, next_send - now))
            if not ready:
                continue
            try:
                data, (src, _) = self.sock.recvfrom(2048)
            except BlockingIOError:
                continue
            at = time.perf_counter()
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, ident, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and ident == self.ident and src in self.pending:
                self.pending.discard(src)
                self.answered[src] = at

    def wait(self, timeout: float) -> dict[str, float]:
        self.thread.join(timeout)
        self.stop.set()
        self.thread.join()
        self.sock.close()
        return self.answered


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: "
                           f"{tail(proc.stderr or proc.stdout)}")
    return proc


def _interfaces(ip: str) -> str:
    """The IPv4 part of what fjord writes (src/fjord/containers/customize.py), gateway
    greeting included, so that both sides boot the same network configuration."""
    return ("auto lo\niface lo inet loopback\n\n"
            "auto eth0\niface eth0 inet static\n"
            f"    address {ip}/16\n    gateway 10.1.0.1\n"
            "    up ping -c 1 -W 1 -q 10.1.0.1 >/dev/null 2>&1 || true\n")


def _domain_xml(name: str, root: str, mac: str) -> str:
    """A domain equivalent to fjord's (docs/containers.md), made by hand."""
    d = ET.Element("domain", type="lxc")
    ET.SubElement(d, "name").text = name
    ET.SubElement(d, "memory", unit="KiB").text = str(512 * 1024)
    ET.SubElement(d, "vcpu").text = "1"
    os_ = ET.SubElement(d, "os")
    ET.SubElement(os_, "type").text = "exe"
    ET.SubElement(os_, "init").text = "/sbin/init"
    dev = ET.SubElement(d, "devices")
    fs = ET.SubElement(dev, "filesystem", type="mount", accessmode="passthrough")
    ET.SubElement(fs, "source", dir=root)
    ET.SubElement(fs, "target", dir="/")
    iface = ET.SubElement(dev, "interface", type="bridge")
    ET.SubElement(iface, "mac", address=mac)
    ET.SubElement(iface, "source", bridge="br-int")
    ET.SubElement(iface, "virtualport", type="openvswitch")
    ET.SubElement(iface, "guest", dev="eth0")
    console = ET.SubElement(dev, "console", type="pty")
    ET.SubElement(console, "target", type="lxc", port="0")
    return ET.tostring(d, encoding="unicode")


def _hand_make(c: dict[str, Any], job: dict[str, Any]) -> None:
    d = Path(HAND_DIR) / c["name"]
    root = d / "rootfs"
    root.mkdir(parents=True)
    if job["mode"] == "overlay":
        (d / "upper").mkdir()
        (d / "work").mkdir()
        _run(["mount", "-t", "overlay", f"bench-{c['name']}", "-o",
              f"lowerdir={job['image']},upperdir={d / 'upper'},workdir={d / 'work'}",
              str(root)])
    else:
        _run(["tar", "-xpf", job["tarball"], "--xattrs", "--xattrs-include=*",
              "--numeric-owner", "-C", str(root)])
    (root / "etc/hostname").write_text(c["name"] + "\n")
    (root / "etc/network/interfaces").write_text(_interfaces(c["ip"]))
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(job["ssh_key"] + "\n")
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "",
          "-f", str(root / "etc/ssh/ssh_host_ed25519_key")])
    xml = d / "domain.xml"
    xml.write_text(_domain_xml(c["name"], str(root), c["mac"]))
    _run([*VIRSH, "define", str(xml)])
    _run([*VIRSH, "start", c["name"]])


def _until_ping(pinger: Pinger, start: float, ips: list[str]) -> dict[str, Any]:
    answered = pinger.wait(PING_TIMEOUT)
    missing = [ip for ip in ips if ip not in answered]
    if missing:
        return {"seconds": None, "error": f"no ping answer from {', '.join(missing)} "
                                          f"within {PING_TIMEOUT:.0f} s"}
    return {"seconds": max(answered.values()) - start,
            "first": min(answered.values()) - start}


def _settle(timeout: float = 120) -> None:
    """Before a timed side: the previous side's work finished on disk (a copy root is
    199 MB; fjord deletes a destroyed root in the background), so that neither side pays
    for the other's deletions or writeback: no files left in fjord's trash, then
    sync, then until the kernel's dirty and writeback pages are below 64 MB."""
    start = time.perf_counter()
    trash = Path("/var/lib/fjord/containers/.trash")
    while trash.is_dir() and any(trash.iterdir()) and time.perf_counter() - start < timeout:
        time.sleep(0.05)
    os.sync()
    while time.perf_counter() - start < timeout:
        meminfo = dict(line.split(":", 1) for line in
                       Path("/proc/meminfo").read_text().splitlines())
        pending = sum(int(meminfo[k].split()[0]) for k in ("Dirty", "Writeback"))
        if pending < 64 * 1024:
            break
        time.sleep(0.1)
    # then until the disk itself is idle: deleting 2 GB of files leaves it busy for
    # tens of seconds after sync returns (ext4 mounted with `discard` trims what was
    # freed), and the side that came second paid for it (measured: about 3x)
    stat = _disk_stat_path(Path("/var/lib/fjord"))
    if stat is None:
        return
    quiet, last = 0, None
    while time.perf_counter() - start < timeout and quiet < 4:
        fields = stat.read_text().split()
        now = (int(fields[8]), int(fields[9]))  # in flight, milliseconds busy
        quiet = quiet + 1 if now[0] == 0 and last is not None and now[1] == last[1] else 0
        last = now
        time.sleep(0.25)


def _disk_stat_path(path: Path) -> Path | None:
    """/sys/dev/block/MAJ:MIN/stat of the block device ``path`` lives on (its whole
    disk's, for a partition)."""
    dev = path.stat().st_dev if path.exists() else Path("/").stat().st_dev
    base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not base.exists():
        return None
    whole = base.resolve().parent if (base / "partition").exists() else base.resolve()
    stat = whole / "stat"
    return stat if stat.exists() else None


def job_hand(job: dict[str, Any]) -> dict[str, Any]:
    _settle()
    ips = [c["ip"] for c in job["containers"]]
    pinger = Pinger(ips)
    start = time.perf_counter()
    pinger.start()
    try:
        for c in job["containers"]:
            _hand_make(c, job)
    except BaseException:
        pinger.wait(0)
        raise
    made = time.perf_counter() - start
    return {**_until_ping(pinger, start, ips), "commands": made}


def job_fjord(job: dict[str, Any]) -> dict[str, Any]:
    _settle()
    ips = [c["ip"] for c in job["containers"]]
    pinger = Pinger(ips)
    start = time.perf_counter()
    pinger.start()
    proc = subprocess.run([*job["fjord"], "apply", "-c", job["config"], "--yes", "--json"],
                          capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, check=False)
    applied = time.perf_counter() - start
    if proc.returncode != 0:
        pinger.wait(0)
        return {"seconds": None, "commands": applied,
                "error": f"fjord apply: exit {proc.returncode}: {tail(proc.stderr, 3)}"}
    out = _until_ping(pinger, start, ips)
    try:
        out["changes"] = len(last_json(proc.stdout)["changes"])
    except (ValueError, KeyError, TypeError):
        out["changes"] = None
    return {**out, "commands": applied}


def _domain_exists(name: str) -> bool:
    return subprocess.run([*VIRSH, "domstate", name], capture_output=True,
                          check=False).returncode == 0


def _remove_by_hand(name: str, d: Path) -> None:
    """virsh destroy + undefine, unmount, remove: tidy whatever is left."""
    if _domain_exists(name):
        subprocess.run([*VIRSH, "destroy", name], capture_output=True, check=False)
        subprocess.run([*VIRSH, "undefine", name], capture_output=True, check=False)
    root = d / "rootfs"
    if root.is_mount():
        _run(["umount", str(root)])
    if d.exists():
        _run(["rm", "-rf", "--one-file-system", str(d)])


def job_destroy_hand(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("parallel"):
        return _destroy_parallel([*VIRSH, "destroy"], job["names"], Path(HAND_DIR))
    destroy, total = [], []
    _settle()
    for name in job["names"]:
        start = time.perf_counter()
        _run([*VIRSH, "destroy", name])
        destroy.append(time.perf_counter() - start)
        _run([*VIRSH, "undefine", name])
        _remove_by_hand(name, Path(HAND_DIR) / name)
        total.append(time.perf_counter() - start)
    return {"destroy": destroy, "total": total}


def _destroy_parallel(argv: list[str], names: list[str], where: Path) -> dict[str, Any]:
    """All at once, untimed (the 10-container cases: tidying, not a figure)."""
    procs = [subprocess.Popen([*argv, name], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
             for name in names]
    for proc in procs:
        proc.wait(timeout=120)
    for name in names:
        _remove_by_hand(name, where / name)
    return {"destroy": [], "total": [], "error": None}


def job_destroy_fjord(job: dict[str, Any]) -> dict[str, Any]:
    """``fjord container destroy NAME`` per container when fjord has it; else tidies by
    hand (so that the next round starts clean) and says so."""
    if job.get("parallel"):
        return _destroy_parallel([*job["fjord"], "container", "destroy", "--yes"],
                                 job["names"], Path("/var/lib/fjord/containers"))
    has_cli = subprocess.run([*job["fjord"], "container", "destroy", "--help"],
                             capture_output=True, text=True, check=False)
    usage = has_cli.stdout
    times: list[float] = []
    error = None
    if has_cli.returncode == 0:
        _settle()
        extra = ["--yes"] if "--yes" in usage else []
        if "--config" in usage:
            extra += ["-c", job["config"]]
        for name in job["names"]:
            start = time.perf_counter()
            proc = subprocess.run([*job["fjord"], "container", "destroy", name, *extra],
                                  capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL, check=False)
            if proc.returncode != 0:
                error = f"fjord container destroy {name}: exit {proc.returncode}: " \
                        f"{tail(proc.stderr, 3)}"
                break
            times.append(time.perf_counter() - start)
    else:
        error = "`fjord container destroy` not available"
    for name in job["names"]:
        _remove_by_hand(name, Path("/var/lib/fjord/containers") / name)
    # fjord deletes a root's files in the background: untimed, but waited for, so that
    # the next round does not share the disk with it
    start = time.perf_counter()
    trash = Path("/var/lib/fjord/containers/.trash")
    while trash.is_dir() and any(trash.iterdir()) and time.perf_counter() - start < 300:
        time.sleep(0.05)
    return {"destroy": times, "error": error,
            "files_gone_after": time.perf_counter() - start}


def _init_pid(name: str) -> int:
    controller = int(_run([*VIRSH, "domid", name]).stdout.strip())
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    return int(children[0])


def _memory(name: str) -> dict[str, Any]:
    """PSS and RSS of every process in the container's PID namespace (the host's view;
    PSS shares the image's pages among the containers using them), and the usage of
    the container's memory cgroup."""
    init = _init_pid(name)
    pidns = os.readlink(f"/proc/{init}/ns/pid")
    pss = rss = procs = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != pidns:
                continue
            with open(f"/proc/{entry.name}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
            procs += 1
        except OSError:
            continue
    cgroup = None
    for line in Path(f"/proc/{init}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            usage = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
            if usage.exists():
                cgroup = {"path": path, "usage": int(usage.read_text())}
    controller_group = None
    base = Path("/sys/fs/cgroup/memory/machine")
    for d in base.glob(f"lxc-*-{name}.libvirt-lxc"):
        controller_group = int((d / "memory.usage_in_bytes").read_text())
    return {"pss": pss, "rss": rss, "processes": procs, "init_cgroup": cgroup,
            "machine_cgroup_usage": controller_group}


def _disk(d: Path) -> int:
    """Bytes under the container's directory, not crossing into its mounted root, nor
    into the image an unprivileged container's lower/ is (an idmapped bind mount of the
    image: the same filesystem, which -x alone does not stop at)."""
    out = _run(["du", "-s", "-x", "-B1", "--exclude=lower",
                str(d)]).stdout
    return int(out.split()[0])


def job_inspect(job: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in job["names"]:
        out[name] = {"memory": _memory(name),
                     "disk": _disk(Path(job["dir"]) / name)}
    return out


def job_warm_fjord(job: dict[str, Any]) -> dict[str, Any]:
    """The first apply (host, network, hook, warm-up container), twice if need be. When
    fjord cannot launch containers, the server still needs br-int for the hand-made
    side: the host and network layers only, else the bridge by hand (as the lab test
    of a booting container does)."""
    errors = []
    for _ in range(2):
        result = job_fjord(job)
        if result.get("seconds") is not None:
            return {**result, "ok": True, "errors": errors}
        errors.append(result.get("error"))
    proc = subprocess.run([*job["fjord"], "apply", "-c", job["config"], "--yes", "--json",
                           "--only", "host", "--only", "network"],
                          capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        errors.append(f"fjord apply --only host --only network: exit {proc.returncode}: "
                      f"{tail(proc.stderr, 3)}")
        _run(["ovs-vsctl", "--may-exist", "add-br", "br-int", "--",
              "set", "bridge", "br-int", "datapath_type=netdev"])
        _run(["ip", "addr", "replace", "10.1.0.1/16", "dev", "br-int"])
        _run(["ip", "link", "set", "br-int", "up"])
    return {"ok": False, "errors": errors}


JOBS = {"hand": job_hand, "fjord": job_fjord, "destroy_hand": job_destroy_hand,
        "destroy_fjord": job_destroy_fjord, "inspect": job_inspect,
        "warm_fjord": job_warm_fjord}


def in_lab(job: dict[str, Any]) -> int:
    print(json.dumps(JOBS[job["job"]](job)))
    return 0


# ======================================================================================
# On the machine: the lab, the rounds, the figures.
# ======================================================================================


class Bench:
    def __init__(self, lab: Any, work: Path, image: str, tarball: Path) -> None:
        self.lab = lab
        self.work = work
        self.image = image
        self.tarball = tarball
        self.count = 0
        self.fjord = fjord_argv()

    def step(self, job: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
        argv = self.lab.exec_argv([sys.executable, str(Path(__file__).resolve()),
                                   "--in-lab", json.dumps(job)])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{job['job']} in the lab: exit {proc.returncode}: "
                               f"{tail(proc.stderr, 8)}")
        result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
        return result

    def containers(self, prefix: str, n: int) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            self.count += 1
            k = self.count
            out.append({"name": f"{prefix}{i:02d}", "ip": f"10.1.{10 + k // 250}.{2 + k % 250}",
                        "mac": f"52:54:00:fe:{k // 256:02x}:{k % 256:02x}"})
        return out

    def config(self, containers: list[dict[str, Any]], mode: str) -> str:
        path = self.work / f"fjord-{self.count}.yaml"
        lines = [lab_host_config(), "containers:"]
        priv = ", privileged: true" if PRIVILEGED else ""
        lines += [f"  {c['name']}: {{ipv4: {c['ip']}, rootfs: {mode}{priv}}}"
                  for c in containers]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)
        return str(path)

    def hand(self, mode: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
        return self.step({"job": "hand", "mode": mode, "containers": containers,
                          "image": self.image, "tarball": str(self.tarball),
                          "ssh_key": SSH_KEY})

    def fjord_apply(self, mode: str, containers: list[dict[str, Any]],
                    job: str = "fjord") -> dict[str, Any]:
        return self.step({"job": job, "containers": containers, "fjord": self.fjord,
                          "config": self.config(containers, mode)})

    def destroy_hand(self, containers: list[dict[str, Any]],
                     tidy_only: bool = False) -> dict[str, Any]:
        return self.step({"job": "destroy_hand", "names": [c["name"] for c in containers],
                          "parallel": len(containers) > 1 or tidy_only})

    def destroy_fjord(self, containers: list[dict[str, Any]]) -> dict[str, Any]:
        return self.step({"job": "destroy_fjord", "fjord": self.fjord,
                          "names": [c["name"] for c in containers],
                          "parallel": len(containers) > 1,
                          "config": str(self.work / f"fjord-{self.count}.yaml")})

    def inspect(self, containers: list[dict[str, Any]], where: str) -> dict[str, Any]:
        return self.step({"job": "inspect", "names": [c["name"] for c in containers],
                          "dir": where})


def ensure_image(work: Path) -> tuple[str, str]:
    """The base image in the labs' shared cache (built on the machine if missing):
    (its rootfs as the server sees it, its rootfs on the machine)."""
    from fjord.lab.names import labs_dir

    cache = labs_dir() / ".cache" / "fjord" / "images"
    config = work / "image.yaml"
    config.write_text(lab_host_config() + "containers:\n  image: {}\n")
    proc = subprocess.run([*fjord_argv(), "image", "build", "-c", str(config), "--json"],
                          capture_output=True, text=True, timeout=1800, check=False,
                          env={**os.environ, "FJORD_IMAGES_DIR": str(cache)},
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"fjord image build: {tail(proc.stderr)}")
    image = last_json(proc.stdout)["images"][0]
    key = image["key"]
    return f"/var/cache/fjord/images/{key}/rootfs", str(cache / key / "rootfs")


def measure(quick: bool = False, rounds: int | None = None,
            only: list[str] | None = None) -> dict[str, Any]:
    """{"figures": create+start until ping (hand-made and fjord, ratios), destroy,
    memory and disk per container; "raw": every round's measures}."""
    from fjord.lab import Lab

    if os.geteuid() != 0:
        raise RuntimeError("needs root (labs)")
    rounds = rounds or (2 if quick else 6)  # pairs of rounds: see balanced_ratios
    cases = [("overlay", 1), ("copy", 1), ("overlay", 10), ("copy", 10)]
    if only:
        cases = [c for c in cases if f"{c[0]}_{c[1]}" in only]
    work = Path(tempfile.mkdtemp(prefix="fjord-bench-ctr-"))
    work.chmod(0o755)
    lab = Lab(unique_name("bench-ctr-"))
    raw: dict[str, Any] = {"rounds": rounds, "cases": {}, "notes": []}
    try:
        log("containers: image")
        image, image_on_machine = ensure_image(work)
        tarball = work / "image.tar"
        subprocess.run(["tar", "-cf", str(tarball), "--xattrs", "--xattrs-include=*",
                        "--numeric-owner", "-C", image_on_machine, "."], check=True,
                       capture_output=True, timeout=600)
        tarball.chmod(0o644)
        log(f"containers: lab {lab.name}")
        lab.up(config=str(REPO / "examples" / "lab.yaml"), owner=os.getpid())
        b = Bench(lab, work, image, tarball)
        warm = b.containers("wf", 1)
        raw["warm_up"] = b.fjord_apply("overlay", warm, job="warm_fjord")
        fjord_ok = raw["warm_up"]["ok"]
        if fjord_ok:
            raw["warm_up_destroy"] = b.destroy_fjord(warm)
        else:
            raw["notes"].append(f"{UNAVAILABLE}: {raw['warm_up']['errors'][-1]}")
        warm = b.containers("wh", 1)
        b.hand("overlay", warm)
        b.destroy_hand(warm)
        for mode, n in cases:
            case = raw["cases"].setdefault(f"{mode}_{n}", {"hand": [], "fjord": [],
                                                           "ratio": []})
            if quick and mode == "copy" and n == 10:
                case["skipped"] = "--quick makes no 10 copies"
                continue
            fit, short = containers_that_fit(n)
            if fit < n:
                case["skipped"] = short
                continue
            for r in range(rounds):
                log(f"containers: {mode} x{n}, round {r + 1}/{rounds}")
                last_ten = mode == "overlay" and n == 10 and r == rounds - 1
                # A B, then B A: neither side always follows the other's clean-up
                for side in ("hand", "fjord") if r % 2 == 0 else ("fjord", "hand"):
                    if side == "hand":
                        case["hand"].append(
                            _hand_round(b, raw, mode, n, r, last_ten and not fjord_ok))
                    elif fjord_ok:
                        case["fjord"].append(_fjord_round(b, raw, mode, n, r, last_ten))
            case["ratio"] = balanced_ratios(case["hand"], case["fjord"])
    finally:
        log(f"containers: lab {lab.name} down")
        try:
            lab.down()
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    return {"figures": figures(raw), "raw": raw}


def balanced_ratios(hand: list[dict[str, Any]], fjord: list[dict[str, Any]]) -> list[float]:
    """fjord / hand-made over each pair of rounds (A B, then B A): both sides once first
    and once second, because the side that comes second in a round can be much slower
    (measured with 10 copy roots: about 3x, whichever side it is)."""
    out = []
    for k in range(0, min(len(hand), len(fjord)) - 1, 2):
        times = [r.get("seconds") for r in (hand[k], hand[k + 1], fjord[k], fjord[k + 1])]
        if all(times):
            h1, h2, f1, f2 = times
            out.append((f1 + f2) / (h1 + h2))  # type: ignore[operator]
    return out


def _hand_round(b: Bench, raw: dict[str, Any], mode: str, n: int, r: int,
                inspect: bool) -> dict[str, Any]:
    hc = b.containers(f"h{mode[0]}{n}r{r}x", n)
    try:
        hand = b.hand(mode, hc)
    except RuntimeError as exc:
        # libvirt itself failing a start (seen under load: a cgroup gone before its
        # controller wrote to it): this round has no baseline, and says why
        hand = {"seconds": None, "error": str(exc)[-300:]}
    if inspect and hand.get("seconds") is not None:
        time.sleep(IDLE_SECONDS)
        raw["inspect"] = b.inspect(hc, HAND_DIR)
        raw["inspect_of"] = "hand-made"
    hand["destroy"] = b.destroy_hand(hc, tidy_only=hand["seconds"] is None)
    return hand


def _fjord_round(b: Bench, raw: dict[str, Any], mode: str, n: int, r: int,
                 inspect: bool) -> dict[str, Any]:
    fc = b.containers(f"f{mode[0]}{n}r{r}x", n)
    got = b.fjord_apply(mode, fc)
    if inspect and got.get("seconds") is not None:
        time.sleep(IDLE_SECONDS)
        raw["inspect"] = b.inspect(fc, "/var/lib/fjord/containers")
        raw["inspect_of"] = "fjord"
    got["destroy"] = b.destroy_fjord(fc)
    return got


def _errors(runs: list[dict[str, Any]]) -> str:
    return "; ".join(sorted({r["error"] for r in runs if r.get("error")}))


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def figures(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    how = "create+start until every container answers ping from the server"
    for key, case in raw["cases"].items():
        mode, n = key.split("_")
        target = TARGETS.get(key)
        ratio_target = TARGETS["ratio_overlay_1"] if key == "overlay_1" else \
            TARGETS["ratio_copy"] if mode == "copy" else None
        if case.get("skipped"):
            for side, unit, goal in (("baseline", "s", None), ("fjord", "s", target),
                                     ("ratio", "x", ratio_target)):
                out[f"{side}_start_{key}"] = figure([], unit, goal,
                                                    note=f"not run: {case['skipped']}")
            continue
        hand = [r["seconds"] for r in case["hand"] if r.get("seconds") is not None]
        fj = [r["seconds"] for r in case["fjord"] if r.get("seconds") is not None]
        out[f"baseline_start_{key}"] = figure(
            hand, "s", note=_join(f"hand-made {mode} root + virsh define + virsh start, "
                                  f"{how}", _errors(case["hand"])))
        note = f"fjord apply, {how}"
        if fj:
            apply_s = [r["commands"] for r in case["fjord"] if r.get("seconds") is not None]
            note += f"; the apply itself took {min(apply_s):.2f}-{max(apply_s):.2f} s"
        errors = _errors(case["fjord"])
        out[f"fjord_start_{key}"] = figure(
            fj, "s", target, note=_join(note, errors) if fj else (errors or UNAVAILABLE))
        out[f"ratio_start_{key}"] = figure(
            case["ratio"], "x", ratio_target,
            note="fjord / hand-made over each pair of rounds (A B then B A: each side once "
            "first, once second)" if case["ratio"]
            else UNAVAILABLE)
    for mode in ("overlay", "copy"):
        ones = raw["cases"].get(f"{mode}_1", {"hand": [], "fjord": []})
        hand_destroy = [t for r in ones["hand"] for t in r["destroy"]["destroy"]]
        hand_total = [t for r in ones["hand"] for t in r["destroy"]["total"]]
        fj_destroy = [t for r in ones["fjord"] for t in r["destroy"]["destroy"]]
        errors = sorted({r["destroy"]["error"] for r in ones["fjord"]
                         if r["destroy"].get("error")})
        out[f"baseline_destroy_{mode}"] = figure(
            hand_destroy, "s",
            note=f"virsh destroy of a running {mode} container; with undefine, umount and "
            f"rm -rf: {_range(hand_total)} s")
        out[f"fjord_destroy_{mode}"] = figure(
            fj_destroy, "s", TARGETS["destroy"],
            note=f"fjord container destroy --yes NAME of a running {mode} container (stop, "
            "undefine, remove the root, free the addresses)"
            if fj_destroy else "; ".join(errors) or UNAVAILABLE)
    inspect = raw.get("inspect") or {}
    pss = [v["memory"]["pss"] / 2**20 for v in inspect.values()]
    rss = [v["memory"]["rss"] / 2**20 for v in inspect.values()]
    cg = [v["memory"]["machine_cgroup_usage"] / 2**20 for v in inspect.values()
          if v["memory"]["machine_cgroup_usage"] is not None]
    procs = [v["memory"]["processes"] for v in inspect.values()]
    who = f"{IDLE_SECONDS:.0f} s after 10 {raw.get('inspect_of')} overlay containers answered ping"
    out["memory_idle_container"] = figure(
        cg, "MiB", digits=1,
        note=(f"memory.usage_in_bytes of the container's memory cgroup "
              f"(machine/lxc-ID-NAME.libvirt-lxc in the lab's tree), {who}: its processes "
              f"and the page cache charged to it (reclaimable: the journal file, ...)")
        if cg else UNAVAILABLE)
    out["memory_idle_container_pss"] = figure(
        pss, "MiB", digits=1,
        note=(f"PSS of the processes in the container's PID namespace ({_range(procs, 0)} "
              f"processes), {who}: shared pages (the image's libraries) divided among the "
              f"containers, i.e. what one more costs; RSS {_range(rss, 1)} MiB")
        if pss else UNAVAILABLE)
    disk = [v["disk"] / 1e6 for v in inspect.values()]
    out["disk_overlay_running"] = figure(
        disk, "MB", TARGETS["disk_overlay_mb"], digits=3,
        note=f"what a running {raw.get('inspect_of')} overlay container adds on disk "
        f"(its directory: upper + work, du -x), {IDLE_SECONDS:.0f} s after boot"
        if disk else UNAVAILABLE)
    for note in raw.get("notes", []):
        for fig in out.values():
            if fig["n"] == 0 and fig["note"] in ("", UNAVAILABLE):
                fig["note"] = note
    return out


def _range(values: list[float], digits: int = 2) -> str:
    if not values:
        return "?"
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


PRIVILEGED = False  # --privileged: fjord's containers with `privileged: true`


def main() -> int:
    if sys.argv[1:2] == ["--in-lab"]:
        return in_lab(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int,
                        help="rounds per case (default 6: pairs of A B, B A)")
    parser.add_argument("--quick", action="store_true", help="two rounds, no 10 copies")
    parser.add_argument("--privileged", action="store_true",
                        help="fjord's containers privileged (default: unprivileged)")
    parser.add_argument("--cases", help="only these cases, comma-separated (overlay_1, "
                        "copy_1, overlay_10, copy_10)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    only = args.cases.split(",") if args.cases else None
    global PRIVILEGED
    PRIVILEGED = args.privileged
    print(json.dumps(measure(args.quick, args.rounds, only), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
