"""Benchmarks: `python -m bench NAME [--quick]`; `python -m bench --list` names them.

Each benchmark is a module `bench/<name>.py` with a one-line docstring and a function
`run(*, quick: bool, seed: int) -> dict` returning its figures. The runner adds the machine,
the command, the wall time and the seeds, and writes `bench/results/<name>[-quick].json`.
"""
