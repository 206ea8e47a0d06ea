"""numpy's and scipy's OpenBLAS thread pools in a server process.

OpenBLAS starts a pool of one thread per core and splits every large enough product over it.
In a server that already runs requests on many threads (and processes) at once, that helps no
call and costs all of them: the band sums of each utterance's fingerprint (a 352 x 594 by
594 x 33 product for 3 s) went to the pool, whose threads then spun on the cores the request
threads needed (docs/scaling.md, "BLAS threads and the fingerprint's memory"). torch and ONNX
Runtime keep their own pools, which `Settings.encoder_threads` sets; this touches only OpenBLAS.
"""

from __future__ import annotations

# Imported for their side effect: each loads its own OpenBLAS, which threadpoolctl finds only
# once loaded.
import numpy  # noqa: F401
import scipy.linalg  # noqa: F401
from threadpoolctl import ThreadpoolController, threadpool_info  # type: ignore[import-untyped]

OPENBLAS = "openblas"


def single_threaded_blas() -> list[str]:
    """Every OpenBLAS loaded in this process runs each call on the calling thread, from now on.

    Process-wide (threadpoolctl sets it in the libraries themselves), so it is called once at a
    server process's start. Returns the libraries limited.
    """
    ThreadpoolController().select(internal_api=OPENBLAS).limit(limits=1)
    return list(blas_threads())


def blas_threads() -> dict[str, int]:
    """Each loaded OpenBLAS library's thread count (file name to threads)."""
    return {
        str(lib["filepath"]).rsplit("/", 1)[-1]: int(lib["num_threads"])
        for lib in threadpool_info()
        if lib["internal_api"] == OPENBLAS
    }
