"""Type stub of fastpatch._jumps (src/fastpatch/_jumps.c): the debugger-jump guard."""

def install() -> bool:
    """Guard frame.f_lineno in this interpreter; True if it was not guarded yet."""
