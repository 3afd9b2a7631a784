"""Step 7b: the engine model. A pure step module, numpy/numba inside.

- `cost`: the iteration-time model (physics terms x calibrated coefficients);
- `engine`: the discrete-event continuous-batching scheduler (vLLM V1 / SGLang style);
- `router`: several replicas behind a router;
- `calibrate`: fitting the coefficients on measured sweeps, with honest residuals.
"""
