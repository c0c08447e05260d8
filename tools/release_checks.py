"""What the release sessions of noxfile.py check in the files they build:
the sdist's contents, each wheel's contents and metadata, and
cibuildwheel's build identifiers. Standard library only; each function
returns the problems it found (an empty list when there are none)."""

from __future__ import annotations

import email.parser
import os
import tarfile
import zipfile
from typing import Dict, List, Optional, Sequence, Set

# The archs pyproject.toml's [tool.cibuildwheel.<platform>] tables name, per
# platform, and the platform tags cibuildwheel's identifiers carry.
CIBW_PLATFORMS: Dict[str, List[str]] = {
    "linux": [f"{plat}_{arch}" for plat in ("manylinux", "musllinux") for arch in ("x86_64", "aarch64")],
    "macos": ["macosx_x86_64", "macosx_arm64"],
    "windows": ["win_amd64", "win_arm64"],
}


def _tree(root: str, sub: str, suffixes: Optional[Sequence[str]] = None) -> List[str]:
    """Files under ``root/sub`` (relative to ``root``), skipping caches and dot directories."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, sub)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for f in filenames:
            if suffixes is None or f.endswith(tuple(suffixes)):
                out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return out


def sdist_problems(sdist: str, checkout: str, version: str) -> List[str]:
    """The sdist must hold every file needed to build and test (the package's
    sources, tests/, benchmarks/, examples/ and the top-level files of
    ``checkout``) and no build product."""
    prefix = f"fastpatch-{version}/"
    with tarfile.open(sdist) as tf:
        names = {m.name[len(prefix) :] for m in tf.getmembers() if m.isfile() and m.name.startswith(prefix)}
    pkg = "src/fastpatch"
    required: Set[str] = {
        "README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "setup.py",
        f"{pkg}/_ext.c", f"{pkg}/_ext.pyi", f"{pkg}/py.typed",
    }
    required.update(_tree(checkout, pkg, (".py", ".h", ".c", ".pyi")))
    problems = []
    for sub in ("tests", "benchmarks", "examples"):
        if os.path.isdir(os.path.join(checkout, sub)):
            found = _tree(checkout, sub)
            if sub == "tests" and not any(f.endswith(".py") for f in found):
                problems.append("tests/ has no Python files")
            required.update(found)
    problems += [f"missing from the sdist: {n}" for n in sorted(required - names)]
    problems += [
        f"must not be in the sdist: {n}"
        for n in sorted(names)
        if n.endswith((".so", ".pyd", ".pyc", ".o")) or "__pycache__" in n
    ]
    return problems


def wheel_problems(wheel: str, version: str) -> List[str]:
    """A wheel must carry the package, its stubs, its compiled extension,
    fastpatch.pth and the telemetry layout header (``_telemetry.h``, for
    readers in other languages); no other sources, tests or bytecode caches; metadata of
    ``version``; and no runtime dependency (bytecode is only for building, and
    for the dev, test and bench extras)."""
    with zipfile.ZipFile(wheel) as zf:
        files = zf.namelist()
        meta_name = next(f for f in files if f.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    problems = []
    if meta["Version"] != version:
        problems.append(f"metadata version {meta['Version']} != fastpatch.__version__ {version}")
    for need in ("fastpatch/__init__.py", "fastpatch/_version.py", "fastpatch/py.typed", "fastpatch/_ext.pyi",
                 "fastpatch/_assembled.py", "fastpatch.pth", "fastpatch/_telemetry.h"):
        if need not in files:
            problems.append(f"lacks {need}")
    for ext in ("_ext", "_csplice", "_jumps"):
        if not any(f.startswith(f"fastpatch/{ext}.") and f.endswith(".so") for f in files):
            problems.append(f"lacks the compiled extension fastpatch/{ext}.*.so")
    stray = [f for f in files if (f.endswith((".c", ".h", ".pyc")) and f != "fastpatch/_telemetry.h")
             or f.startswith(("tests/", "src/"))]
    if stray:
        problems.append(f"carries {stray}")
    unconditional = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    if unconditional:
        problems.append(f"has runtime dependencies {unconditional}")
    return problems


def expected_identifiers(platform: str, versions: Sequence[str]) -> List[str]:
    """cibuildwheel's build identifiers for ``platform``: every supported
    CPython on every platform tag and arch pyproject.toml asks for."""
    return sorted(f"cp{v.replace('.', '')}-{tag}" for tag in CIBW_PLATFORMS[platform] for v in versions)


def printed_identifiers(output: str) -> List[str]:
    """The identifiers in ``cibuildwheel --print-build-identifiers`` output."""
    return sorted(line.strip() for line in output.splitlines() if line.strip()[:2] in ("cp", "pp", "gp"))


def junit_counts(path: str) -> Dict[str, int]:
    """passed, failed, errors and skipped of a pytest --junitxml file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, "0"))
    return {
        "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped": total["skipped"],
    }
