"""Process trees of known CPU and memory for test_tree: run as `python tree_workload.py ROLE ...`.

- `burn CPU_S MB STAY`: hold MB MiB (written, so resident), use CPU_S of CPU, print {"cpu_s": its CPU, "pid"}; with
  STAY=1 then wait until stdin closes.
- `parent MODE CPU_S MB`: a parent of burners.
  - `alive`: two burners at once, kept alive;
  - `restart`: two, one after the other, each waited for (a supervisor restarting a child);
  - `ignore`: one that exits while the parent ignores SIGCHLD (the kernel reaps it: no reaped CPU for the parent);
  - `orphan`: one that inherits stdin and stdout; the parent exits without waiting for it once it reads a line.
  Prints {"cpu_s": its own CPU, "children": [their CPU]} once they are done (orphan: without children, the burner
  prints its own line), then (but orphan) waits until stdin closes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _burn(cpu_s: float, mb: int, stay: bool) -> None:
    held = b"x" * (mb * 2**20)
    while time.process_time() < cpu_s:
        pass
    print(json.dumps({"cpu_s": time.process_time(), "pid": os.getpid(), "held_bytes": len(held)}), flush=True)
    if stay:
        sys.stdin.read()


def _parent(mode: str, cpu_s: str, mb: str) -> None:
    burn = [sys.executable, __file__, "burn", cpu_s, mb]
    children: list[float] = []
    if mode == "alive":
        burners = [subprocess.Popen([*burn, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for _ in range(2)]
        children = [json.loads(b.stdout.readline())["cpu_s"] for b in burners if b.stdout is not None]
    elif mode == "restart":
        children = [json.loads(subprocess.run([*burn, "0"], capture_output=True, text=True, check=True).stdout)["cpu_s"]
                    for _ in range(2)]
    elif mode == "ignore":  # SIGCHLD ignored: the kernel reaps the child, the parent's cutime never grows by it
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        burner = subprocess.Popen([*burn, "0"], stdout=subprocess.PIPE, text=True)
        assert burner.stdout is not None
        children = [json.loads(burner.stdout.readline())["cpu_s"]]
        while Path(f"/proc/{burner.pid}").exists():
            time.sleep(0.01)
    else:
        subprocess.Popen([*burn, "1"])
        sys.stdin.readline()  # the test has seen the burner in the tree
        print(json.dumps({"cpu_s": time.process_time()}), flush=True)
        return
    print(json.dumps({"cpu_s": time.process_time(), "children": children}), flush=True)
    sys.stdin.read()
    if mode == "alive":
        for burner in burners:
            burner.communicate()


if __name__ == "__main__":
    if sys.argv[1] == "burn":
        _burn(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
    else:
        _parent(sys.argv[2], sys.argv[3], sys.argv[4])
