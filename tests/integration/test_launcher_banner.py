"""The banner `corral up` prints can be pasted as it is: one-line curl, the key as
$CORRAL_API_KEY when keys are on, aliases among the models; the answer names the alias."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from launcher_helpers import Stack

from support import free_port

KEYS_VAR = "CORRAL_TEST_BANNER_KEYS"


def test_banner_commands_paste_and_run_with_the_key_and_alias(tmp_path: Path, stacks: list[Stack]) -> None:
    body = (
        f"[registry]\nport = {free_port()}\n"
        f'[router]\nport = {free_port()}\napi_keys_env = "{KEYS_VAR}"\naliases = {{ "gpt-alias" = "m" }}\n'
        f'[[backend]]\nname = "chat"\npreset = "mock"\nmodels = ["m"]\nport = {free_port()}\n'
    )
    s = Stack(tmp_path, body, env={KEYS_VAR: "k-1,k-2"})
    stacks.append(s)
    out = s.up().stdout
    lines = out.splitlines()
    router = next(ln for ln in lines if ln.startswith("router "))
    assert "models: m, gpt-alias" in router
    curl = next(ln.strip() for ln in lines if ln.strip().startswith("curl "))
    assert '-H "Authorization: Bearer $CORRAL_API_KEY"' in curl and not curl.endswith("\\")
    assert 'api_key="none"' not in out and 'api_key=os.environ["CORRAL_API_KEY"]' in out
    env = {**os.environ, "CORRAL_API_KEY": "k-2"}
    answer = json.loads(subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True).stdout)
    assert answer["choices"][0]["message"]["content"]

    # The Python lines, pasted into a file: they run as they are, and name the model asked for.
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "import os")
    snippet = "\n".join(ln.strip() for ln in lines[start:] if ln.strip())
    snippet = snippet.replace('model="m"', 'model="gpt-alias"') + "\nprint(r.model)\n"
    run = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "gpt-alias"
