"""Step 7b: the engine model. A pure step module, numpy/numba inside.

- `cost`: the iteration-time model (physics terms x calibrated coefficients);
- `engine`: the discrete-event continuous-batching scheduler (vLLM V1 / SGLang style);
- `router`: several replicas behind a router;
- `calibrate`: fitting the coefficients on measured sweeps, with honest residuals.
"""

import hashlib as _hashlib
from pathlib import Path as _Path


def _kernel_cache_dir() -> str:
    """numba's on-disk cache, in a folder named by a hash of every numba source of this package.

    numba invalidates a cached function only when its own file changes, not when a function it inlines does
    (engine.py and router.py build in cost.step_time). After an edit to cost.py, an old cache would silently
    run the old step time; a folder per source hash makes any edit compile afresh."""
    here = _Path(__file__).resolve().parent
    digest = _hashlib.sha256()
    for name in ("cost.py", "engine.py", "router.py"):
        digest.update((here / name).read_bytes())
    return str(here / "__pycache__" / f"numba-{digest.hexdigest()[:12]}")


def _use_kernel_cache() -> None:
    """Point numba's cache at _kernel_cache_dir() before any kernel of this package is decorated."""
    import numba

    numba.config.CACHE_DIR = _kernel_cache_dir()


_use_kernel_cache()
