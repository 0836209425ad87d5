"""Security defaults, checked from where an attacker stands:

- libvirt only on its UNIX sockets: with a server that came with a TCP listener
  configured (libvirtd.conf, --listen, the socket unit), fjord turns it off, and even a
  libvirtd started by hand with --listen opens no TCP port;
- no password login into containers (asked from the Internet, through the port forward);
  per-container SSH host keys and machine-id;
- the forward policy lets in only replies and declared port forwards: from the far host,
  a port a container listens on but the file does not publish is unreachable, over IPv4
  and IPv6, and so is the container's private address from the provider's segment;
- files holding secrets are mode 0600 (0700 directories);
- `fjord apply` refuses to run without root, saying so; `validate`, `plan` and `schema`
  work without it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import (
    EXAMPLE,
    FJORD,
    ROOT,
    capture,
    checks,
    daemon_pid,
    differences,
    fjord,
    fjord_state,
    kill_daemon,
    record,
)

from fjord.lab import Lab
from fjord.lab.daemons import LIBVIRT_ENV

pytestmark = pytest.mark.lab

PUBLIC4 = "192.0.2.5"
CT4, CT6 = "10.1.0.2", "2001:db8:151:7307:1::1"
LIBVIRT_PORTS = (16509, 16514)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
HOSTILE_LIBVIRTD_CONF = 'listen_tcp = 1\nlisten_tls = 0\nauth_tcp = "none"\n'


def connects(lab: Lab, host: str, port: int, timeout: float = 2.0) -> str:
    """From the far host ("the Internet"): 'open', 'refused' or 'timeout'."""
    code = (f"import socket\ntry:\n socket.create_connection(({host!r},{port}),"
            f"timeout={timeout});print('open')\nexcept ConnectionRefusedError:print('refused')\n"
            "except OSError:print('timeout')")
    return lab.far([sys.executable, "-c", code], timeout=30).stdout.strip()


def tcp_listeners(lab: Lab) -> set[int]:
    out = lab.exec(["ss", "-Hltn"]).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lab_root: None) -> Iterator[dict[str, Any]]:
    """One lab for the module: a server handed over with libvirt listening on TCP, then
    converged by `fjord apply --confirm-timeout` (the switchover confirmed from another
    session, its state file looked at meanwhile), with the owner's SSH key."""
    directory = tmp_path_factory.mktemp("security")
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(config=EXAMPLE, owner=os.getpid())
        lab.exec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/id_ed25519"])
        key = lab.exec(["cat", "/root/.ssh/id_ed25519.pub"]).stdout.strip()
        config = directory / "fjord.yaml"
        config.write_text(Path(EXAMPLE).read_text().replace(
            "\ndefaults:\n", f"\ndefaults:\n  ssh_keys: [{key!r}]\n", 1) + "  web: {}\n")
        subprocess.run([*FJORD, "image", "build", "-c", str(config), "--for-labs"],
                       check=True, cwd=ROOT, capture_output=True, timeout=1800)
        # as some providers hand servers over: libvirt listening on TCP without auth
        lab.exec(["sh", "-c", "cat >> /etc/libvirt/libvirtd.conf"], input=HOSTILE_LIBVIRTD_CONF)
        lab.exec(["sh", "-c", "echo 'LIBVIRTD_ARGS=\"--listen\"' > /etc/default/libvirtd"])
        restart_libvirtd(lab, listen=True)
        exposed = connects(lab, PUBLIC4, 16509)
        # the switchover waits for `fjord confirm`: the state file exists meanwhile
        proc = subprocess.Popen(lab.exec_argv([
            *FJORD, "apply", "-c", str(config), "--yes", "--json", "--confirm-timeout", "60"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        modes = {}
        deadline = time.monotonic() + 120
        state = fjord_state(lab) / "switchover.json"
        while proc.poll() is None and time.monotonic() < deadline:
            if state.exists():
                modes["switchover.json"] = oct(state.stat().st_mode & 0o777)
                if fjord(lab, "confirm", check=False).returncode == 0:
                    break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        yield {"lab": lab, "config": str(config), "exposed_before": exposed,
               "switchover_modes": modes, "first_apply": json.loads(out)["changes"]}
    finally:
        lab.down()


def restart_libvirtd(lab: Lab, listen: bool) -> None:
    """Stop the lab's libvirtd (by the PID the lab records) and start it by hand."""
    if daemon_pid(lab, "libvirtd") is not None:
        kill_daemon(lab, "libvirtd")
    lab.exec(["libvirtd", "--daemon", *(["--listen"] if listen else [])], env=LIBVIRT_ENV)
    deadline = time.monotonic() + 30
    while not lab.exec(["virsh", "-c", "lxc:///", "list"], check=False).ok:
        assert time.monotonic() < deadline, "libvirtd did not come back"
        time.sleep(0.1)


def test_libvirt_is_reachable_only_on_its_unix_sockets(server: dict[str, Any]) -> None:
    lab = server["lab"]
    # the test can see an open libvirt: before fjord, the far host reached it
    assert server["exposed_before"] == "open"
    resources = {c["resource"] for c in server["first_apply"]}
    assert {"file /etc/libvirt/libvirtd.conf", "file /etc/default/libvirtd",
            "service libvirtd"} <= resources
    conf = lab.exec(["cat", "/etc/libvirt/libvirtd.conf"]).stdout
    assert "listen_tcp = 0" in conf and "listen_tls = 0" in conf
    assert "--listen" not in lab.exec(["cat", "/etc/default/libvirtd"]).stdout.split("#")[0]
    assert not tcp_listeners(lab) & set(LIBVIRT_PORTS)
    # even started by hand with --listen, libvirtd now listens on no TCP port
    restart_libvirtd(lab, listen=True)
    try:
        assert not tcp_listeners(lab) & set(LIBVIRT_PORTS)
        for port in LIBVIRT_PORTS:
            assert connects(lab, PUBLIC4, port) != "open"
        sockets = lab.exec(["ss", "-Hlx"]).stdout
        assert "/run/libvirt/libvirt-sock " in sockets
    finally:
        restart_libvirtd(lab, listen=False)
    record("security.checks", 4, detail="libvirt: no TCP/TLS listener, even with --listen")


def test_no_password_login_and_own_host_keys_and_machine_ids(server: dict[str, Any]) -> None:
    lab, config = server["lab"], server["config"]
    results, failed = checks(lab, config, prefixes=("",))
    names = {r["name"]: r for r in results}
    assert not failed, failed
    for c in ("test", "web"):
        assert names[f"container {c}: password login refused"]["ok"]
    # from the Internet, through the port forward: the only method sshd offers is a key
    out = lab.far(["ssh", "-v", "-F", "/dev/null", "-p", "2222", "-o", "BatchMode=yes",
                   "-o", "PubkeyAuthentication=no", "-o",
                   "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "ConnectTimeout=5", f"root@{PUBLIC4}", "true"],
                  check=False, timeout=30)
    offered = [line for line in out.stderr.splitlines()
               if "Authentications that can continue" in line]
    assert offered and all(line.rstrip().endswith(": publickey") for line in offered), out.stderr
    assert out.returncode != 0
    keys, ids = {}, {}
    for c in ("test", "web"):
        keys[c] = fjord(lab, "container", "exec", c, "--", "cat",
                        "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
        ids[c] = fjord(lab, "container", "exec", c, "--", "cat", "/etc/machine-id").stdout.strip()
        assert len(ids[c]) == 32 and int(ids[c], 16), ids[c]
        conf = fjord(lab, "container", "exec", c, "--", "sshd", "-T").stdout.lower()
        assert "passwordauthentication no" in conf and "kbdinteractiveauthentication no" in conf
        assert "permitrootlogin without-password" in conf or \
            "permitrootlogin prohibit-password" in conf
        shadow = fjord(lab, "container", "exec", c, "--", "getent", "shadow", "root").stdout
        assert shadow.split(":")[1] in ("*", "!", "!*"), "root has a password"
    assert keys["test"] != keys["web"] and ids["test"] != ids["web"]
    record("security.checks", 5, detail="no password login; own host keys and machine-id")


def test_undeclared_container_ports_are_unreachable_from_outside(
        server: dict[str, Any]) -> None:
    lab = server["lab"]
    # the container listens on 22 (published as 192.0.2.5:2222 over IPv4) and on 8080
    # (published nowhere), on all its addresses
    fjord(lab, "container", "exec", "test", "--", "/usr/sbin/sshd", "-p", "8080",
          "-o", "PidFile=/run/sshd-8080.pid")
    # the host itself reaches both (not forwarded traffic): the listeners are there
    for host in (CT4, CT6):
        for port in (22, 8080):
            argv = [sys.executable, "-c",
                    f"import socket;socket.create_connection(({host!r},{port}),timeout=3)"]
            assert lab.exec(argv, check=False).ok, f"host -> {host}:{port}"
    # from the Internet: only the declared forward
    assert connects(lab, PUBLIC4, 2222) == "open"
    assert connects(lab, PUBLIC4, 8080) != "open"
    for port in (22, 8080):
        assert connects(lab, CT6, port) == "timeout", f"[{CT6}]:{port} from outside"
    # IPv6 echo is allowed by design (docs/firewall.md): the address is not dead
    assert lab.far(["ping", "-6", "-c1", "-W2", CT6], check=False).ok
    # a neighbour on the provider's segment routing the private network at the host
    lab.upstream(["ip", "route", "replace", "10.1.0.0/16", "via", PUBLIC4])
    try:
        probe = (f"import socket\ntry:\n socket.create_connection(({CT4!r},{{p}}),timeout=2);"
                 "print('open')\nexcept OSError as e:print(type(e).__name__)")
        for port in (22, 8080):
            out = lab.upstream([sys.executable, "-c", probe.format(p=port)], timeout=30)
            assert out.stdout.strip() != "open", f"{CT4}:{port} from the provider's segment"
    finally:
        lab.upstream(["ip", "route", "del", "10.1.0.0/16"], check=False)
    record("security.unreachable_probes", 6, detail="undeclared ports from outside")


def test_secret_files_are_private(server: dict[str, Any]) -> None:
    lab = server["lab"]
    state = fjord_state(lab)
    assert server["switchover_modes"] == {"switchover.json": "0o600"}
    problems = []
    for path in (state / "backups").iterdir():
        if path.stat().st_mode & 0o077:
            problems.append(f"{path}: {oct(path.stat().st_mode)}")
    for c in ("test", "web"):
        home = state / "containers" / c
        st = home.stat()
        # private: nobody else; an unprivileged container's own root (its range's first
        # id, the group) may only pass through to its root filesystem (libvirt starts it
        # from inside its user namespace)
        idmap = json.loads((home / "container.json").read_text()).get("idmap")
        passes = st.st_mode & 0o070 == 0o010 and idmap is not None and st.st_gid == idmap
        if st.st_mode & 0o007 or (st.st_mode & 0o070 and not passes):
            problems.append(f"{home}: {oct(st.st_mode)} group {st.st_gid}")
        for name, want in (("/etc/ssh/ssh_host_ed25519_key", "600"),
                           ("/etc/ssh/ssh_host_ecdsa_key", "600"),
                           ("/root/.ssh/authorized_keys", "600"), ("/root/.ssh", "700"),
                           ("/etc/shadow", "640")):
            mode = fjord(lab, "container", "exec", c, "--", "stat", "-c", "%a %U",
                         name).stdout.split()
            if mode != [want, "root"] and not (name == "/etc/shadow" and mode[0] in
                                               ("640", "600")):
                problems.append(f"{c}:{name}: {mode}")
    lock = state / "apply.lock"
    if lock.stat().st_mode & 0o077:
        problems.append(f"{lock}: {oct(lock.stat().st_mode)}")
    assert not problems, problems
    # no private key outside the containers' own directories and the backups
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink() and "containers" not in path.parts:
            head = path.read_bytes()[:200]
            assert b"PRIVATE KEY" not in head or path.stat().st_mode & 0o077 == 0, path
    record("security.checks", 3, detail="secret files 0600, directories 0700")


def test_apply_refuses_without_root_and_the_rest_works(server: dict[str, Any]) -> None:
    lab = server["lab"]
    config = "/etc/fjord/fjord.yaml"  # readable by nobody (pytest's directory is not)
    lab.exec(["install", "-D", "-m", "0644", server["config"], config])
    before = capture(lab)
    out = fjord(lab, "apply", "-c", config, "--yes", prefix=NOBODY, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "fjord apply needs root" in out.stderr and "sudo" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    for args in (["validate", "-c", config], ["schema"]):
        res = fjord(lab, *args, prefix=NOBODY, check=False)
        assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr
    # plan runs, and says what it could not read (exit 3, "needs root": docs/operations.md)
    for args in (["plan", "-c", config], ["plan", "-c", config, "--json"]):
        res = fjord(lab, *args, prefix=NOBODY, check=False)
        assert res.returncode == 3 and "needs root" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert json.loads(fjord(lab, "schema", prefix=NOBODY).stdout)["title"]
    for args in (["container", "destroy", "web", "--yes"], ["confirm"],
                 ["container", "stop", "web"]):
        res = fjord(lab, *args, prefix=NOBODY, check=False)
        assert res.returncode == 1 and "needs root" in res.stderr, (args, res.stderr)
    diff = differences(before, capture(lab))
    assert not diff, "\n".join(diff[:20])
    record("security.checks", 8, detail="non-root: apply/destroy/stop/confirm refused, "
           "validate/schema work, plan says what needs root")


def test_nothing_listens_that_the_file_does_not_ask_for(server: dict[str, Any]) -> None:
    """The host's own TCP listeners after apply: none of fjord's making (libvirt, OVS
    managers). (The lab's server runs no sshd of its own.)"""
    lab = server["lab"]
    listeners = tcp_listeners(lab)
    assert not listeners, f"TCP listeners on the server: {sorted(listeners)}"
