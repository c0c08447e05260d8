"""Type stub of fastpatch._signals (src/fastpatch/_signals.c): a signal's default action, from any thread."""

def restore_default(signum: int, /) -> None:
    """Give the signal its default action (SIG_DFL), from any thread."""
