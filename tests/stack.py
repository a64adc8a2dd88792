"""`sdctl stack up` for tests: started on free ports, its output drained and kept, stopped on request."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import stack_port_offset

BIN = Path(sys.executable).parent
READY = "Scale Diffusion is up:"


@dataclass
class RunningStack:
    """A local stack started by a test: its port offset, gateway URL, state folder and output so far."""

    proc: subprocess.Popen
    offset: int
    url: str
    state: Path
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60) -> int:
        """Sends `sig` (Ctrl-C by default), waits for the stack to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(10)
        return self.proc.returncode


def start_stack(state: Path, env: dict[str, str] | Callable[[int], dict[str, str]] | None = None,
                timeout_s: float = 120, attempts: int = 5) -> RunningStack:
    """Starts a stack in `state` and returns once every service is healthy.

    `env` is the stack's environment, or a function of the port offset that returns it (for settings
    that name the stack's own ports, such as a second processor beside the stack's).
    The stack's output is read on a thread for its whole life (a full pipe would block the services).
    A port taken between choosing the offset and binding it means another try on another offset.
    """
    for _ in range(attempts):
        offset = stack_port_offset()
        proc = subprocess.Popen([str(BIN / "sdctl"), "stack", "up", "--state-dir", str(state),
                                 "--port-offset", str(offset)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env(offset) if callable(env) else env)
        stack = RunningStack(proc, offset, "", state)
        ready = threading.Event()

        def read(stack: RunningStack = stack, ready: threading.Event = ready) -> None:
            for line in stack.proc.stdout:
                stack.lines.append(line)
                if line.startswith(READY):
                    stack.url = line.split(": ", 1)[1].strip()
                    ready.set()
            ready.set()  # the stack exited

        stack._reader = threading.Thread(target=read, daemon=True)
        stack._reader.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.2) and time.monotonic() < deadline:
            pass
        if stack.url:
            return stack
        stack.stop(signal.SIGKILL)
        if "ports already in use" not in stack.output:
            raise AssertionError("the stack did not come up:\n" + stack.output)
    raise AssertionError(f"no free port offset for a stack after {attempts} tries")
