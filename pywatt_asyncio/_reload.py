"""``--reload``: notice edited source files by polling (standard library only).

:class:`FileWatcher` keeps the modification time and size of every watched file; each
:meth:`FileWatcher.changed` call rescans and returns the paths that appeared, vanished or
changed since the previous call. A directory is walked for source files (hidden
directories, ``__pycache__``, virtual environments and ``node_modules`` are skipped); a
file is watched as named. Polling costs one ``stat`` per file per interval, so the walk
stops at :data:`MAX_WATCHED_FILES` files (a warning says so) instead of growing without
bound in a huge tree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Final

_log = logging.getLogger("pywatt.reload")

#: Seconds between two scans.
POLL_INTERVAL: Final = 0.5
#: Files one watcher stats per scan (a development tree has far fewer; a scan of 5,000
#: files takes a few milliseconds).
MAX_WATCHED_FILES: Final = 5000
#: Files found by walking a directory: source and configuration a module loads.
SOURCE_SUFFIXES: Final = frozenset(
    {".py", ".toml", ".json", ".yaml", ".yml", ".ini", ".cfg", ".env", ".html", ".txt"}
)
_SKIP_DIRS: Final = frozenset(
    {"__pycache__", "node_modules", "site-packages", "venv", "target", "build", "dist"}
)

_Stamp = tuple[int, int]


class FileWatcher:
    """Polls ``roots`` (files and directories) for changes; see the module docstring."""

    def __init__(self, roots: Iterable[str]) -> None:
        self._roots = tuple(os.path.abspath(r) for r in roots)
        self._warned = False
        self._stamps = self._scan()

    def _files(self) -> Iterable[str]:
        for root in self._roots:
            if not os.path.isdir(root):
                yield root
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
                for name in filenames:
                    if os.path.splitext(name)[1] in SOURCE_SUFFIXES:
                        yield os.path.join(dirpath, name)

    def _scan(self) -> dict[str, _Stamp]:
        stamps: dict[str, _Stamp] = {}
        for path in self._files():
            if len(stamps) >= MAX_WATCHED_FILES:
                if not self._warned:
                    self._warned = True
                    _log.warning(
                        "--reload watches only the first %d files of %s",
                        MAX_WATCHED_FILES,
                        ", ".join(self._roots),
                    )
                break
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamps[path] = (st.st_mtime_ns, st.st_size)
        return stamps

    def changed(self) -> list[str]:
        """Rescan; return the paths changed, added or removed since the last call (sorted)."""
        fresh = self._scan()
        old = self._stamps
        self._stamps = fresh
        diff = {p for p, s in fresh.items() if old.get(p) != s}
        diff.update(p for p in old if p not in fresh)
        return sorted(diff)
