"""Runs inside a fresh mount namespace (started under `unshare --mount --uts --propagation private`):
bind-mounts the pod's volumes at their mount paths, then execs the container's command.

The spec file is written by the node agent; the exec replaces this process, so the PID the agent holds
is the container's own process.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 1, 32, 4096


def _sys_mount(source: str | None, target: str, flags: int) -> None:
    # mount(2) directly: mount(8) would canonicalise /proc/self/fd/N into a path, and that path may by
    # now resolve inside a volume mounted earlier.
    src = source.encode() if source else None
    if _libc.mount(src, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _mount(source_fd: int, source_is_dir: bool, target: str, read_only: bool) -> None:
    tgt = Path(target)
    if source_is_dir:
        tgt.mkdir(parents=True, exist_ok=True)
    else:
        tgt.parent.mkdir(parents=True, exist_ok=True)
        if not tgt.exists():
            # Mount point stub: bind mounts need an existing target of the same kind.
            tgt.touch()
    _sys_mount(f"/proc/self/fd/{source_fd}", target, _MS_BIND)
    if read_only:
        _sys_mount(None, target, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    # Open everything on the host side first: a mount at /tmp would otherwise hide sources (and the
    # termination log) that live under the host's /tmp from the steps after it.
    term_fd = os.open(spec["terminationLog"], os.O_WRONLY | os.O_APPEND)
    try:
        mounts = sorted(spec["mounts"], key=lambda m: len(Path(m["target"]).parts))
        pinned = [(os.open(m["source"], os.O_PATH), Path(m["source"]).is_dir()) for m in mounts]
        # Host paths the process needs (the repo and its venv, which run the container's command) must
        # stay visible even when a volume is mounted over a parent, e.g. an emptyDir at /tmp while the
        # checkout lives under /tmp.
        keep = [(path, os.open(path, os.O_PATH)) for path in spec.get("keep", []) if Path(path).exists()]
        # Parents before children, so a mount inside another mount's path lands on top of it.
        for m, (fd, is_dir) in zip(mounts, pinned, strict=True):
            _mount(fd, is_dir, m["target"], bool(m.get("readOnly")))
            os.close(fd)
        for path, fd in keep:
            seen, wanted = (Path(path).stat() if Path(path).exists() else None), os.fstat(fd)
            if seen is None or (seen.st_dev, seen.st_ino) != (wanted.st_dev, wanted.st_ino):
                _mount(fd, True, path, False)
            os.close(fd)
        socket.sethostname(spec["hostname"])  # own UTS namespace: the pod's name, as in a container
        os.chdir(spec["cwd"])
        argv: list[str] = spec["argv"]
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 (argv from the pod spec, no shell)
    except OSError as exc:
        message = f"container start failed: {exc}"
        print(message, file=sys.stderr, flush=True)
        os.write(term_fd, message.encode())
        return 128
    return 0  # unreachable: exec does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
