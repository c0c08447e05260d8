"""fastpatch's zero-code activation, run at interpreter startup.

``fastpatch.pth`` (site-packages) calls ``start()`` only when
``FASTPATCH_INCLUDE`` is set, so an interpreter that does not ask for
fastpatch never imports it; on Python 3.15+, whose site module runs the
``pkg.mod:callable`` entry points of ``fastpatch.start`` instead of
``.pth`` import lines, ``start()`` is called at every startup and returns
at once unless ``FASTPATCH_INCLUDE`` is set. This module imports nothing
but ``os`` (already loaded by then), and touches no ``sitecustomize``.
"""

import os


def start() -> None:
    """Activate fastpatch from the ``FASTPATCH_*`` environment variables."""
    if not os.environ.get("FASTPATCH_INCLUDE", "").strip():
        return
    if os.environ.get("FASTPATCH_ENABLED", "").strip() == "0":
        return
    try:
        from fastpatch._activate import activate_from_environment

        activate_from_environment()
    except Exception as exc:  # noqa: BLE001 - never stop the program from starting
        import sys

        sys.stderr.write(f"fastpatch: not activated: {type(exc).__name__}: {exc}\n")
