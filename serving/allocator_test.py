"""glibc malloc arenas: counted in glibc's own malloc_info report of a fresh process."""
import os
import subprocess
import sys
import types

import pytest

from conftest import REPO_ROOT
from serving import allocator

THREADS = 8
# Applies the limit, then THREADS threads allocate while all of them are alive, and the
# process counts the arenas glibc reports (<heap nr=...> in malloc_info's XML).
ARENA_COUNT = f"""
import ctypes, sys, tempfile, threading
from serving import allocator

print(allocator.limit_malloc_arenas(int(sys.argv[1])))
barrier = threading.Barrier({THREADS} + 1)

def allocate():
    kept = [bytearray(4096) for _ in range(100)]  # below mmap's threshold: from an arena
    barrier.wait()
    barrier.wait()

threads = [threading.Thread(target=allocate) for _ in range({THREADS})]
for thread in threads:
    thread.start()
barrier.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    stream = ctypes.c_void_p(libc.fopen(report.name.encode(), b"w"))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    arenas = open(report.name).read().count("<heap nr=")
barrier.wait()
for thread in threads:
    thread.join()
print(arenas)
"""

glibc_only = pytest.mark.skipif(allocator._glibc() is None, reason="counts glibc's arenas")


def _arenas(limit: int, **environment: str):
    """(the function's line, the arenas glibc reports) in a fresh process."""
    env = {name: value for name, value in os.environ.items()
           if name not in (allocator.ENV_VARIABLE, "GLIBC_TUNABLES")}
    result = subprocess.run([sys.executable, "-c", ARENA_COUNT, str(limit)], cwd=REPO_ROOT,
                            env={**env, **environment}, capture_output=True, text=True,
                            timeout=60, check=True)
    line, count = result.stdout.strip().splitlines()
    return line, int(count)


@glibc_only
def test_the_limit_caps_the_arenas_of_concurrently_allocating_threads():
    line, limited = _arenas(2)
    assert line == "malloc arenas: at most 2 (glibc mallopt M_ARENA_MAX)"
    assert limited <= 2
    line, default = _arenas(0)
    assert line == "malloc arenas: glibc's default (up to 8 per core)"
    assert default > 2  # the main thread's arena and one per thread, up to 8 per core


@glibc_only
def test_malloc_arena_max_from_the_environment_wins():
    line, arenas = _arenas(1, MALLOC_ARENA_MAX="3")
    assert line == ("malloc arenas: MALLOC_ARENA_MAX=3 from the environment "
                    "(--malloc-arenas ignored)")
    assert arenas == 3


def test_glibc_tunables_win_and_nothing_is_set():
    def mallopt(*_):
        raise AssertionError("mallopt must not be called when the environment sets the limit")

    line = allocator.limit_malloc_arenas(
        2, {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4"},
        types.SimpleNamespace(mallopt=mallopt))
    assert line == ("malloc arenas: GLIBC_TUNABLES=glibc.malloc.arena_max=4 from the "
                    "environment (--malloc-arenas ignored)")


def test_a_c_library_without_mallopt_is_a_logged_no_op():
    line = allocator.limit_malloc_arenas(2, {}, types.SimpleNamespace())
    assert line == ("malloc arenas: not limited to 2, this C library is not glibc "
                    "(no mallopt M_ARENA_MAX)")


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="--malloc-arenas must be 0 .* got -1"):
        allocator.limit_malloc_arenas(-1, {})
