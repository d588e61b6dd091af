"""Query vectors from a file: ``.npy`` (a 2-D array), ``.jsonl`` (one vector a line, as a
list or as ``{"vector": [...]}``) or ``.parquet`` (a ``vector`` column)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vmtest.errors import ConfigError


def load_query_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise ConfigError(f"--vmtest-query-file={path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            vectors = np.load(path, allow_pickle=False)
        elif suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        item = json.loads(line)
                        rows.append(item["vector"] if isinstance(item, dict) else item)
            vectors = np.asarray(rows, dtype=np.float32)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            vectors = np.asarray(pq.read_table(path, columns=["vector"])
                                 .column("vector").to_pylist(), dtype=np.float32)
        else:
            raise ConfigError(f"--vmtest-query-file={path}: use a .npy, .jsonl or .parquet file")
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--vmtest-query-file={path} could not be read as query vectors: {exc}") \
            from exc
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise ConfigError(f"--vmtest-query-file={path} must hold a non-empty list of vectors")
    return vectors
