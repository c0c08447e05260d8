"""fastpatch's zero-code activation, run at interpreter startup.

``fastpatch.pth`` (site-packages) calls ``start()`` only when
``FASTPATCH_INCLUDE`` is set, so an interpreter that does not ask for
fastpatch never imports it. From Python 3.18, whose site module ignores
``.pth`` import lines (PEP 829), the wheel ships ``fastpatch.start``
instead, whose ``pkg.mod:callable`` entry point calls ``start()`` at every
startup; it returns at once unless ``FASTPATCH_INCLUDE`` is set. (Before
3.18 the wheel leaves the .start file out: its mere presence makes the site
module import pkgutil and re at every startup.) This module imports
nothing but ``os`` and ``sys`` (both loaded by then), and touches no
``sitecustomize``.
"""

import os
import sys


def start() -> None:
    """Activate fastpatch from the ``FASTPATCH_*`` environment variables,
    unless the interpreter ignores its environment (``-E``, ``-I``)."""
    # The gate of every activation from the environment: FASTPATCH_INCLUDE,
    # and whatever else comes to switch fastpatch on from a variable
    # (FASTPATCH_TELEMETRY) must be read behind it. `python -E` and `-I` say
    # that the caller's environment must not steer this process; -I is for
    # programs that must not be steered by their caller. An explicit call
    # (instrument, install_import_hook, `python -m fastpatch run`) is not
    # the environment, and works under them.
    if sys.flags.ignore_environment:
        return
    if not os.environ.get("FASTPATCH_INCLUDE", "").strip():
        return
    if os.environ.get("FASTPATCH_ENABLED", "").strip() == "0":
        return
    try:
        from fastpatch._activate import activate_from_environment

        activate_from_environment()
    except Exception as exc:  # noqa: BLE001 - never stop the program from starting
        sys.stderr.write(f"fastpatch: not activated: {type(exc).__name__}: {exc}\n")
