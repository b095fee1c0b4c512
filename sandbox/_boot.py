"""Entry point of a sandbox slot: ``python -I -S -B _boot.py``, run inside the slot.

The trusted parent sends, first thing on fd 0, the slot's own modules (``_serial``,
``_oslayers``, ``_worker``) as code objects compiled once by this same interpreter in a
separate process (``marshal``, 4-byte big-endian length first). They are run here as modules, then the
fork server starts. Why not run ``_worker.py`` as the script: a script is compiled at every
start, and compiling ~1000 lines left ~2 MB of freed parser memory in the fork server's heap
(8.6 -> 6.4 MB anonymous memory, measured); every page of that heap is copied into each
child's page tables at fork and torn down at its exit (~0.05 ms per MB per job). The slot runs
with ``-B`` on a read-only view, so it cannot cache bytecode itself, and the parent writes no
files for it.

Standard library only; reads exactly its frame from fd 0 (the fork server's frames follow).
"""
import marshal
import os
import sys


def _read_exact(n: int) -> bytes:
    chunks = []
    while n:
        b = os.read(0, n)
        if not b:
            raise SystemExit("sandbox boot: the parent closed the pipe")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    size = int.from_bytes(_read_exact(4), "big")
    for name, code in marshal.loads(_read_exact(size)):
        mod = type(sys)(name)
        mod.__file__ = os.path.join(here, name + ".py")
        sys.modules[name] = mod  # before running it: the later ones import the earlier ones
        exec(code, mod.__dict__)
    sys.modules["_worker"].main()


if __name__ == "__main__":
    main()
