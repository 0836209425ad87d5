"""Transmit checksum offload off on a container's interfaces, from the host.

With Open vSwitch's userspace datapath (``netdev``), frames that enter it from a veth
must carry complete checksums: the datapath never fills in the partial ones a veth
hands on, so TCP and UDP from the container would be dropped by the receiver. The
kernel datapath (real servers) needs nothing.

It is done with the ethtool ioctl (``ETHTOOL_STXCSUM``, what ``ethtool --offload DEV tx
off`` asks the kernel for) from a thread that has entered the container's network
namespace: no process to start, so libvirt's ``started`` hook, which runs it on every
start, costs microseconds instead of an ``nsenter`` and an ``ethtool``. Standard library
only, for the same reason: the hook imports nothing else.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
IFNAMSIZ = 16
IFREQ_SIZE = 40  # struct ifreq on Linux (16-byte name, 24-byte union)
LXC_RUN = Path("/run/libvirt/lxc")


def init_pid(name: str) -> int | None:
    """The PID (in the host's view) of a running container's init: the only child of
    libvirt's LXC controller, whose PID libvirt records in /run/libvirt/lxc/NAME.pid."""
    try:
        controller = int((LXC_RUN / f"{name}.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    # the children of every thread: the thread that clones the init is libvirt's choice
    children: list[str] = []
    try:
        tasks = sorted(os.listdir(f"/proc/{controller}/task"), key=int)
    except (FileNotFoundError, ValueError):
        return None
    for task in tasks:
        try:
            children += Path(f"/proc/{controller}/task/{task}/children").read_text().split()
        except FileNotFoundError:
            continue
    return int(children[0]) if children else None


class OffloadError(OSError):
    """The namespace or an interface could not be reached (message says which)."""


def _ethtool(sock: socket.socket, dev: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifreq = struct.pack(f"{IFNAMSIZ}sP", dev.encode(), ctypes.addressof(value))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq.ljust(IFREQ_SIZE, b"\0"))
    return int(struct.unpack("II", value.raw)[1])


def _in_namespace(pid: int, devices: Sequence[str], optional: Sequence[str]) -> list[str]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OffloadError(err, f"cannot enter the network namespace of PID {pid}: "
                               f"{os.strerror(err)}")
    finally:
        os.close(fd)
    changed = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for dev in devices:
            try:
                socket.if_nametoindex(dev)
            except OSError:
                if dev in optional:
                    continue
                raise OffloadError(f"the container has no interface {dev}") from None
            if _ethtool(sock, dev, ETHTOOL_GTXCSUM):
                _ethtool(sock, dev, ETHTOOL_STXCSUM, 0)
                if _ethtool(sock, dev, ETHTOOL_GTXCSUM):
                    raise OffloadError(f"{dev}: transmit checksum offload stays on")
                changed.append(dev)
    return changed


def tx_checksum_off(pid: int, devices: Sequence[str],
                    optional: Sequence[str] = ()) -> list[str]:
    """Turn transmit checksum offload off on ``devices`` in the network namespace of
    process ``pid``; those in ``optional`` may be missing. Returns the devices that
    changed (an interface already off is left alone). Raises OffloadError.

    The work runs in a thread of its own: entering a network namespace changes only the
    calling thread, and that thread ends with the work."""
    result: list[str] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.extend(_in_namespace(pid, devices, optional))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"offload-{pid}")
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, OffloadError):
            raise exc
        raise OffloadError(f"transmit checksum offload: {exc}") from exc
    return result
