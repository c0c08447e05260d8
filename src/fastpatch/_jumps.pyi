"""Type stub of fastpatch._jumps (src/fastpatch/_jumps.c): the debugger-jump guard."""

def install(probe_type: type, dialect: object, /) -> bool:
    """Guard frame.f_lineno in this interpreter, for code that carries a probe
    of ``probe_type``, whose entry the running ``_recipes.Dialect`` describes;
    True if it was not guarded yet."""
