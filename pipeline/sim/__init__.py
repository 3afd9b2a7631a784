"""Step 7b: the engine model. A pure step module, numpy/numba inside.

- `cost`: the iteration-time model (physics terms x calibrated coefficients);
- `engine`: the discrete-event continuous-batching scheduler (vLLM V1 / SGLang style);
- `router`: several replicas behind a router;
- `calibrate`: fitting the coefficients on measured sweeps, with honest residuals.
"""

import hashlib as _hashlib
import os as _os
from pathlib import Path as _Path

KERNEL_CACHE_ENV = "SIZING_NUMBA_CACHE_DIR"  # where compiled kernels are kept; default: this package's __pycache__
_SOURCES = ("cost.py", "engine.py", "router.py")  # every numba source of this package (step_time is inlined)


def _kernel_cache_dir() -> str:
    """numba's on-disk cache for this package's kernels: a folder named by a hash of every numba source.

    numba invalidates a cached function only when its own file changes, not when a function it inlines does
    (engine.py and router.py build in cost.step_time). After an edit to cost.py, an old cache would silently
    run the old step time; a folder per source hash makes any edit compile afresh. The folder lies under
    $SIZING_NUMBA_CACHE_DIR when set (several checkouts or git worktrees of one version then compile once),
    else in this package's own __pycache__."""
    here = _Path(__file__).resolve().parent
    digest = _hashlib.sha256()
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    base = _os.environ.get(KERNEL_CACHE_ENV) or str(here / "__pycache__")
    return str(_Path(base) / f"numba-{digest.hexdigest()[:12]}")


def _use_kernel_cache() -> None:
    """Cache this package's kernels in _kernel_cache_dir(), wherever the checkout lies, before any is decorated.

    Why a locator of our own: numba's NUMBA_CACHE_DIR locator files a function under a hash of its source
    folder's absolute path, so a copy of the project elsewhere (a worktree, the tests' temporary projects)
    never finds a cache built by another, although its sources, and so its folder above, are the same. The
    folder already names the sources' content, so the path adds nothing. numba still checks each entry
    against its source file's content hash and the compile target before loading it. Other packages'
    numba functions keep numba's own locators."""
    from numba.core import caching

    here = _Path(__file__).resolve().parent
    primary = _kernel_cache_dir()
    # where the checkout cannot be written (an installed copy): a user-wide folder, still keyed by the sources'
    # hash, rather than numba's own user-wide locator, which is keyed by path and would keep a stale inlined callee
    user_wide = _Path(_os.environ.get("XDG_CACHE_HOME") or _Path.home() / ".cache") / "llm-fleet-sizing"
    fallback = str(user_wide / _Path(primary).name)

    class KernelCacheLocator(caching.UserProvidedCacheLocator):
        """numba's user-directory locator for this package's sources, filing every kernel in one folder."""

        cache_dir = primary

        def __init__(self, py_func: object, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno  # type: ignore[attr-defined]
            self._cache_path = self.cache_dir

        @classmethod
        def from_function(cls, py_func: object, py_file: str) -> object:
            if _Path(py_file).resolve().parent != here:
                return None
            # numba's own checks (the source exists, the folder is writable), skipping the NUMBA_CACHE_DIR test
            found = super(caching.UserProvidedCacheLocator, cls).from_function(py_func, py_file)
            if found is None and cls.cache_dir != fallback:
                cls.cache_dir = fallback
                found = super(caching.UserProvidedCacheLocator, cls).from_function(py_func, py_file)
            return found

    if not any(k.__name__ == KernelCacheLocator.__name__ for k in caching.CacheImpl._locator_classes):
        caching.CacheImpl._locator_classes.insert(0, KernelCacheLocator)


_use_kernel_cache()
