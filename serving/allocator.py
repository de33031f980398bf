"""How many glibc malloc arenas `cxr serve` uses, apart from the server so that `cxr --help`
shows the default without importing TensorFlow.

glibc gives each thread that allocates its own arena, up to 8 per core. The server's request
threads (16 gRPC workers, one thread per REST connection) then scatter freed memory across
up to 16 arenas on 2 cores, and its resident memory grows in steps under long load while the
bytes in use stay flat; with 2 arenas it does not step (docs/benchmarks.md, "`cxr serve`
under load"). The limit is set in-process with mallopt before any thread exists: glibc
reads it only until it has made more than 8 arenas, and arenas already made stay.
"""
import ctypes
import os
from typing import Mapping, Optional

DEFAULT_MALLOC_ARENAS = 2
ENV_VARIABLE = "MALLOC_ARENA_MAX"  # glibc reads it at start; a user's setting wins
_TUNABLE = "glibc.malloc.arena_max"  # the same, through GLIBC_TUNABLES
_M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc() -> Optional[ctypes.CDLL]:
    """The process's C library when it is glibc (M_ARENA_MAX is glibc's), else None."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # not glibc (musl, macOS): the name is unknown there
        return None
    return ctypes.CDLL(None) if version and version.startswith("glibc") else None


def _setting_from_environment(environ: Mapping[str, str]) -> Optional[str]:
    """'MALLOC_ARENA_MAX=4' or 'GLIBC_TUNABLES=glibc.malloc.arena_max=4' when the user set it."""
    if environ.get(ENV_VARIABLE):
        return f"{ENV_VARIABLE}={environ[ENV_VARIABLE]}"
    for tunable in environ.get("GLIBC_TUNABLES", "").split(":"):
        if tunable.startswith(_TUNABLE + "="):
            return f"GLIBC_TUNABLES={tunable}"
    return None


def limit_malloc_arenas(arenas: int, environ: Optional[Mapping[str, str]] = None,
                        c_library: Optional[object] = None) -> str:
    """Limit glibc's malloc arenas to `arenas` (0: glibc's default) unless the environment
    already sets the limit, and return one line saying what the process uses. Call it before
    any thread is started. ValueError for a negative count; on a C library without glibc's
    mallopt nothing is set and the line says so."""
    if arenas < 0:
        raise ValueError(f"--malloc-arenas must be 0 (glibc's default) or a positive number "
                         f"of arenas, got {arenas}")
    from_environment = _setting_from_environment(os.environ if environ is None else environ)
    if from_environment:
        return f"malloc arenas: {from_environment} from the environment (--malloc-arenas ignored)"
    if arenas == 0:
        return "malloc arenas: glibc's default (up to 8 per core)"
    c_library = _glibc() if c_library is None else c_library
    mallopt = getattr(c_library, "mallopt", None)
    if mallopt is None:
        return (f"malloc arenas: not limited to {arenas}, this C library is not glibc "
                "(no mallopt M_ARENA_MAX)")
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        return f"malloc arenas: not limited to {arenas}, glibc's mallopt refused it"
    return f"malloc arenas: at most {arenas} (glibc mallopt M_ARENA_MAX)"
