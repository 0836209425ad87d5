"""One server VM: QEMU on a copy-on-write layer over the cached disk, its NIC on the
provider's tap, driven over SSH from the provider's side (as its owner would).

QEMU runs with KVM only where /dev/kvm really boots Debian's kernel; on the machines
here /dev/kvm is a PVM module that cannot (DESIGN, real-boot fact 1), so the normal
case is full emulation (TCG, multi-threaded). ``FJORD_VM_ACCEL=kvm|tcg`` forces one.
A reboot is a real one: `systemctl reboot` in the guest, the same QEMU process resets
the machine and starts the kernel again.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from guest import UPLINK, Disk, log

from fjord.lab.names import netns_path

MEMORY_MB = int(os.environ.get("FJORD_VM_MEMORY", "2048"))
CPUS = int(os.environ.get("FJORD_VM_CPUS", "2"))
BOOT_TIMEOUT = float(os.environ.get("FJORD_VM_BOOT_TIMEOUT", "600"))


def accelerator() -> str:
    forced = os.environ.get("FJORD_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_boots() else "tcg"


def kvm_boots() -> bool:
    """True when /dev/kvm is a real hardware-virtualisation module: the CPU says vmx or
    svm and the module is kvm_intel or kvm_amd (a PVM /dev/kvm cannot run Debian's
    kernel, measured)."""
    if not os.path.exists("/dev/kvm"):
        return False
    flags = Path("/proc/cpuinfo").read_text()
    if " vmx" not in flags and " svm" not in flags:
        return False
    modules = Path("/proc/modules").read_text()
    return any(line.startswith(("kvm_intel ", "kvm_amd ")) for line in modules.splitlines())


@dataclass
class Answer:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Machine:
    def __init__(self, disk: Disk, workdir: Path, netns: str, mac: str, address: str) -> None:
        self.disk = disk
        self.dir = workdir
        self.netns = netns
        self.mac = mac
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None
        self.accel = accelerator()

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def overlay(self) -> Path:
        return self.dir / "disk.qcow2"

    def start(self, tap: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        str(self.disk.image), str(self.overlay)], check=True)
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else \
            ["-accel", "tcg,thread=multi", "-cpu", "max"]
        argv = [
            "qemu-system-x86_64", "-machine", "pc", *accel, "-smp", str(CPUS),
            "-m", str(MEMORY_MB), "-nodefaults", "-display", "none",
            "-kernel", str(self.disk.kernel), "-initrd", str(self.disk.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 panic=-1",
            "-drive", f"file={self.overlay},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"tap,id=uplink,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=uplink,mac={self.mac},addr=3",
            "-serial", f"file:{self.console}",
            "-device", "virtio-rng-pci",
        ]
        log(f"starting the VM ({self.accel}, {CPUS} CPUs, {MEMORY_MB} MiB)")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns_path(self.netns)}", *argv],
            stdin=subprocess.DEVNULL, stdout=open(self.dir / "qemu.log", "ab"),
            stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)
        self.proc = None

    # --- talking to it ---------------------------------------------------------------------

    def ssh_argv(self, command: str, *, connect_timeout: int = 10) -> list[str]:
        return ["nsenter", f"--net={netns_path(self.netns)}", "ssh", "-q",
                "-i", str(self.disk.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=6", f"root@{self.address}", command]

    def ssh(self, command: str | list[str], *, timeout: float = 900, check: bool = True,
            input: str | None = None) -> Answer:
        text = command if isinstance(command, str) else shlex.join(command)
        start = time.monotonic()
        try:
            proc = subprocess.run(self.ssh_argv(text), capture_output=True, text=True,
                                  timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  check=False)
            answer = Answer(proc.returncode, proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            answer = Answer(-1, str(exc.stdout or ""), f"no answer after {timeout} s")
        if check and not answer.ok:
            raise AssertionError(
                f"on the server: {text}\nexit {answer.returncode} after "
                f"{time.monotonic() - start:.0f} s\n--- stdout\n{answer.stdout[-6000:]}"
                f"\n--- stderr\n{answer.stderr[-4000:]}")
        return answer

    def copy_in(self, source: Path, target: str, timeout: float = 600) -> None:
        """Copy a file to the server (scp, as an owner would)."""
        argv = ["nsenter", f"--net={netns_path(self.netns)}", "scp", "-q",
                "-i", str(self.disk.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                str(source), f"root@{self.address}:{target}"]
        subprocess.run(argv, check=True, timeout=timeout, capture_output=True)

    def boot_id(self) -> str | None:
        answer = self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=30, check=False)
        return answer.stdout.strip() if answer.ok else None

    def wait_ssh(self, *, since: str | None = None, timeout: float = BOOT_TIMEOUT) -> float:
        """Wait until the server answers SSH (with another boot ID than ``since``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.alive():
                raise AssertionError(f"QEMU ended; console:\n{self.console_tail()}")
            current = self.boot_id()
            if current and current != since:
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(f"the server did not answer SSH within {timeout:.0f} s; "
                             f"console:\n{self.console_tail()}")

    def reboot(self) -> float:
        """A real reboot; returns the seconds until SSH answers again."""
        before = self.boot_id()
        assert before, "the server does not answer before the reboot"
        self.ssh("systemctl reboot", check=False, timeout=30)
        return self.wait_ssh(since=before)

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def uplink_mac(self) -> str:
        return self.ssh(f"cat /sys/class/net/{UPLINK}/address").stdout.strip()
