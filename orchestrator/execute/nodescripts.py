"""The two programs an execution node runs for us with `python -c`: the worker's watchdog, and
the cleaner that lists or ends workers left behind. Standard library only, as a node has
nothing of ours; both end process trees with core.procs' functions, shipped as source."""

from __future__ import annotations

from orchestrator.core import procs

CONTROLLER_SILENCE_S = 12.0

# Runs on the node in front of `ansible-runner worker`: passes the job through, keeps the
# channel's input open, and when that input closes while the worker still runs (the
# controller is gone), or stays silent for SILENCE seconds once the job began to arrive (the
# controller sends a newline every few seconds after the job; the worker reads nothing after
# the job's eof line, so they never reach it), ends the worker and everything below it.
_WATCHDOG = """
import ctypes, select, subprocess, sys, threading
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
me = os.getpid()
SILENCE = {silence}
worker = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE)
def end():
    kill_below(me)
    os._exit(137)
EOF = b'{"eof": true}\\n'
def pump():
    began, tail = False, b""
    while True:
        ready, _, _ = select.select([0], [], [], SILENCE if began else None)
        if not ready:
            break  # the controller fell silent
        data = os.read(0, 65536)
        if not data:
            break
        began = True
        if worker.stdin.closed:
            continue  # a heartbeat
        seen = tail + data
        at = seen.find(EOF)
        if at >= 0:  # the job is whole: what follows are heartbeats
            data = data[:at + len(EOF) - len(tail)]
        tail = seen[-len(EOF):]
        try:
            worker.stdin.write(data); worker.stdin.flush()
            if at >= 0:
                worker.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass
    if worker.poll() is None:
        end()
threading.Thread(target=pump, daemon=True).start()
code = worker.wait()
sys.exit(128 - code if code < 0 else code)
"""


def watchdog(silence: float = CONTROLLER_SILENCE_S) -> str:
    """The watchdog's program text, ending the worker after `silence` seconds of quiet."""
    return procs.script_source() + _WATCHDOG.replace("{silence}", repr(float(silence)))


def leftovers() -> str:
    """The program that lists, on a node, the workers our watchdog runs (pid and owner tag);
    with pids as arguments, it ends those watchdogs' trees instead."""
    return procs.script_source() + _LEFTOVERS


_LEFTOVERS = """
import sys
tag = sys.argv[1]
kill = {int(p) for p in sys.argv[2:]}
found = []
for n in os.listdir("/proc"):
    if not n.isdigit():
        continue
    try:
        cmd = open(f"/proc/{n}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    for arg in cmd:
        if arg.startswith(tag.encode()):
            found.append((int(n), arg.decode(errors="replace")[len(tag):]))
if not kill:
    for pid, owner in found:
        print(pid, owner)
for pid, owner in found:
    if pid in kill:
        kill_tree(pid)
        print("ended", pid, owner)
"""
