"""`fjord container exec`: a command in a running container, its input and output
relayed by fjord, so that no descriptor of the operator's (the terminal above all) is
ever inside the container.

With a terminal on standard input and output, fjord makes a new pseudo-terminal: the
command gets its slave side (as its controlling terminal), fjord keeps the master side
on the host, puts the operator's terminal in raw mode while it copies bytes both ways
(restored on every way out), and passes the window size on (and again on SIGWINCH).
Otherwise standard input, output and error are three fresh pipes fjord copies to and
from its own, so scripts keep their input, output and exit status. A tenant that opens
/proc/PID/fd/0 of the command finds fjord's pseudo-terminal or a pipe: a character
pushed back with TIOCSTI lands in the command's own input, never in the operator's
shell. The entering itself (cgroups, namespaces, capabilities) is
:mod:`fjord.containers.nsexec`'s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import subprocess
import termios
import tty
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType

from fjord.containers.nsexec import helper_argv

CHUNK = 65536
# after the command ended, how long output still arriving from the pseudo-terminal is
# waited for (the kernel hands a pty's bytes over asynchronously); a background process
# of the command's that keeps the terminal open does not hold fjord longer than this
PTY_LINGER = 0.2
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)


def wants_tty(stdin: int = 0, stdout: int = 1) -> bool:
    return os.isatty(stdin) and os.isatty(stdout)


def _winsize(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    """The operator's terminal in raw mode (keys go to the command as they are typed,
    Ctrl-C included), restored however the block ends."""
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


@contextlib.contextmanager
def _signals(handlers: Mapping[int, object]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}  # type: ignore[arg-type]
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


class _Sink:
    """A non-blocking destination with what could not be written yet."""

    def __init__(self, fd: int) -> None:
        self.fd, self.pending = fd, b""
        os.set_blocking(fd, False)


class Relay:
    """Copies bytes between fjord's descriptors and the command's until it ends."""

    def __init__(self, proc: subprocess.Popen[bytes], pairs: Sequence[tuple[int, int]],
                 to_command: tuple[int, int] | None, master: int | None) -> None:
        # pairs: (read from the command, write to fjord's); to_command: (fjord's stdin,
        # the command's input); master: the pseudo-terminal (reads give EIO at the end)
        self.proc, self.master = proc, master
        self.sel = selectors.PollSelector()  # poll: a regular file as stdin works too
        self.outputs = dict(pairs)
        for src, _ in pairs:
            os.set_blocking(src, False)
            self.sel.register(src, selectors.EVENT_READ, "out")
        self.sink: _Sink | None = None
        self.stdin: int | None = None
        if to_command is not None:
            self.stdin, command_in = to_command
            self.sink = _Sink(command_in)
            try:
                self.sel.register(self.stdin, selectors.EVENT_READ, "in")
            except (OSError, ValueError):  # fjord's stdin closed
                self.stdin = None
                self._end_input()
        self.pidfd = os.pidfd_open(proc.pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")

    def _end_input(self) -> None:
        """fjord's input is at its end: so is the command's (a pipe: close it)."""
        self._stop_stdin()
        if self.sink is not None and not self.sink.pending and self.master is None:
            self._close_sink()

    def _stop_stdin(self) -> None:
        if self.stdin is not None:
            with contextlib.suppress(KeyError, ValueError):  # paused: not registered
                self.sel.unregister(self.stdin)
            self.stdin = None

    def _pace_stdin(self) -> None:
        """Read fjord's input only while the command takes what was read (a command
        that does not read does not make fjord hold a whole file in memory)."""
        if self.stdin is None or self.sink is None:
            return
        registered = self.stdin in self.sel.get_map()
        if self.sink.pending and registered:
            self.sel.unregister(self.stdin)
        elif not self.sink.pending and not registered:
            self.sel.register(self.stdin, selectors.EVENT_READ, "in")

    def _close_sink(self) -> None:
        assert self.sink is not None
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.sink.fd)
        os.close(self.sink.fd)
        self.sink = None

    def _read_stdin(self) -> None:
        assert self.stdin is not None and self.sink is not None
        try:
            data = os.read(self.stdin, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._end_input()
            return
        self.sink.pending += data
        self._flush()

    def _flush(self) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            while sink.pending:
                n = os.write(sink.fd, sink.pending)
                sink.pending = sink.pending[n:]
        except BlockingIOError:
            pass
        except OSError:  # the command stopped reading (EPIPE) or ended (EIO)
            sink.pending = b""
            if sink.fd != self.master:
                self._stop_stdin()
                self._close_sink()
            return
        self._pace_stdin()
        # EVENT_WRITE only while something waits
        if sink.fd == self.master:
            if sink.fd in self.sel.get_map():
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sink.pending else 0)
                self.sel.modify(sink.fd, events, "out")
        elif sink.pending:
            with contextlib.suppress(KeyError):
                self.sel.register(sink.fd, selectors.EVENT_WRITE, "write")
        else:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(sink.fd)
            if self.stdin is None:
                self._close_sink()

    def _read_output(self, src: int) -> bool:
        """Copy what ``src`` has; False at its end."""
        try:
            data = os.read(src, CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # EIO: every slave side of the pseudo-terminal is closed
            data = b""
        if not data:
            self.sel.unregister(src)
            del self.outputs[src]
            if src != self.master:
                os.close(src)
            return False
        dst = self.outputs[src]
        try:
            while data:
                data = data[os.write(dst, data):]
        except BlockingIOError:
            # fjord's own output is non-blocking (shared with the caller): wait for it
            os.set_blocking(dst, True)
            while data:
                data = data[os.write(dst, data):]
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            # whoever reads fjord's output stopped: so must the command's writes
            self.sel.unregister(src)
            del self.outputs[src]
            if src != self.master:
                os.close(src)
            return False
        return True

    def run(self) -> int:
        ended = False
        while self.outputs or not ended:
            if ended:
                # the command ended: collect what is still there, then stop
                events = self.sel.select(PTY_LINGER if self.master in self.outputs else 0)
                if not events:
                    break
            else:
                events = self.sel.select()
            for key, mask in events:
                if key.data == "exit":
                    ended = True
                    self.sel.unregister(self.pidfd)
                    self._stop_stdin()
                    if self.sink is not None and self.sink.fd != self.master:
                        self._close_sink()
                elif key.data == "in":
                    self._read_stdin()
                elif key.data == "write" or (key.data == "out" and mask & selectors.EVENT_WRITE):
                    self._flush()
                    if key.data == "out" and mask & selectors.EVENT_READ:
                        self._read_output(key.fd)
                else:
                    self._read_output(key.fd)
        os.close(self.pidfd)
        for src in list(self.outputs):
            if src != self.master:
                os.close(src)
        return self.proc.wait()


def run(pid: int, argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``argv`` in the container whose init is ``pid``; its exit status."""
    use_tty = wants_tty()
    if use_tty:
        return _run_tty(pid, argv, env)
    return _run_pipes(pid, argv, env)


def _forwarding(proc: subprocess.Popen[bytes]) -> dict[int, object]:
    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    return {sig: forward for sig in FORWARDED}


def _run_pipes(pid: int, argv: Sequence[str], env: Mapping[str, str]) -> int:
    proc = subprocess.Popen(helper_argv(pid, argv), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env),
                            cwd="/", close_fds=True, start_new_session=True)
    assert proc.stdin and proc.stdout and proc.stderr
    fds = (proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno())
    # the fds are the relay's from now on (closed by it)
    command_in, out, err = (os.dup(fd) for fd in fds)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    proc.stdin = proc.stdout = proc.stderr = None
    with _signals(_forwarding(proc)):
        return Relay(proc, [(out, 1), (err, 2)], (0, command_in), None).run()


def _run_tty(pid: int, argv: Sequence[str], env: Mapping[str, str]) -> int:
    master, slave = os.openpty()
    try:
        _winsize(0, slave)
        err_pipe = None if os.isatty(2) else os.pipe()
        stderr = slave if err_pipe is None else err_pipe[1]
        try:
            proc = subprocess.Popen(helper_argv(pid, argv, tty=True), stdin=slave,
                                    stdout=slave, stderr=stderr, env=dict(env), cwd="/",
                                    close_fds=True, start_new_session=True)
        finally:
            if err_pipe is not None:
                os.close(err_pipe[1])
    finally:
        os.close(slave)
    pairs = [(master, 1)] + ([(err_pipe[0], 2)] if err_pipe is not None else [])

    def resized(signum: int, frame: FrameType | None) -> None:
        _winsize(0, master)

    try:
        with raw(0), _signals({**_forwarding(proc), signal.SIGWINCH: resized}):
            relay = Relay(proc, pairs, (0, master), master)
            return relay.run()
    finally:
        os.close(master)
