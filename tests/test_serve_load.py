"""benchmarks/serve_load.py leaves no server behind: stopped (with its whole process group) on SIGTERM, SIGINT and
SIGHUP, and killed by the kernel with the benchmark when the benchmark itself is killed outright.

A stand-in server (a few lines of http.server that also starts a child of its own, as ``--workers`` does) keeps these
tests to about a second each: what is tested is the launching and the cleanup, not the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

STAND_IN = """
import http.server, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a worker of the server, in its group
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""

DRIVER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import serve_load
server = serve_load.Server("stand-in", [sys.executable, "-c", sys.argv[2], "{port}"], {}, Path(sys.argv[3]))


def children(pid):
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


with serve_load.stopped_on_exit([server]):
    server.start(timeout_s=60)
    deadline = time.monotonic() + 30
    while not children(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps([server.process.pid, *children(server.process.pid)]), flush=True)
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an exited child its new parent has not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_no_server_outlives_the_benchmark(signum, tmp_path):
    command = [sys.executable, "-c", DRIVER, str(BENCHMARKS), STAND_IN, str(tmp_path / "server.log")]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    group: list[int] = []
    try:
        line = driver.stdout.readline()
        assert line, driver.stderr.read()
        group = json.loads(line)  # the stand-in server (its process group's leader) and its child
        assert len(group) == 2 and all(alive(pid) for pid in group)
        driver.send_signal(signum)
        driver.wait(30)
        if signum == signal.SIGKILL:
            # no handler runs: the kernel kills the server itself (PR_SET_PDEATHSIG); its own child is its business
            assert wait_gone(group[:1]) == []
        else:
            assert wait_gone(group) == []  # SIGTERM to the whole group, then SIGKILL for what is left
            assert driver.returncode == 128 + signum  # stopped through the handler, not by the signal's default
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
