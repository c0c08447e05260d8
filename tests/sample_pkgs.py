"""Throwaway packages for the bulk, hook, command-line and child-process
tests, written into a test's tmp_path under a name no other test uses (so
sys.modules never hands one test another's module)."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
import zipfile

_counter = itertools.count()

# A module that exercises everything a walk or the hook must reach.
EVERYTHING = '''
import functools
import json
from json import dumps
from math import sqrt
from collections import OrderedDict

SAVED_CODE = None


def plain(x):
    return x + 1


def make_adder(n):
    def adder(x):
        return x + n
    return adder


def remember(f):
    global SAVED_CODE
    SAVED_CODE = f.__code__  # as jinja2's @internalcode keeps it
    return f


@remember
def remembered():
    return 7


def logged(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


@logged
def decorated(x):
    return x * 2


@functools.lru_cache(maxsize=None)
def cached(x):
    return x * 3


async def coro():
    return 1


def gen():
    yield 1


class Shape:
    kind = "shape"

    def area(self):
        return 0

    @staticmethod
    def unit():
        return 1

    @classmethod
    def make(cls):
        return cls()

    @property
    def size(self):
        return self._size

    @size.setter
    def size(self, value):
        self._size = value

    @size.deleter
    def size(self):
        del self._size

    @functools.cached_property
    def expensive(self):
        return 42

    class Inner:
        def hello(self):
            return "hi"

    builtin_alias = len
    imported_alias = dumps


Alias = Shape
'''

EVERYTHING_FUNCTIONS = sorted([
    "plain", "make_adder", "remember", "remembered", "logged", "decorated", "cached", "coro", "gen",
    "Shape.area", "Shape.unit", "Shape.make", "Shape.expensive", "Shape.Inner.hello",
    "Shape.size", "Shape.size", "Shape.size",  # the property's getter, setter and deleter
])


def unique(prefix: str) -> str:
    """A module name no other test of this process uses."""
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


def write_tree(root: str, files: dict) -> None:
    """Write ``{relative path: source}`` under ``root``."""
    for rel, source in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(textwrap.dedent(source))


def write_zip(path: str, files: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, source in files.items():
            zf.writestr(rel, textwrap.dedent(source))


def forget(prefix: str) -> None:
    """Drop a test package and its submodules from sys.modules."""
    for name in list(sys.modules):
        if name == prefix or name.startswith(prefix + "."):
            del sys.modules[name]
