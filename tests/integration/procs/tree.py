"""Builds a process tree that ignores SIGTERM: a child in our group and a grandchild that
escaped into its own session (setsid). Writes every PID (one per line) to argv[1], then sleeps."""

import os
import signal
import sys
import time

pids_file = sys.argv[1]
signal.signal(signal.SIGTERM, signal.SIG_IGN)


def linger() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(60)


r, w = os.pipe()
if os.fork() == 0:  # child: stays in our process group, forks the escaping grandchild
    os.close(r)
    if os.fork() == 0:
        os.setsid()
        os.write(w, f"{os.getpid()}\n".encode())
        os.close(w)
        linger()
    os.write(w, f"{os.getpid()}\n".encode())
    os.close(w)
    linger()
os.close(w)
got = b""
while got.count(b"\n") < 2:
    chunk = os.read(r, 100)
    if not chunk:
        break
    got += chunk
with open(pids_file + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n{got.decode()}")
os.replace(pids_file + ".tmp", pids_file)
print("tree ready", flush=True)
linger()
