"""fjord from the owner's laptop (`fjord --host`, issue 16): the lab's router namespace
is the laptop on the Internet, the lab's server runs a real OpenSSH server, and the
local fjord drives the server's fjord over the `ssh` client, on the server's public
IPv4 and IPv6 addresses.

The switchover is confirmed over a new SSH connection; when no new connection gets
through (a firewall on the laptop's side admits one SSH connection at a time: the
apply's own one survives the switchover, the confirming one is dropped), nothing is
confirmed and the server's guard rolls back."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults import at_a_terminal

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lab.yaml"
FJORD = str(Path(sys.executable).parent / "fjord")
PUBLIC4, PUBLIC6 = "192.0.2.5", "2001:db8:151:7307::2"
MOVED4 = "192.0.2.6"

# What the laptop's firewall does in the failing case: a new SSH connection to an address
# that already has one is dropped (conntrack's count; closed ones do not count).
ONE_SSH_AT_A_TIME = """
table inet fjord_test_one_ssh {
  set ssh4 { type ipv4_addr; flags dynamic; }
  set ssh6 { type ipv6_addr; flags dynamic; }
  chain out {
    type filter hook output priority 0; policy accept;
    tcp dport 22 ct state new add @ssh4 { ip daddr ct count over 1 } counter drop
    tcp dport 22 ct state new add @ssh6 { ip6 daddr ct count over 1 } counter drop
  }
}
"""


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Callable[[Lab], dict[str, str]]]:
    """An OpenSSH server on a lab's server (a throwaway host key, a key made here as the
    only authorized one), with fjord of this checkout on its PATH; returns the
    environment for the laptop's fjord: $FJORD_SSH names the key and a known_hosts file
    of the test's own (no ~/.ssh of the machine is read or written)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(lab: Lab, port: int = 22, path_first: str | None = None) -> dict[str, str]:
        if not Path("/usr/sbin/sshd").exists():
            pytest.fail("openssh-server is missing (scripts/setup installs it)")
        d = tmp_path / f"ssh{port}"
        d.mkdir()
        for key in ("host_key", "id"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key,
                            "-f", str(d / key)], check=True)
        (d / "authorized_keys").write_text((d / "id.pub").read_text())
        (d / "authorized_keys").chmod(0o600)
        system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        path = f"{path_first or Path(sys.executable).parent}:{system}"
        env = " ".join(f"{k}={v}" for k, v in {
            "PATH": path, "FJORD_SERVICE_MANAGER": "lab",
            "FJORD_PACKAGE_MANAGER": "simulate",
            "FJORD_IMAGES_DIR": "/var/cache/fjord/images"}.items())
        (d / "sshd_config").write_text(
            f"Port {port}\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
            f"SetEnv {env}\n")
        proc = subprocess.Popen(lab.exec_argv(["/usr/sbin/sshd", "-D", "-e", "-f",
                                               str(d / "sshd_config")]),
                                stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"))
        started.append(proc)
        ssh = ["ssh", "-F", "/dev/null", "-i", str(d / "id"), "-o", "IdentitiesOnly=yes",
               "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
               "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]
        laptop_env = {**os.environ, "FJORD_SSH": shlex.join(ssh)}
        laptop_env.pop("FJORD_HOST", None)
        laptop_env.pop("FJORD_CONFIG", None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until it listens
            if lab.upstream([*ssh, "-p", str(port), f"root@{PUBLIC4}", "true"], check=False,
                            timeout=30).ok:
                return laptop_env
            time.sleep(0.2)
        pytest.fail("sshd on the lab's server never answered: "
                    + (d / "sshd.log").read_text())

    yield start
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def leftovers() -> set[str]:
    """The copies of configuration files on the server (its /tmp is the machine's)."""
    return {p.name for p in Path("/tmp").glob("fjord-remote.*")}


def test_from_the_laptop_over_ipv4_and_ipv6(make_lab: Callable[..., Lab], sshd: Callable,
                                            tmp_path: Path) -> None:
    lab = make_lab()
    env = sshd(lab)
    before = leftovers()

    def laptop(host: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(lab.upstream_argv([FJORD, "--host", host, *args]),
                              capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=str(REPO))

    v4, v6 = f"root@{PUBLIC4}", f"root@[{PUBLIC6}]"
    config = str(EXAMPLE.relative_to(REPO))  # a relative path, read on the laptop
    valid = laptop(v6, "validate", "-c", config)
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip() == "lab.yaml: valid (1 container)"
    assert laptop(v4, "plan", "-c", config, "--detailed-exitcode").returncode == 4

    # at a terminal: apply asks (on the laptop's terminal, through ssh -t), then the
    # switchover is confirmed over a new connection while the progress display runs
    code, shown = at_a_terminal(lab.upstream_argv([FJORD, "--host", v4, "apply", "-c",
                                                   config]), "y", env=env)
    assert code == 0, shown
    assert f"confirmed over a new SSH connection to {v4}" in shown
    assert "Applied" in shown and "waiting for confirmation" not in shown
    # the switchover happened and stays: the server answers on br-ex, its guard is gone
    assert f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout
    assert not lab.exec(["test", "-e", "/var/lib/fjord/switchover.json"], check=False).ok
    again = laptop(v6, "apply", "-c", config, "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"] == []
    assert laptop(v6, "plan", "-c", config, "--detailed-exitcode").returncode == 0
    checked = laptop(v6, "check", "-c", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert laptop(v4, "status", "-c", config).returncode == 0
    assert f"{PUBLIC4}/27" in lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout

    # data in the container, written from the laptop
    wrote = laptop(v4, "container", "exec", "test", "--", "sh", "-c",
                   "echo precious-31337 > /root/precious && sync")
    assert wrote.returncode == 0, wrote.stderr

    # a new address (the provider moved the server): a switchover; no new SSH connection
    # gets through, so nothing confirms it and the server's guard rolls it back
    moved = tmp_path / "moved.yaml"
    moved.write_text(EXAMPLE.read_text().replace(f"address: {PUBLIC4}/27",
                                                 f"address: {MOVED4}/27"))
    lab.upstream(["nft", "-f", "-"], input=ONE_SSH_AT_A_TIME)
    try:
        failed = laptop(v4, "apply", "-c", str(moved), "--yes", "--confirm-timeout", "15")
    finally:
        lab.upstream(["nft", "delete", "table", "inet", "fjord_test_one_ssh"])
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"a new SSH connection to {v4} failed" in failed.stderr
    assert "rolled back" in failed.stderr and "not confirmed within 15 s" in failed.stderr
    # reachable on the old addresses, the new one gone, nothing else changed
    br_ex = lab.exec(["ip", "-br", "addr", "show", "br-ex"]).stdout
    assert f"{PUBLIC4}/27" in br_ex and MOVED4 not in br_ex
    assert laptop(v6, "plan", "-c", config, "--detailed-exitcode").returncode == 0
    read = laptop(v4, "container", "exec", "test", "--", "cat", "/root/precious")
    assert read.returncode == 0 and read.stdout.strip() == "precious-31337", read.stderr
    checked = laptop(v4, "check", "-c", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert leftovers() == before  # every copy of the file was removed from the server


def test_wrong_version_missing_fjord_and_no_ssh(make_lab: Callable[..., Lab], sshd: Callable,
                                                tmp_path: Path) -> None:
    lab = make_lab()
    # on port 2201 the server's fjord is another version, on 2202 there is none
    old = tmp_path / "old"
    old.mkdir()
    (old / "fjord").write_text("#!/bin/sh\necho 'fjord, version 0.0.1'\n")
    (old / "fjord").chmod(0o755)
    env = sshd(lab, 2201, str(old))
    env_none = sshd(lab, 2202, str(tmp_path))

    def laptop(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(lab.upstream_argv([FJORD, *args]), capture_output=True,
                              text=True, env=env, timeout=300)

    before = leftovers()
    other = laptop(env, "--host", f"root@{PUBLIC4}:2201", "plan", "-c", str(EXAMPLE))
    assert other.returncode == 1, other.stderr
    assert "is version 0.0.1" in other.stderr and "scripts/bundle" in other.stderr
    none = laptop(env_none, "--host", f"root@{PUBLIC4}:2202", "check", "-c", str(EXAMPLE))
    assert none.returncode == 3, none.stderr  # check: could not run the checks
    assert "fjord is not installed on" in none.stderr
    assert leftovers() == before  # nothing was copied over
    # nothing listens on 2200: an SSH failure of its own
    unreachable = laptop(env, "--host", f"root@{PUBLIC4}:2200", "status")
    assert unreachable.returncode == 3  # status: could not tell
    assert f"cannot reach root@{PUBLIC4}:2200 over SSH" in unreachable.stderr
    refused = laptop(env, "--host", f"root@{PUBLIC4}:2200", "plan")
    assert refused.returncode == 1 and "cannot reach" in refused.stderr
