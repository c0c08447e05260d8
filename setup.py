"""Only the C extension lives here; all other metadata is in pyproject.toml."""

import os
import sys

from setuptools import Extension, setup

extra_compile_args = []
extra_link_args = []
if sys.platform != "win32":
    extra_compile_args = ["-O2", "-Wall", "-Wextra", "-std=c99"]
    # FASTPATCH_SANITIZE=address,undefined builds the probes under ASan/UBSan (used by .ci/run).
    sanitize = os.environ.get("FASTPATCH_SANITIZE")
    if sanitize:
        flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        extra_compile_args = ["-O1", "-g", "-Wall", "-Wextra", "-std=c99", *flags]
        extra_link_args = flags

setup(
    ext_modules=[
        Extension(
            "fastpatch._ext",
            sources=["src/fastpatch/_ext.c"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]
)
