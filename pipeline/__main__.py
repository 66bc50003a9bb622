import atexit
import os
import sys

from .cli import main

rc = main()
if sys.getprofile() is None and sys.gettrace() is None:   # not under a profiler, debugger or coverage
    # Leave without the interpreter's module teardown: after `import torch` alone it takes ~1.1 s on
    # a 2-core box, ~2.7 s after a short train + analyze, and every job step and the demo's preview
    # pays it. What teardown would still do for us runs first: the atexit handlers (multiprocessing's
    # worker shutdown, temporary-folder finalizers, logging) and the flush of both streams.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 0)
sys.exit(rc)
