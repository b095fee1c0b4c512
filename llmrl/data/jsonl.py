"""JSON Lines files (``.jsonl`` or gzip-compressed ``.jsonl.gz``), read line by line with errors
that name the file and line: the one reader of corpora and question files."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator


def read_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; ValueError naming ``path:line`` for
    a line that is not JSON, and for a missing file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
