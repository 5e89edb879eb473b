"""Runs inside a fresh mount namespace (started under `unshare --mount --propagation private`):
bind-mounts the pod's volumes at their mount paths, then execs the container's command.

The spec file is written by the node agent; the exec replaces this process, so the PID the agent holds
is the container's own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _mount(source: str, target: str, read_only: bool) -> None:
    src, tgt = Path(source), Path(target)
    if src.is_dir():
        tgt.mkdir(parents=True, exist_ok=True)
    else:
        tgt.parent.mkdir(parents=True, exist_ok=True)
        if not tgt.exists():
            # Mount point stub: bind mounts need an existing target of the same kind.
            tgt.touch()
    subprocess.run(["mount", "--bind", source, target], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    termination_log = spec.get("terminationLog")
    try:
        # Parents before children, so a mount inside another mount's path lands on top of it.
        for m in sorted(spec["mounts"], key=lambda m: len(Path(m["target"]).parts)):
            _mount(m["source"], m["target"], bool(m.get("readOnly")))
        os.chdir(spec["cwd"])
        argv: list[str] = spec["argv"]
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 (argv from the pod spec, no shell)
    except (OSError, subprocess.CalledProcessError) as exc:
        message = f"container start failed: {exc}"
        print(message, file=sys.stderr, flush=True)
        if termination_log:
            Path(termination_log).write_text(message)
        return 128
    return 0  # unreachable: exec does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
