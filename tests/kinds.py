"""Every kind of function fastpatch must handle, each with a driver.

A Kind makes a fresh function (so tests never share instrumentation state)
and drives it to completion, returning what a caller observes. Tests run
each kind twice, uninstrumented then instrumented, and compare.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Tuple


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[], Tuple[Any, Any]]  # -> (target passed to instrument, callable to drive)
    drive: Callable[[Any], Any]
    activations: int  # activations one drive() starts
    generator_like: bool = False

    def __repr__(self) -> str:
        return self.name


def _plain():
    def plain(x, y=2, *args, z=3, **kw):
        total = x + y + z
        for a in args:
            total += a
        return total

    return plain, plain


def _lambda():
    f = lambda x: x * 2  # noqa: E731
    return f, f


def _closure():
    def outer():
        count = 0

        def inner(step):
            nonlocal count
            count += step
            seen = count
            count -= step
            return seen

        return inner

    inner = outer()
    return inner, inner


def _recursive():
    def fact(n):
        if n <= 1:
            return 1
        return n * fact(n - 1)

    return fact, fact


class _Base:
    def greet(self, who):
        return f"hello {who}"


def _method():
    class Child(_Base):
        def greet(self, who):
            return super().greet(who).upper()

    return Child.greet, Child().greet


def _bound_method():
    class Counter:
        def __init__(self):
            self.n = 0

        def bump(self, by):
            self.n = by
            return self.n * 2

    bound = Counter().bump
    return bound, bound


def _staticmethod():
    class Holder:
        @staticmethod
        def twice(x):
            return 2 * x

    return Holder.__dict__["twice"], Holder.twice


def _classmethod():
    class Holder:
        factor = 5

        @classmethod
        def scale(cls, x):
            return cls.factor * x

    return Holder.__dict__["scale"], Holder.scale


def _generator():
    def numbers(n):
        total = 0
        for i in range(n):
            got = yield i
            if got:
                total += got
        yield from range(2)
        return total

    return numbers, numbers


def _coroutine():
    async def compute(x):
        await asyncio.sleep(0)
        return x + 1

    return compute, compute


def _async_generator():
    async def agen(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    return agen, agen


def drive_call(f):
    return f(3)


def drive_recursive(f):
    return f(5)


def drive_generator(f):
    it = f(3)
    out = [next(it), it.send(10), it.send(20)]
    out += list(it)
    return out


def run_coroutine(coro):
    """Drive a coroutine without an event loop, so traced events are deterministic."""
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


async def _collect(agen):
    return [x async for x in agen]


def drive_coroutine(f):
    return run_coroutine(f(41))


def drive_async_generator(f):
    return run_coroutine(_collect(f(3)))


def drive_method(f):
    return f("bob")


KINDS: List[Kind] = [
    Kind("plain", _plain, drive_call, 1),
    Kind("lambda", _lambda, drive_call, 1),
    Kind("closure", _closure, drive_call, 1),
    Kind("recursive", _recursive, drive_recursive, 5),
    Kind("method", _method, drive_method, 1),
    Kind("bound_method", _bound_method, drive_call, 1),
    Kind("staticmethod", _staticmethod, drive_call, 1),
    Kind("classmethod", _classmethod, drive_call, 1),
    Kind("generator", _generator, drive_generator, 1, generator_like=True),
    Kind("coroutine", _coroutine, drive_coroutine, 1, generator_like=True),
    Kind("async_generator", _async_generator, drive_async_generator, 1, generator_like=True),
]

GENERATOR_KINDS = [k for k in KINDS if k.generator_like]

PY = sys.version_info[:2]
