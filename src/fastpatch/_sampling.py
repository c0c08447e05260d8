"""Sampling rates: the one check every entry point (``instrument``, the bulk
functions, the import hook, ``run --sample``, ``FASTPATCH_SAMPLE``) makes
before anything is patched. Light on purpose: the activation reads
``FASTPATCH_SAMPLE`` before it loads the splicer or the registry."""

from __future__ import annotations

from ._native import ext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


def check_sample(sample: object, what: str = "sample") -> Optional[int]:
    """``sample`` if it is None or a sampling rate (1 exact, N >= 2 one call
    in N timed, 0 count-only); else TypeError or ValueError, one line that
    names ``what`` (``"sample"``, ``"--sample"``, ``"FASTPATCH_SAMPLE"``)."""
    if sample is None:
        return None
    if isinstance(sample, bool) or not isinstance(sample, int):
        raise TypeError(f"{what} must be an int (1 exact, N >= 2 one call in N, 0 count only), "
                        f"not {type(sample).__name__}")
    if not 0 <= sample <= ext.MAX_SAMPLE:
        raise ValueError(f"{what} must be 1 (exact timing), N from 2 to {ext.MAX_SAMPLE} (time one call in N) "
                         f"or 0 (count only), not {sample!r}")
    return sample


def sample_from_text(text: str, what: str) -> int:
    """The sampling rate ``text`` spells (blanks around it allowed); else
    ValueError, one line that names ``what`` (``"--sample"``,
    ``"FASTPATCH_SAMPLE"``)."""
    try:
        sample = check_sample(int(text.strip()), what)
    except ValueError as exc:
        if text.strip().lstrip("-").isdigit():
            raise
        raise ValueError(f"{what} must be an integer, not {text!r}") from exc
    assert sample is not None
    return sample
