"""Sampled timing: every call counted exactly, one in N timed at random (or
none), estimates that say so, and the probe state telemetry reads (the
reset epoch, the called list)."""

from __future__ import annotations

import gc
import json
import math
import os

import pytest

import fastpatch
from fastpatch import _ext, _patch, _stats
from fastpatch._reports import merge, schema, table
from kinds import KINDS
from test_children import needs_pth
from test_fork import _in_child

RATES = [1, 2, 16, 1000, 0]


@pytest.fixture(autouse=True)
def _seeded_sampler():
    # The same timed calls on every run: a bound that holds once holds always.
    _ext._testing_seed_sampler(20261207)


def _probe_of(target):
    func = fastpatch._resolve.resolve_function(target)
    (probe,) = [c for c in func.__code__.co_consts if type(c) is _ext.Probe]
    return probe


def _timed_bounds(n, sample):
    """The timed activations of ``n`` at rate ``sample``: binomial, within 8 standard deviations."""
    if sample in (0, 1):
        return (0, 0) if sample == 0 else (n, n)
    p = 1 / sample
    spread = 8 * math.sqrt(n * p * (1 - p))
    return max(0, math.floor(n * p - spread)), min(n, math.ceil(n * p + spread))


@pytest.mark.parametrize("sample", RATES)
@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_every_kind_counts_every_call_exactly_and_times_about_one_in_n(kind, sample):
    target, call = kind.make()
    expected = kind.drive(call)
    fastpatch.instrument(target, sample=sample)
    drives = 300
    assert [kind.drive(call) for _ in range(drives)] == [expected] * drives
    s = fastpatch.stats(target)
    n = drives * kind.activations
    assert (s.calls, s.completed, s.errors, s.sample) == (n, n, 0, sample)
    low, high = _timed_bounds(n, sample)
    assert low <= s.timed <= high
    # Every timed activation stands for `sample` of them (the weight its token carried).
    assert sum(s.histogram) == (n if sample == 1 else sample * s.timed)
    assert s.sampled is (sample != 1)
    if sample == 0:
        assert (s.total_ns, s.min_ns, s.max_ns, s.mean_ns, s.percentile(50)) == (0, 0, 0, 0.0, 0)


@pytest.mark.parametrize("sample", [1, 16, 0])
@pytest.mark.parametrize("shape", ["function", "generator"])
def test_errors_are_counted_exactly_at_any_rate(shape, sample):
    def function(i):
        if i % 3 == 0:
            raise KeyError(i)
        return i

    def generator(i):
        yield i
        if i % 3 == 0:
            raise KeyError(i)

    target = function if shape == "function" else generator
    fastpatch.instrument(target, sample=sample)
    raised = 0
    for i in range(3000):
        try:
            list(target(i)) if shape == "generator" else target(i)
        except KeyError:
            raised += 1
    s = fastpatch.stats(target)
    assert (raised, s.calls, s.completed, s.errors) == (1000, 3000, 3000, 1000)
    low, high = _timed_bounds(3000, sample)
    assert low <= s.timed <= high


@pytest.mark.parametrize(("first", "then"), [(0, 1), (1, 0), (16, 1)])
def test_a_generator_suspended_across_a_rate_change_keeps_its_activations_decision(first, then):
    def gen():
        yield 1
        yield 2

    fastpatch.instrument(gen, sample=first)
    code = gen.__code__
    suspended = [gen() for _ in range(2000)]
    for g in suspended:
        assert next(g) == 1
    fastpatch.instrument(gen, sample=then)
    assert gen.__code__ is code  # no new splice
    assert [list(g) for g in suspended] == [[2]] * 2000
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.sample) == (2000, 2000, then)
    low, high = _timed_bounds(2000, first)
    assert low <= s.timed <= high
    # Each one folded with the weight of the rate it started at.
    assert sum(s.histogram) == (2000 if first == 1 else first * s.timed)


def test_changing_the_rate_applies_from_the_next_call_and_keeps_the_counters():
    def f(x):
        return x + 1

    fastpatch.instrument(f)
    code = f.__code__
    for i in range(100):
        f(i)
    fastpatch.instrument(f, sample=0)
    for i in range(50):
        f(i)
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, s.timed, sum(s.histogram), s.sample, s.sampled) == (150, 150, 100, 100, 0, True)
    fastpatch.instrument(f)  # no sample=: the rate stays
    assert _probe_of(f).sample == 0
    fastpatch.instrument(f, sample=1)
    for i in range(10):
        f(i)
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, s.timed, sum(s.histogram), s.sample) == (160, 160, 110, 110, 1)
    assert s.sampled  # 50 of its calls were never timed
    assert f.__code__ is code


def test_the_internal_rate_setter_sets_a_definitions_rate_from_its_next_call():
    def f(x):
        return x

    fastpatch.instrument(f)
    d = _patch._require_definition(f)
    _patch.set_sample(d, 0)
    f(1)
    _patch.set_sample(d, None)  # leaves it
    f(2)
    s = fastpatch.stats(f)
    assert (s.calls, s.timed, s.sample) == (2, 0, 0)


@pytest.mark.parametrize(
    ("sample", "error", "message"),
    [
        (-1, ValueError, "sample must be 1 (exact timing), N from 2 to 1000000000 (time one call in N) or 0 "
                         "(count only), not -1"),
        (10**9 + 1, ValueError, "not 1000000001"),
        (2.0, TypeError, "sample must be an int (1 exact, N >= 2 one call in N, 0 count only), not float"),
        (True, TypeError, "not bool"),
        ("16", TypeError, "not str"),
    ],
)
def test_a_bad_rate_is_refused_in_one_line_before_anything_is_patched(sample, error, message):
    def f():
        return 1

    code = f.__code__
    with pytest.raises(error) as exc:
        fastpatch.instrument(f, sample=sample)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert f.__code__ is code and not fastpatch.is_instrumented(f)
    for bulk in (fastpatch.instrument_module, fastpatch.instrument_package):
        with pytest.raises(error):
            bulk("json", sample=sample)
    with pytest.raises(error):
        fastpatch.instrument_class(int, sample=sample)
    with pytest.raises(error):
        fastpatch.install_import_hook(["nothing_by_this_name"], sample=sample)
    with pytest.raises(error):
        _ext.Probe().set_sample(sample)


def test_the_bulk_functions_set_the_rate_of_what_they_instrument(tmp_path, monkeypatch):
    (tmp_path / "sampled_mod.py").write_text(
        "def a(x):\n    return x\n\nclass C:\n    def m(self):\n        return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import sampled_mod

    fastpatch.instrument_module(sampled_mod, sample=16)
    assert (_probe_of(sampled_mod.a).sample, _probe_of(sampled_mod.C.m).sample) == (16, 16)
    fastpatch.instrument_class(sampled_mod.C, sample=0)  # already instrumented: a new rate
    assert (_probe_of(sampled_mod.a).sample, _probe_of(sampled_mod.C.m).sample) == (16, 0)
    fastpatch.instrument_module(sampled_mod)  # no sample=: rates stay
    assert (_probe_of(sampled_mod.a).sample, _probe_of(sampled_mod.C.m).sample) == (16, 0)


def test_the_import_hook_splices_at_its_rate(tmp_path, monkeypatch):
    (tmp_path / "hooked_sampled.py").write_text(
        "def outer():\n    def inner(x):\n        return x\n    return inner\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with fastpatch.install_import_hook(["hooked_sampled"], sample=2):
        import hooked_sampled
    inner = hooked_sampled.outer()
    for i in range(1000):
        inner(i)
    s = fastpatch.stats(inner)
    assert (s.calls, s.completed, s.sample) == (1000, 1000, 2)
    low, high = _timed_bounds(1000, 2)
    assert low <= s.timed <= high
    assert _ext.Probe().sample == 1  # the rate was the hook's modules' only


def test_reset_starts_a_new_epoch():
    def f():
        return 1

    fastpatch.instrument(f)
    probe = _probe_of(f)
    f()
    epoch = probe.epoch
    assert probe.snapshot()[10] == epoch
    fastpatch.reset(f)
    assert probe.epoch == epoch + 1
    fastpatch.reset()
    assert probe.epoch == epoch + 2
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, s.timed) == (0, 0, 0)


# --------------------------------------------------------------------------
# The called list
# --------------------------------------------------------------------------


def _listed(probe):
    return sum(1 for p in _ext.called_probes() if p is probe)


def test_a_probe_joins_the_called_list_at_its_first_call_once_and_leaves_it_as_it_dies():
    probes = [_ext.Probe() for _ in range(3)]
    assert [_listed(p) for p in probes] == [0, 0, 0]
    for _ in range(3):
        [(~p)[None] for p in probes]
    assert [_listed(p) for p in probes] == [1, 1, 1]
    listed = _ext.called_probes()
    assert len({id(p) for p in listed}) == len(listed)  # each once
    del listed
    dead = id(probes.pop(1))  # the middle one: the last takes its place
    gc.collect()
    assert [_listed(p) for p in probes] == [1, 1]
    assert dead not in {id(p) for p in _ext.called_probes()}
    dead = {id(p) for p in probes}
    probes.clear()
    gc.collect()
    assert not dead & {id(p) for p in _ext.called_probes()}


def test_an_uncalled_probe_with_a_rate_is_listed_at_its_first_call():
    p = _ext.Probe()
    p.set_sample(1)
    assert _listed(p) == 0
    (~p)[None]
    assert _listed(p) == 1


pytestmark_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytestmark_fork
def test_a_forked_child_lists_only_what_it_calls_counts_untimed_calls_and_starts_a_new_epoch():
    def f(x):
        return x

    def g(x):
        return x

    fastpatch.instrument(f, sample=0)
    fastpatch.instrument(g, sample=16)
    for i in range(10):
        f(i), g(i)
    pf, pg = _probe_of(f), _probe_of(g)
    assert (_listed(pf), _listed(pg)) == (1, 1)
    epoch = pf.epoch

    def child():
        listed_at_start = [_listed(pf), _listed(pg)]
        for i in range(1000):
            g(i)
        s = fastpatch.stats(g)
        return [listed_at_start, _listed(pf), _listed(pg), pf.epoch - epoch, s.calls, s.completed,
                sum(s.histogram) == 16 * s.timed]

    assert _in_child(child) == {"result": [[0, 0], 0, 1, 1, 1000, 1000, True]}
    assert (_listed(pf), _listed(pg), pf.epoch) == (1, 1, epoch)


@pytestmark_fork
def test_an_untimed_activation_started_before_a_fork_is_not_counted_in_the_child():
    def gen():
        yield 1
        yield 2

    fastpatch.instrument(gen, sample=0)
    suspended = gen()
    next(suspended)

    def child():
        assert list(suspended) == [2]
        s = fastpatch.stats(gen)
        return [s.calls, s.completed]

    assert _in_child(child) == {"result": [0, 0]}
    assert list(suspended) == [2]
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.timed) == (1, 1, 0)


@pytestmark_fork
def test_a_timed_sampled_activation_started_before_a_fork_is_not_counted_in_the_child():
    # One activation per definition, so that each ends with its probe's spare token free, as a steady state does.
    namespace: dict = {}
    exec("".join(f"def gen{i}():\n    yield 1\n    yield 2\n" for i in range(64)), namespace)
    gens = [namespace[f"gen{i}"] for i in range(64)]
    for gen in gens:
        fastpatch.instrument(gen, sample=2)
    suspended = [gen() for gen in gens]
    for g in suspended:
        next(g)

    def child():
        assert [list(g) for g in suspended] == [[2]] * 64
        stats = [fastpatch.stats(gen) for gen in gens]
        return [sum(s.completed for s in stats), sum(s.timed for s in stats), sum(sum(s.histogram) for s in stats)]

    assert _in_child(child) == {"result": [0, 0, 0]}
    assert [list(g) for g in suspended] == [[2]] * 64
    stats = [fastpatch.stats(gen) for gen in gens]
    assert [(s.calls, s.completed) for s in stats] == [(1, 1)] * 64
    timed = sum(s.timed for s in stats)
    assert 0 < timed < 64  # the seeded sampler times some of them, not all
    assert sum(sum(s.histogram) for s in stats) == 2 * timed


# --------------------------------------------------------------------------
# The draw of the gap to the next timed activation
# --------------------------------------------------------------------------


def _words(count, seed):
    """Nonzero 64-bit words, spread over every number of leading zeros (the exponent of u = word / 2**64)."""
    import random

    rng = random.Random(seed)
    return [(rng.getrandbits(64) >> rng.randrange(64)) or 1 for _ in range(count)]


_EDGE_WORDS = [1, 2, 3, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1] + [
    # the ends of the table's segments: the top 11 bits of a normalised word
    (2**10 + segment) << 53 | low for segment in (0, 1, 511, 512, 1022, 1023) for low in (0, 1, 2**53 - 1)
]


@pytest.mark.parametrize("sample", [2, 3, 16, 100, 1000, 65536, 10**9])
def test_each_random_word_draws_the_same_gap_as_inversion_by_log(sample):
    words = _words(20_000, sample) + _EDGE_WORDS
    gaps = [_ext._testing_sampler_gap(sample, w) for w in words]
    assert [g for g, _ in gaps] == [by_log for _, by_log in gaps]


def test_the_gaps_at_16_are_geometric_with_mean_15():
    """The inversion the draw reproduces, on uniform words: P(gap = k) = (15/16)**k / 16."""
    import random

    rng = random.Random(16)
    n = 100_000
    gaps = [_ext._testing_sampler_gap(16, rng.getrandbits(64) or 1)[0] for _ in range(n)]
    # mean 15, standard deviation sqrt(15 * 16); frequencies of 0 ... 3 within 8 binomial deviations
    assert abs(sum(gaps) / n - 15) <= 8 * math.sqrt(15 * 16 / n)
    for k in range(4):
        p = (15 / 16) ** k / 16
        assert abs(gaps.count(k) - n * p) <= 8 * math.sqrt(n * p * (1 - p))


# --------------------------------------------------------------------------
# The estimates
# --------------------------------------------------------------------------


def _busy(n):
    total = 0
    for i in range(n):
        total += i
    return total


def _trimmed(s, cap_ns=1_000_000):
    """(estimated calls, estimated total ns) of the histogram's buckets below
    ``cap_ns``: a preemption of the test process (milliseconds, weighted N
    when it lands in a timed call) is not the distribution under test. The
    same buckets for an exact and a sampled twin, so the histogram's own
    rounding is the same on both sides."""
    calls = total = 0
    for i, n in enumerate(s.histogram):
        if n and _stats.bucket_bounds(i)[1] <= cap_ns:
            calls += n
            total += n * _stats.bucket_value(i)
    return calls, total


def _cv(s):
    """The coefficient of variation of a Stats' durations below 1 ms, from its histogram."""
    values = [_stats.bucket_value(i) for i in range(len(s.histogram))]
    kept = [(v, c) for i, (v, c) in enumerate(zip(values, s.histogram)) if c and _stats.bucket_bounds(i)[1] <= 10**6]
    n = sum(c for _, c in kept)
    mean = sum(v * c for v, c in kept) / n
    var = sum(c * (v - mean) ** 2 for v, c in kept) / n
    return math.sqrt(var) / mean


def test_a_function_slow_every_16th_call_sampled_at_16_does_not_alias():
    def work(i):
        return _busy(3000) if i % 16 == 0 else i

    def exact(i):
        return _busy(3000) if i % 16 == 0 else i

    fastpatch.instrument(work, sample=16)
    fastpatch.instrument(exact)
    calls = 16 * 8000
    for i in range(calls):
        work(i)
        exact(i)  # interleaved: both see the same machine
    s, truth = fastpatch.stats(work), fastpatch.stats(exact)
    assert (s.calls, s.completed) == (calls, calls)
    # The slow calls' share of the estimated calls: what periodic sampling
    # would get as 0 or 1. Slow calls take over 10 us, fast ones well under.
    slow = sum(n for i, n in enumerate(s.histogram) if _stats.bucket_bounds(i)[0] >= 10_000)
    assert abs(slow / sum(s.histogram) - 1 / 16) < 0.006
    # The sampled mean is the exact one's within 8 standard errors of the
    # ratio estimator, CV * sqrt((N - 1) / n) (README): CV is about 4 here,
    # so about 4% each (the seeded choice of timed calls lands within 5%).
    (n_s, total_s), (n_t, total_t) = _trimmed(s), _trimmed(truth)
    error = _cv(truth) * math.sqrt(15 / calls)
    assert abs((total_s / n_s) / (total_t / n_t) - 1) < 8 * error


def test_the_sampled_total_estimates_the_exact_total_within_the_readmes_error():
    # Durations from a known spread: 1, 4 or 16 units of work, in a fixed mix.
    sizes = [30, 120, 480] * 1000

    def sampled(n):
        return _busy(n)

    def exact(n):
        return _busy(n)

    fastpatch.instrument(sampled, sample=16)
    fastpatch.instrument(exact)
    n = len(sizes) * 60
    # The two functions' calls are different calls: on a shared, loaded host the
    # scheduler's delays land on one more than on the other, which no sampling
    # error formula covers. Three attempts, as the clock comparisons allow.
    errors = []
    for _attempt in range(3):
        fastpatch.reset(sampled)
        fastpatch.reset(exact)
        for _ in range(60):
            for size in sizes:
                sampled(size)
                exact(size)
        s, truth = fastpatch.stats(sampled), fastpatch.stats(exact)
        assert (s.calls, s.completed, truth.completed) == (n, n, n)
        # README: relative standard error of total_ns ~ sqrt((N - 1)(1 + CV**2) / n).
        predicted = math.sqrt(15 * (1 + _cv(truth) ** 2) / n)
        (_, total_s), (_, total_t) = _trimmed(s), _trimmed(truth)
        errors.append((abs(total_s / total_t - 1), 8 * predicted))
        if errors[-1][0] < errors[-1][1]:
            break
    assert errors[-1][0] < errors[-1][1], errors


# --------------------------------------------------------------------------
# Stats, reports, merges and the table
# --------------------------------------------------------------------------


def _stats_at(sample, timed, completed=100, total_ns=None, name="m.f"):
    hist = [0] * _stats.HIST_BUCKETS
    weight = sample if sample > 1 else 1
    hist[40] = timed * weight if sample != 0 else 0
    total = total_ns if total_ns is not None else (1000 * timed * weight if sample != 0 else 0)
    return _stats.Stats(
        name=name, calls=completed, errors=0, total_ns=total, min_ns=900 if timed else 0,
        max_ns=1100 if timed else 0, completed=completed, histogram=tuple(hist), clock="tsc", module="m",
        qualname="f", filename="/m.py", firstlineno=1, sample=sample, timed=timed,
    )


def test_a_json_report_carries_sample_and_timed_and_reads_back():
    s = _stats_at(16, 6)
    doc = schema.function_document(s)
    assert (doc["sample"], doc["timed"]) == (16, 6)
    report = {"format": "fastpatch", "version": 1, "pid": 1, "argv": [], "python": "3.12.0", "clock": "tsc",
              "created": 1.0, "functions": [doc]}
    schema.validate(report, "r")
    (back,) = schema.to_stats(report)
    assert back == s and (back.sample, back.timed, back.sampled) == (16, 6, True)


def test_a_report_written_before_sampling_reads_as_exact_timing():
    doc = schema.function_document(_stats_at(1, 100))
    del doc["sample"], doc["timed"]
    report = {"format": "fastpatch", "version": 1, "pid": 1, "argv": [], "python": "3.12.0", "clock": "tsc",
              "created": 1.0, "functions": [doc]}
    schema.validate(report, "r")
    (back,) = schema.to_stats(report)
    assert (back.sample, back.timed, back.sampled) == (1, 100, False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sample": -2}, "'sample' must be an integer from -1 (mixed rates) to 1000000000"),
        ({"sample": "16"}, "'sample' must be an integer"),
        ({"timed": 101}, "'timed' must be a non-negative integer below 2**96, at most 'completed'"),
    ],
)
def test_a_report_with_a_bad_sample_or_timed_is_refused(change, message):
    doc = {**schema.function_document(_stats_at(16, 6)), **change}
    report = {"format": "fastpatch", "version": 1, "pid": 1, "argv": [], "python": "3.12.0", "clock": "tsc",
              "created": 1.0, "functions": [doc]}
    with pytest.raises(schema.ReportError) as exc:
        schema.validate(report, "r")
    assert message in str(exc.value)


def _report_of(*stats, pid=1):
    return {"format": "fastpatch", "version": 1, "pid": pid, "argv": [], "python": "3.12.0", "clock": "tsc",
            "created": 1.0, "report_id": f"{pid:016x}", "functions": [schema.function_document(s) for s in stats]}


def test_merging_sums_timed_and_weighted_counts_and_keeps_a_shared_rate_or_says_mixed():
    same = merge.merge([_report_of(_stats_at(16, 6), pid=1), _report_of(_stats_at(16, 7), pid=2)])
    (fn,) = same["functions"]
    assert (fn["sample"], fn["timed"], fn["completed"], fn["histogram"]["counts"], fn["total_ns"]) == (
        16, 13, 200, {"40": 16 * 13}, 1000 * 16 * 13)
    mixed = merge.merge([_report_of(_stats_at(16, 6), pid=1), _report_of(_stats_at(1, 100), pid=2),
                         _report_of(_stats_at(0, 0), pid=3)])
    (fn,) = mixed["functions"]
    assert (fn["sample"], fn["timed"], fn["completed"], fn["histogram"]["counts"]) == (-1, 106, 300, {"40": 196})
    assert (fn["min_ns"], fn["max_ns"]) == (900, 1100)  # the count-only process timed nothing


def test_the_table_marks_estimates_and_shows_count_only_durations_as_dashes():
    import io

    out = io.StringIO()
    table.render([_stats_at(1, 100, name="exact"), _stats_at(16, 6, name="sampled"),
                  _stats_at(0, 0, name="counted")], out, "name", None)
    rows = {line.split()[-1]: line.split() for line in out.getvalue().splitlines()[1:4]}
    assert rows["exact"][2:8] == ["100.0us", "1.0us", "900ns", "900ns", "900ns", "1.1us"]
    assert rows["sampled"][2:8] == ["~96.0us", "~1.0us", "900ns", "~900ns", "~900ns", "1.1us"]
    assert rows["counted"][:8] == ["100", "0", "-", "-", "-", "-", "-", "-"]
    assert out.getvalue().splitlines()[-1] == table.SAMPLED_LEGEND
    exact_only = io.StringIO()
    table.render([_stats_at(1, 100)], exact_only, "name", None)
    assert table.SAMPLED_LEGEND not in exact_only.getvalue()


def test_stats_say_which_numbers_are_estimates():
    s = _stats_at(16, 6)
    assert (s.sampled, s.mean_ns, s.to_dict()["sample"], s.to_dict()["timed"]) == (True, 1000.0, 16, 6)
    assert _stats.Stats("x", 1, 0, 5, 5, 5, 1, (0,) * _stats.HIST_BUCKETS).timed == 1  # exact by default


# --------------------------------------------------------------------------
# run --sample and FASTPATCH_SAMPLE
# --------------------------------------------------------------------------

PROGRAM = "def f(x):\n    return x + 1\n\nfor i in range(8000):\n    f(i)\n"


def _fastpatch(*args, cwd, env=None):
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastpatch", *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=120, env=environment)


@pytest.mark.parametrize("sample", [16, 0])
def test_run_dash_dash_sample_counts_every_call_and_times_one_in_n(tmp_path, sample):
    (tmp_path / "prog.py").write_text(PROGRAM)
    result = _fastpatch("run", "--sample", str(sample), "-o", "out.json", "prog.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (fn,) = json.loads((tmp_path / "out.json").read_text())["functions"]
    assert (fn["name"], fn["calls"], fn["completed"], fn["errors"], fn["sample"]) == ("__main__.f", 8000, 8000, 0,
                                                                                      sample)
    low, high = _timed_bounds(8000, sample)
    assert low <= fn["timed"] <= high
    assert sum(fn["histogram"]["counts"].values()) == sample * fn["timed"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "python -m fastpatch run: error: argument --sample: --sample must be 1 (exact timing), N from 2 to "
               "1000000000 (time one call in N) or 0 (count only), not -1"),
        ("x", "python -m fastpatch run: error: argument --sample: --sample must be an integer, not 'x'"),
    ],
)
def test_run_refuses_a_bad_sample_in_one_line_before_the_program_runs(tmp_path, value, message):
    (tmp_path / "prog.py").write_text("print('ran')\n")
    result = _fastpatch("run", "--sample", value, "prog.py", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == message


def test_fastpatch_sample_reads_a_rate_and_says_so_in_one_line_when_it_is_bad():
    from fastpatch._activate import _sample_from

    assert [_sample_from({"FASTPATCH_SAMPLE": v}) for v in ("16", " 0 ", "1", "")] == [16, 0, 1, None]


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("-3", "fastpatch: FASTPATCH_SAMPLE must be 1 (exact timing), N from 2 to 1000000000 (time one call in N) "
               "or 0 (count only), not -3; timing every call"),
        ("often", "fastpatch: FASTPATCH_SAMPLE must be an integer, not 'often'; timing every call"),
    ],
)
def test_a_bad_fastpatch_sample_is_one_line_and_exact_timing(capsys, value, line):
    from fastpatch._activate import _sample_from

    assert _sample_from({"FASTPATCH_SAMPLE": value}) is None
    assert capsys.readouterr().err == line + "\n"


@needs_pth
def test_fastpatch_sample_times_one_call_in_n_of_a_program_activated_from_the_environment(tmp_path):
    import subprocess
    import sys

    (tmp_path / "prog.py").write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    env.update(FASTPATCH_INCLUDE="__main__", FASTPATCH_SAMPLE="16", FASTPATCH_OUTPUT="out.json")
    result = subprocess.run([sys.executable, "prog.py"], cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=120, env=env)
    assert (result.returncode, result.stderr) == (0, "")
    (fn,) = json.loads((tmp_path / "out.json").read_text())["functions"]
    assert (fn["calls"], fn["completed"], fn["sample"]) == (8000, 8000, 16)
    low, high = _timed_bounds(8000, 16)
    assert low <= fn["timed"] <= high
