# SPDX-License-Identifier: MIT
"""What a Python process can see of its own memory, and the allocator's
levers: the resident set from /proc/self/statm, glibc's ``mallinfo2()`` and
``malloc_trim()``, or, when libmemguard-malloc.so is preloaded, its
``mg_heap_stats()``, ``mg_heap_release()`` and ``mg_heap_set_goal()``.
Everything here degrades to "not available" rather than raising.
"""
import ctypes
import logging
import os
import sys

log = logging.getLogger("memguard")

PRELOAD_NAME = "libmemguard-malloc.so"
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _HeapStats(ctypes.Structure):
    _fields_ = [("sys", ctypes.c_uint64), ("inuse", ctypes.c_uint64),
                ("idle", ctypes.c_uint64), ("released", ctypes.c_uint64),
                ("metadata", ctypes.c_uint64), ("fragmentation", ctypes.c_double)]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


class _ClientOpts(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("socket_path", ctypes.c_char_p),
                ("service", ctypes.c_char_p), ("process", ctypes.c_char_p),
                ("threading", ctypes.c_int)]


def rss():
    """Resident bytes of this process (/proc/self/statm), 0 if unreadable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _preload_path():
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(None, 5)[-1]
                if os.path.basename(path) == PRELOAD_NAME:
                    return path
    except OSError:
        pass
    return None


def _is_glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc ")
    except (ValueError, OSError, AttributeError):
        return False


class Allocator:
    """The process's C allocator as memguard can drive it.

    `kind` is ``"memguard"`` (libmemguard-malloc.so is loaded), ``"glibc"``
    or ``"other"`` (nothing to release or to read beyond the RSS).
    """

    def __init__(self):
        self.kind = "other"
        self._lib = None
        path = _preload_path()
        try:
            if path:
                lib = ctypes.CDLL(path)
                lib.mg_heap_stats.argtypes = [ctypes.POINTER(_HeapStats)]
                lib.mg_heap_stats.restype = None
                lib.mg_heap_release.argtypes = [ctypes.c_size_t]
                lib.mg_heap_release.restype = ctypes.c_size_t
                lib.mg_heap_set_goal.argtypes = [ctypes.c_size_t]
                lib.mg_heap_set_goal.restype = None
                self._lib, self.kind = lib, "memguard"
            elif _is_glibc():
                lib = ctypes.CDLL("libc.so.6")
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                lib.malloc_trim.restype = ctypes.c_int
                if hasattr(lib, "mallinfo2"):
                    lib.mallinfo2.argtypes = []
                    lib.mallinfo2.restype = _MallInfo2
                self._lib, self.kind = lib, "glibc"
        except (OSError, AttributeError) as e:
            log.warning("Cannot use the C allocator's functions (%s): "
                        "releases are the Python collector's only", e)
            self._lib, self.kind = None, "other"

    def heap(self):
        """(sys, inuse, idle, released) bytes of the C heap, as far as known.

        Under the preload library: its own figures.  With glibc: the
        arenas and mmapped blocks of ``mallinfo2()`` (released unknown: 0).
        Otherwise the RSS as sys, the rest 0.
        """
        if self.kind == "memguard":
            hs = _HeapStats()
            self._lib.mg_heap_stats(ctypes.byref(hs))
            return hs.sys, hs.inuse, hs.idle, hs.released
        if self.kind == "glibc" and hasattr(self._lib, "mallinfo2"):
            mi = self._lib.mallinfo2()
            return mi.arena + mi.hblkhd, mi.uordblks + mi.hblkhd, mi.fordblks, 0
        return rss(), 0, 0, 0

    def release(self, nbytes=0):
        """Return free heap pages to the kernel (0: everything possible)."""
        if self.kind == "memguard":
            self._lib.mg_heap_release(min(nbytes, 2 ** 64 - 1))
        elif self.kind == "glibc":
            self._lib.malloc_trim(0)

    def set_goal(self, nbytes):
        """The preload library's scavenger goal (a directive's soft limit)."""
        if self.kind == "memguard":
            self._lib.mg_heap_set_goal(min(nbytes, 2 ** 64 - 1))

    def retire_preload_client(self):
        """Make the preload library's own client (started when the
        MEMGUARD_SOCKET or MEMGUARD_SERVICE variable is set) say BYE, so the
        process is registered once, by the Python client: a client created
        through ``mg_client_new()`` replaces it, and one without a thread
        never connects before it is freed."""
        if self.kind != "memguard" or not hasattr(self._lib, "mg_client_new"):
            return
        opts = _ClientOpts(ctypes.sizeof(_ClientOpts), None, None, None, 1)
        c = ctypes.c_void_p()
        self._lib.mg_client_new.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                            ctypes.POINTER(_ClientOpts)]
        self._lib.mg_client_new.restype = ctypes.c_int
        self._lib.mg_client_free.argtypes = [ctypes.c_void_p]
        self._lib.mg_client_free.restype = None
        if self._lib.mg_client_new(ctypes.byref(c), ctypes.byref(opts)) == 0:
            self._lib.mg_client_free(c)


def allocated_blocks():
    """Python's own count of allocated memory blocks (``sys.getallocatedblocks()``)."""
    return sys.getallocatedblocks()
