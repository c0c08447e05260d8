"""``python -m fastpatch``: see ``fastpatch._cli``."""

from __future__ import annotations

from fastpatch._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
