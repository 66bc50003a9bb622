"""Child-process entry point: ``python -m bench._worker TASK JSON_ARGS`` (see bench.subproc)."""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> None:
    task, args = argv[0], json.loads(argv[1])
    if task == "compile":
        import torch._dynamo

        # each batch size is its own static graph: no dynamic-shape recompile between sizes
        torch._dynamo.config.automatic_dynamic_shapes = False
        from .steps import compile_task

        compile_task(args)
    elif task == "map":
        from .maps import map_task

        map_task(args)
    elif task == "bigmap":
        from .large_maps import bigmap_task

        bigmap_task(args)
    elif task == "analyze":
        from .analyze import analyze_task

        analyze_task(args)
    elif task == "sleep":          # for the tests of the budget itself
        import time

        from .subproc import emit

        emit({"event": "start"})
        time.sleep(float(args.get("seconds", 60)))
        emit({"event": "done"})
    else:
        raise SystemExit(f"bench._worker: unknown task {task!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
