"""Prints `EXIT_AT <time.time()>` as its last words and exits 1 after argv[1] seconds."""

import sys
import time

time.sleep(float(sys.argv[1]))
print(f"EXIT_AT {time.time()}", flush=True)
sys.exit(1)
