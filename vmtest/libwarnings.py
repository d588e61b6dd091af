"""Warnings the database and numeric libraries raise while vmtest reads and writes stores.

vmtest runs inside other people's pytest configurations, many of which turn every warning into
an error (``filterwarnings = error``, ``-W error``). A library that warns ("Local mode is not
recommended for collections with more than 20,000 points") must not turn a check into an ERROR
or a local folder into "cannot reach the server": :func:`captured` records such warnings for
the reports instead, where a person reads them beside the verdict.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


def describe(warning: warnings.WarningMessage) -> str:
    """One line: the category, the first line of the message, where it came from."""
    text = str(warning.message).strip().splitlines()[0] if str(warning.message).strip() else ""
    return f"{warning.category.__name__}: {text} ({warning.filename}:{warning.lineno})"


@contextlib.contextmanager
def captured(sink: list[str]) -> Iterator[None]:
    """Record every warning raised inside the block into ``sink`` (once per distinct line),
    whatever the warning filters in force say."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                line = describe(warning)
                if line not in sink:
                    sink.append(line)
