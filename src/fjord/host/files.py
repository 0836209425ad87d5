"""Files fjord owns: written atomically with owner and mode, shown as a unified diff in
the plan, and the previous version backed up before it is replaced."""

from __future__ import annotations

import difflib
import os
import pwd
import time
from pathlib import Path

from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.state import atomic_write, state_dir

BACKUPS = "backups"


def backup_path(path: Path, stamp: str | None = None) -> Path:
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    flat = str(path).strip("/").replace("/", "%")
    return state_dir() / BACKUPS / f"{flat}.{stamp}"


def unified_diff(path: Path, old: bytes | None, new: bytes | None) -> str:
    def lines(data: bytes | None) -> list[str]:
        if data is None:
            return []
        try:
            return data.decode().splitlines(keepends=True)
        except UnicodeDecodeError:
            return ["(binary)\n"]

    diff = difflib.unified_diff(
        lines(old), lines(new),
        fromfile=str(path) if old is not None else "/dev/null",
        tofile=str(path) if new is not None else "/dev/null",
    )
    return "".join(d if d.endswith("\n") else d + "\n" for d in diff)


class File(Resource):
    """A whole file with fixed content. ``ensure='absent'`` removes it."""

    kind = "file"

    def __init__(self, path: str | Path, content: str | bytes | None, *, mode: int = 0o644,
                 owner: str = "root", ensure: str = "present", reason: str = "",
                 after: tuple[Reference, ...] = ()) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        self.content = content.encode() if isinstance(content, str) else content
        self.mode = mode
        self.owner = owner
        self.ensure = ensure
        self.reason = reason
        self.after = after

    def _read(self) -> tuple[bytes | None, int | None, int | None]:
        try:
            st = self.path.stat()
            return self.path.read_bytes(), st.st_mode & 0o7777, st.st_uid
        except FileNotFoundError:
            return None, None, None

    def changes(self, ctx: Context) -> list[Change]:
        old, mode, uid = self._read()
        if self.ensure == "absent":
            if old is None:
                return []
            return [Change(self.id, "delete", f"remove {self.path}", self._remove,
                           diff=unified_diff(self.path, old, None))]
        assert self.content is not None
        want_uid = pwd.getpwnam(self.owner).pw_uid
        what = f" ({self.reason})" if self.reason else ""
        if old is None:
            return [Change(self.id, "create", f"write {self.path}{what}", self._write,
                           diff=unified_diff(self.path, None, self.content))]
        if old != self.content:
            return [Change(self.id, "update", f"rewrite {self.path}{what}", self._write,
                           diff=unified_diff(self.path, old, self.content))]
        if mode != self.mode or uid != want_uid:
            return [Change(self.id, "update",
                           f"set {self.path} to {self.owner} mode {self.mode:04o}"
                           f" (is uid {uid} mode {mode or 0:04o})", self._chmod)]
        return []

    def unchanged_reason(self, ctx: Context) -> str:
        return f"{self.path} has the declared content"

    def _backup(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        # One name per second: a second version within the same second (two applies in
        # a row, a script) must not overwrite the first one's backup (the original).
        first = dest = backup_path(self.path)
        n = 1
        while dest.exists():
            dest = first.with_name(f"{first.name}.{n}")
            n += 1
        atomic_write(dest, data, 0o600)

    def _write(self, ctx: Context) -> None:
        assert self.content is not None
        self._backup()
        atomic_write(self.path, self.content, self.mode)
        self._chown()

    def _chmod(self, ctx: Context) -> None:
        os.chmod(self.path, self.mode)
        self._chown()

    def _chown(self) -> None:
        pw = pwd.getpwnam(self.owner)
        os.chown(self.path, pw.pw_uid, pw.pw_gid)

    def _remove(self, ctx: Context) -> None:
        self._backup()
        self.path.unlink(missing_ok=True)
