"""The C extensions, and what the build writes into the wheel beside the
package; all other metadata is in pyproject.toml.

build_py also
* writes fastpatch/_assembled.py: the injected instruction sequences of the
  building interpreter, assembled with the bytecode package (a build
  requirement), so that an installed fastpatch never imports bytecode;
* copies src/fastpatch.pth to the wheel's root (site-packages), the
  zero-code activation hook of the site module; and src/fastpatch.start
  only for Pythons whose site module ignores .pth import lines (3.18+, PEP
  829). Before that, a .start file costs every interpreter startup an
  import of pkgutil and re (about 7 ms on 3.15: site's own import time goes
  from 3 to 10 ms), while the .pth line costs nothing measurable.
"""

import glob
import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# The first CPython whose site module ignores `import` lines in .pth files
# (PEP 829; 3.15's site.py: "In Python 3.18 and 3.19, `import` lines are
# silently ignored").
PTH_IMPORT_LINES_IGNORED_FROM = (3, 18)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.dry_run:
            self._write_assembled()
            hooks = glob.glob(os.path.join(HERE, "src", "*.pth"))
            starts = glob.glob(os.path.join(HERE, "src", "*.start"))
            if sys.version_info[:2] >= PTH_IMPORT_LINES_IGNORED_FROM:
                hooks += starts
            else:  # and none left in build/ by a build for a newer Python
                for path in starts:
                    stale = os.path.join(self.build_lib, os.path.basename(path))
                    if os.path.exists(stale):
                        os.remove(stale)
            for path in hooks:
                self.copy_file(path, os.path.join(self.build_lib, os.path.basename(path)))

    def _write_assembled(self) -> None:
        # _recipes.py imports nothing from the package: load it on its own.
        spec = importlib.util.spec_from_file_location("_fastpatch_recipes", os.path.join(HERE, "src", "fastpatch", "_recipes.py"))
        recipes = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(recipes)
        version = sys.version_info[:2]
        if version not in recipes.RECIPES:
            return  # an unsupported Python: fastpatch refuses to instrument there anyway
        target = os.path.join(self.build_lib, "fastpatch", "_assembled.py")
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(recipes.assembled_source(version))


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

# Each extension module and its C files (in src/fastpatch/); every header is
# a dependency of each (a change to one rebuilds them all).
EXTENSIONS = {
    # The probes. _ext_probe.c holds the whole hot path in one translation unit.
    "_ext": ["_ext.c", "_ext_clock.c", "_ext_probe.c", "_ext_origin.c", "_ext_code.c", "_ext_telemetry.c", "_ext_testing.c"],
    # The splicer: the module and its dialect, the splice's phases, the line
    # and exception tables, and the walk over a module's tree of code objects
    # (the import hook splices every function it reaches).
    "_csplice": ["_csplice.c", "_csplice_phases.c", "_csplice_tables.c", "_ctree.c"],
    # The debugger-jump guard, on no call's path.
    "_jumps": ["_jumps.c"],
    # SIGTERM's default action put back from a Pool worker's watcher thread, on no call's path.
    "_signals": ["_signals.c"],
}
HEADERS = sorted(glob.glob(os.path.join("src", "fastpatch", "*.h")))

setup(
    cmdclass={"build_py": BuildPy},
    ext_modules=[
        Extension(
            f"fastpatch.{name}",
            sources=[f"src/fastpatch/{source}" for source in sources],
            depends=HEADERS,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
        for name, sources in EXTENSIONS.items()
    ],
)
