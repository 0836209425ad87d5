"""The programs fjord writes for its containers, kept here as package data (the files
next to this module), not as text in Python strings. What runs where:

- ``lxc-hook.sh``: on the host, as ``/etc/libvirt/hooks/lxc.d/50-fjord``; libvirtd runs
  it at every start and stop of every LXC domain (:func:`fjord.containers.hook.
  hook_script`; it hands fjord's own containers to that module's ``main``).
- ``fjord-init.sh``: in each container's root, as ``/usr/local/sbin/fjord-init``, the
  domain's init: PID 1 before systemd, it gives the container a cgroup namespace and
  lxcfs's /proc files (:func:`fjord.containers.limits.init_script`).
- ``fjord-seccomp.pl``: in each container's root, as
  ``/usr/local/lib/fjord/fjord-seccomp``; fjord-init execs it as PID 1 last: it drops
  capabilities, installs the syscall filter and becomes /sbin/init
  (:func:`fjord.containers.sandbox.loader_script`).

Each file is a template: ``@NAME@`` (capitals, digits, underscores) is replaced by a
value fjord fills in (a path, a number, a fixed code fragment), and nothing else in it
is touched. :func:`render` takes values that are already safe for the place they go:
:func:`shell_word` quotes one for the shell, :func:`safe_path` refuses a path that
would need quoting (for the places inside double quotes or comments where a quoted word
would be wrong). A placeholder without a value, or a value without a placeholder, is an
error: a template and its caller cannot drift apart silently.

The modules named above own what each program does and why; the unit tests render each
one against golden files (tests/unit/golden/containers/guest) and check its syntax
(``sh -n``, ``perl -c``).
"""

from __future__ import annotations

import re
import shlex
from importlib.resources import files

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+-]+")
_SAFE_WORD = re.compile(r"[A-Za-z0-9_./+-]+")

NAMES = ("lxc-hook.sh", "fjord-init.sh", "fjord-seccomp.pl")


def template(name: str) -> str:
    """The text of guest program ``name`` (one of :data:`NAMES`), placeholders unfilled."""
    if name not in NAMES:
        raise ValueError(f"no guest program {name!r}")
    return (files(__name__) / name).read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """Guest program ``name`` with every ``@KEY@`` replaced by ``values[key]`` (keys
    in lower case). The values are put in as given: quote or check them first."""
    text = template(name)
    wanted = {m.lower() for m in PLACEHOLDER.findall(text)}
    if wanted != set(values):
        missing, extra = sorted(wanted - set(values)), sorted(set(values) - wanted)
        raise ValueError(f"{name}: values missing {missing}, not in the template {extra}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1).lower()], text)


def shell_word(value: str) -> str:
    """One shell word that stands for ``value`` (shlex.quote: unchanged when it needs
    no quoting)."""
    return shlex.quote(value)


def safe_path(value: str) -> str:
    """``value``, an absolute path that needs no quoting anywhere in a shell or perl
    script (letters, digits and ``_./+-``); anything else is refused."""
    if not _SAFE_PATH.fullmatch(value):
        raise ValueError(f"{value!r} cannot be written into a guest script unquoted")
    return value


def safe_words(values: list[str], sep: str = " ") -> str:
    """Words that need no quoting (letters, digits and ``_./+-``), joined by ``sep``."""
    for value in values:
        if not _SAFE_WORD.fullmatch(value):
            raise ValueError(f"{value!r} cannot be written into a guest script unquoted")
    return sep.join(values)
