"""Prints some lines, then exits with a code after a delay: crash -> restart tests."""

import sys
import time

code = int(sys.argv[1]) if len(sys.argv) > 1 else 1
after = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
for i in range(3):
    print(f"line {i} of a process about to exit {code}", flush=True)
print("boom: the last words", file=sys.stderr, flush=True)
time.sleep(after)
sys.exit(code)
