"""The stage layer: one module per DVC stage, the code that reads and writes the project's files.

Each `pipeline/stages/<stage>.py` has `run(sections, layout) -> result`: it validates the stage's
params sections once, reads its inputs through a `pipeline.layout.Layout`, calls the pure step
functions and writes its outputs atomically (`pipeline.io`). The notebooks call `run` (or `load`,
which recomputes without writing). This package imports none of its modules: a stage's `deps` in
dvc.yaml list only the stage modules it runs.
"""
