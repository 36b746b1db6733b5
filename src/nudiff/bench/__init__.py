"""nudiff benchmarks, run by ``nudiff bench NAME``; each module has ``add_arguments`` and
``run(args) -> dict`` and reports ratios against a baseline measured in the same process."""
