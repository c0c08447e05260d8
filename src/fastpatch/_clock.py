"""Which clock the probes read: FASTPATCH_CLOCK, read once, at ``import fastpatch``.

"auto" (the default) reads the TSC where the CPU reports it invariant *and*
the kernel itself keeps time with it; everywhere else, CLOCK_MONOTONIC.
"tsc" and "monotonic" ask for one. Each definition keeps the clock it was
first instrumented with (``Stats.clock``).
"""

from __future__ import annotations

import os

from ._native import ext


def clock() -> str:
    """The clock of definitions instrumented from now on: ``"tsc"`` or ``"monotonic"``.

    Chosen at import from FASTPATCH_CLOCK (see the README); each definition
    keeps the clock it was first instrumented with (``Stats.clock``).
    """
    return str(ext.clock_name())


def _kernel_times_with_tsc() -> bool:
    """Linux only: the kernel's own clocksource is the TSC, so CLOCK_MONOTONIC
    is derived from it and the TSC is as trustworthy as that clock."""
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as fh:
            return fh.read().strip() == "tsc"
    except OSError:
        return False


def _choose_clock(requested: str) -> None:
    """The probes' clock from FASTPATCH_CLOCK's value; a RuntimeWarning, and
    CLOCK_MONOTONIC, for a value it does not know or a TSC that is not invariant."""
    # The warning points at the user's `import fastpatch`: this function, this
    # module's body and fastpatch/__init__.py lie between (the import
    # system's own frames are not counted).
    stacklevel = 4
    if requested in ("", "auto"):
        if _kernel_times_with_tsc():
            ext.set_default_clock(True)  # stays on CLOCK_MONOTONIC if the CPU says the TSC is not invariant
    elif requested == "tsc":
        if not ext.set_default_clock(True):
            import warnings

            warnings.warn(
                "FASTPATCH_CLOCK=tsc: this CPU has no invariant TSC; using CLOCK_MONOTONIC",
                RuntimeWarning,
                stacklevel=stacklevel,
            )
    elif requested != "monotonic":
        import warnings

        warnings.warn(
            f"FASTPATCH_CLOCK={requested!r} is not a clock fastpatch knows ('auto', 'monotonic', 'tsc'); "
            "using monotonic",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


_choose_clock(os.environ.get("FASTPATCH_CLOCK", "").strip().lower())
