"""A Prometheus scrape of a service of 8 workers x 3,000 functions, several ways.

Over 8 telemetry files of 3,000 records each, in the real layout
(``fastpatch.export._files``' formats; built here, not by running 24,000
functions), without the sweep (the files stand for 8 live workers, which a
sweep leaves alone):

* ``fastpatch-sidecar``: what ``python -m fastpatch export prometheus``
  serves: ``FastpatchCollector.exposition()``, the default buckets
  (``quarter``: 17 bounds + ``+Inf``), the text written by fastpatch;
* ``fastpatch-sidecar-octave``: the same with 37 bounds + ``+Inf``;
* ``fastpatch``: the in-app collector, ``generate_latest`` of a registry
  holding it (reading and merging in fastpatch, the samples and the text in
  prometheus_client);
* ``fastpatch-stats-path``: the pipeline before the fast path: the reader's
  ``Stats`` per record, ``merge_by_name``, the samples, ``generate_latest``;
* ``floor-copy``: only copying the 8 files' slots out of their mappings
  under the seqlocks (``_ext.read_slots``), which any reader pays;
* ``prometheus_client-multiprocess``: prometheus_client's own multiprocess
  mode on the same shape: 8 real worker processes that each observe 3,000
  labelled histograms (its default 15 bounds + ``+Inf``) in
  ``PROMETHEUS_MULTIPROC_DIR``, read by ``MultiProcessCollector``.

Each round is what a scrape of ``/metrics`` costs the serving process.
Checks outside the timing: the texts parse with prometheus_client's parser
into 3,000 merged histograms, and the fastpatch counts are the 8 workers' sums.
"""

import os
import subprocess
import sys
import textwrap

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from fastpatch import _stats  # noqa: E402
from fastpatch.export import _files  # noqa: E402

WORKERS = 8
FUNCTIONS = 3000
SLOT = 1984
GROUP = f"prometheus-scrape-{WORKERS}x{FUNCTIONS}"
# Six busy buckets per function, between about 1 us and 1 ms.
BUSY = (70, 82, 94, 106, 118, 130)


def _name(k):
    return f"app.module{k // 30}", f"Handler{k % 30}.method", f"app/module{k // 30}.py"


def _worker_file(pid):
    """A telemetry file of one exited worker in the real layout, FUNCTIONS records."""
    strings, records, blob, offsets = [], [], b"", []
    for k in range(FUNCTIONS):
        module, qualname, filename = _name(k)
        name = f"{module}\0{qualname}\0{filename}\0".encode()
        if len(blob) + len(name) > SLOT - _files.STRINGS.size:
            strings.append(blob)
            blob = b""
        offsets.append((len(strings), len(blob)))
        blob += name
    strings.append(blob)
    n_strings = len(strings)
    slots = [(_files.STRINGS.pack(0, _files.KIND_STRINGS, 0, len(b)) + b).ljust(SLOT, b"\0") for b in strings]
    for k in range(FUNCTIONS):
        hist = [0] * _stats.HIST_BUCKETS
        for j, index in enumerate(BUSY):
            hist[index] = 1 + (k + j + pid) % 50
        completed = sum(hist)
        name_slot, name_off = offsets[k]
        fields = _files.RECORD.pack(2, _files.KIND_RECORD, 0, 10 + k, name_slot, name_off, 1, 0, completed + 1,
                                    completed, k % 3, completed, completed * 20_000, 1_000, 900_000)
        records.append((fields + _files.HISTOGRAM.pack(*hist)).ljust(SLOT, b"\0"))
    crc = int(_stats.histogram_layout().rsplit("-", 1)[1], 16)
    n_slots = n_strings + FUNCTIONS
    header = _files.HEADER.pack(
        _files.MAGIC, 1, 0, 4096, SLOT, _stats.HIST_BUCKETS, crc, _files.ENDIAN, pid, 1000 + pid,
        1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 5, 2, n_slots, 1000, 0, b"bench", b"3.12", b"0",
    ).ljust(4096, b"\0")
    return header + b"".join(slots) + b"".join(records)


_PROMETHEUS_WORKER = textwrap.dedent("""
    import sys
    from prometheus_client import Histogram
    h = Histogram("app_function_duration_seconds", "duration", ["code_function_name"])
    for k in range(int(sys.argv[1])):
        child = h.labels(f"app.module{k // 30}.Handler{k % 30}.method")
        for j in range(6):
            child.observe(1e-6 * 4 ** (j % 6))
""")


@pytest.fixture(scope="module")
def fastpatch_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fastpatch-telemetry")
    os.chmod(path, 0o700)
    for w in range(WORKERS):
        (path / f"fastpatch-{10_000 + w}-{1000 + w}.fpt").write_bytes(_worker_file(10_000 + w))
    return str(path)


@pytest.fixture(scope="module")
def prometheus_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("prometheus-multiproc")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(path))
    for _ in range(WORKERS):
        subprocess.run([sys.executable, "-c", _PROMETHEUS_WORKER, str(FUNCTIONS)], env=env, check=True)
    return str(path)


def _parsed_histograms(text, family):
    from prometheus_client.parser import text_string_to_metric_families

    for f in text_string_to_metric_families(text):
        if f.name == family:
            return f
    raise AssertionError(f"no {family} in the scrape")


def _label(benchmark, variant):
    benchmark.group = GROUP
    benchmark.extra_info.update(variant=variant, workers=WORKERS, functions=FUNCTIONS)


def _check_fastpatch_text(text):
    family = _parsed_histograms(text, "fastpatch_function_duration_seconds")
    counts = [s for s in family.samples if s.name.endswith("_count")]
    assert len(counts) == FUNCTIONS
    k = 7
    name = ".".join(_name(k)[:2])
    expected = sum(1 + (k + j + 10_000 + w) % 50 for w in range(WORKERS) for j in range(len(BUSY)))
    assert [s.value for s in counts if s.labels["code_function_name"] == name] == [expected]


@pytest.mark.parametrize("buckets", ["quarter", "octave"])
def test_scrape_fastpatch_sidecar(benchmark, fastpatch_dir, buckets):
    from fastpatch.export.prometheus import FastpatchCollector

    _label(benchmark, "fastpatch-sidecar" if buckets == "quarter" else f"fastpatch-sidecar-{buckets}")
    collector = FastpatchCollector(fastpatch_dir, buckets=buckets, sweep=False)
    text = benchmark(collector.exposition)
    benchmark.extra_info["text_bytes"] = len(text)
    _check_fastpatch_text(text.decode())


def test_scrape_fastpatch(benchmark, fastpatch_dir):
    from prometheus_client import CollectorRegistry, generate_latest

    from fastpatch.export.prometheus import FastpatchCollector

    _label(benchmark, "fastpatch")
    registry = CollectorRegistry()
    # sweep=False: these files stand for 8 live workers, which a sweep never folds (it would fold these).
    registry.register(FastpatchCollector(fastpatch_dir, sweep=False))
    _check_fastpatch_text(benchmark(generate_latest, registry).decode())


def test_scrape_fastpatch_stats_path(benchmark, fastpatch_dir):
    from prometheus_client import CollectorRegistry, generate_latest

    from fastpatch.export._functions import merge_by_name
    from fastpatch.export.prometheus import FastpatchCollector

    _label(benchmark, "fastpatch-stats-path")
    collector = FastpatchCollector(fastpatch_dir, sweep=False)
    spans = [(a, b) for a, b in zip((0, *collector._cuts[:-1]), collector._cuts)]

    class StatsPath:
        def collect(self):
            found = _files.read_directory(fastpatch_dir)
            merged = merge_by_name(((p.stats(), p.alive) for p in found.processes), spans)
            return collector._families(merged, {}, 0)

    registry = CollectorRegistry()
    registry.register(StatsPath())
    _check_fastpatch_text(benchmark(generate_latest, registry).decode())


def test_floor_copy_of_the_slots(benchmark, fastpatch_dir):
    import mmap

    from fastpatch import _ext

    _label(benchmark, "floor-copy")
    paths = [os.path.join(fastpatch_dir, n) for n in sorted(os.listdir(fastpatch_dir))]

    def copy():
        total = 0
        for path in paths:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                with mmap.mmap(fh.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
                    total += len(_ext.read_slots(mm, 0, (size - 4096) // SLOT))
        return total

    assert benchmark(copy) == WORKERS * (FUNCTIONS + 70) * SLOT


def test_scrape_prometheus_client_multiprocess(benchmark, prometheus_dir):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    _label(benchmark, "prometheus_client-multiprocess")

    def scrape():  # a registry per scrape, as prometheus_client's documentation does it
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=prometheus_dir)
        return generate_latest(registry)

    text = benchmark(scrape).decode()
    family = _parsed_histograms(text, "app_function_duration_seconds")
    counts = [s for s in family.samples if s.name.endswith("_count")]
    assert len(counts) == FUNCTIONS
    assert {s.value for s in counts} == {WORKERS * 6}


def test_fastpatch_file_is_read_by_the_reader(fastpatch_dir):
    """The synthetic files are what the reader accepts (a check, not a benchmark)."""
    found = _files.read_directory(fastpatch_dir)
    assert found.bad_files == []
    assert [len(p.stats()) for p in found.processes] == [FUNCTIONS] * WORKERS
