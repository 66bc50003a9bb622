"""The bench suite: presets per mode and the orchestrator that turns measurements into rows.

Sections (issue 5, part 1): (a) our training step vs the bare model step, (b) torch.compile on
vs off, (c) embedding extraction vs the bare forward pass, (d) openTSNE vs scikit-learn t-SNE vs
UMAP at 10k and 35k points, (e) ``analyze`` wall time and peak memory at 35k and 450k images.

(a) and (c) run in this process; everything that can run long runs in a child under its own
budget, and the whole suite under a total deadline (``Preset.total_s``, scaled by ``--budget``):
a job that would overrun it is cut and reported as a bound, or skipped with the reason.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .report import Row
from .steps import StepSetup

# The 450k run gets maps="pca" only, to stay inside the suite's time: above pipeline.maps.MAX_FIT
# (100k) t-SNE and UMAP are fit on a sample and the rest placed with transform, which still takes
# minutes at 450k; python -m bench.large_maps measures that.
NOTE_450K_MAPS = "maps=pca only, to fit the suite's 10 minutes: t-SNE/UMAP at 450k are measured by python -m bench.large_maps"


@dataclass(frozen=True)
class Preset:
    mode: str
    quick: bool
    steps: StepSetup
    per_class: tuple[int, ...]            # (a): one row per batch size = classes * per_class
    step_rounds: int
    step_round_s: float
    embed_n: int
    embed_rounds: int
    embed_round_s: float
    compile_per_class: tuple[int, ...]
    compile_rounds: int
    compile_round_s: float
    compile_budget: float                 # seconds for the (b) child
    map_sizes: tuple[int, ...]
    opentsne_budget: tuple[float, ...]    # one per map size
    sklearn_budget: tuple[float, ...]
    umap_budget: float                    # one child: first fit (compile), warm refit, other sizes
    umap_skip: str = ""                   # reason, when UMAP is left out
    tsne_iters: tuple[int, int] = (250, 500)   # (early exaggeration, then) = pipeline.maps.DEFAULTS
    step_max_s: float | None = None       # (a), per batch size: no new round after this
    embed_max_s: float | None = None      # (c)
    analyze_jobs: tuple[tuple[int, tuple[str, ...], float], ...] = ()   # (images, maps, budget)
    total_s: float = 570.0                # the deadline for everything
    notes: dict = field(default_factory=dict)

    def scaled(self, total_s: float) -> "Preset":
        f = total_s / self.total_s
        return replace(self, compile_budget=self.compile_budget * f,
                       opentsne_budget=tuple(b * f for b in self.opentsne_budget),
                       sklearn_budget=tuple(b * f for b in self.sklearn_budget),
                       umap_budget=self.umap_budget * f,
                       analyze_jobs=tuple((n, m, b * f) for n, m, b in self.analyze_jobs), total_s=total_s)


def preset(mode: str, *, quick: bool = False) -> Preset:
    if mode == "cpu" and not quick:
        # sized for a 2-core machine shared with other work: under 10 minutes in all
        return Preset(
            mode="cpu", quick=False,
            steps=StepSetup(backbone="light", image_size=48, classes=8, per_class=32, n_images=4096, device="cpu"),
            # one step of each in turn, many times: neighbours in time see the same load
            per_class=(32,), step_rounds=30, step_round_s=0.0, step_max_s=45.0,
            embed_n=512, embed_rounds=20, embed_round_s=0.0, embed_max_s=25.0,
            compile_per_class=(32,), compile_rounds=2, compile_round_s=2.0, compile_budget=40.0,
            map_sizes=(10_000, 35_000), opentsne_budget=(45.0, 65.0), sklearn_budget=(55.0, 20.0),
            umap_budget=90.0,
            analyze_jobs=((35_000, ("pca",), 40.0), (450_000, ("pca",), 90.0)),
            total_s=570.0)
    if mode == "cpu":
        return Preset(
            mode="cpu", quick=True,
            steps=StepSetup(backbone="light", image_size=48, classes=8, per_class=4, n_images=256, device="cpu"),
            per_class=(4,), step_rounds=1, step_round_s=0.2,
            embed_n=256, embed_rounds=1, embed_round_s=0.1,
            compile_per_class=(4,), compile_rounds=1, compile_round_s=0.2, compile_budget=1.0,
            map_sizes=(200,), opentsne_budget=(20.0,), sklearn_budget=(20.0,),
            umap_budget=0.0, umap_skip="--quick (UMAP's numba compile alone takes ~45 s)", tsne_iters=(25, 25),
            analyze_jobs=((1_000, ("pca",), 30.0), (2_000, ("pca",), 30.0)),
            total_s=120.0)
    if mode == "gpu" and not quick:
        # about 4-5 minutes on one H100/H200: the GPU sections get most of it
        return Preset(
            mode="gpu", quick=False,
            steps=StepSetup(backbone="resnet18", image_size=48, classes=8, per_class=32, n_images=32_768,
                            device="cuda", bf16=True),
            per_class=(32, 128), step_rounds=3, step_round_s=1.5, step_max_s=20.0,
            embed_n=65_536, embed_rounds=3, embed_round_s=1.0, embed_max_s=15.0,
            compile_per_class=(128, 32), compile_rounds=2, compile_round_s=1.5, compile_budget=100.0,
            map_sizes=(10_000, 35_000), opentsne_budget=(15.0, 30.0), sklearn_budget=(20.0, 20.0),
            umap_budget=40.0,
            analyze_jobs=((35_000, ("pca",), 20.0), (450_000, ("pca",), 45.0)),
            total_s=300.0,
            notes={"a": "anchor (H200, plain loop): bare eager 23,600 img/s at 256, 31,800 at 1024",
                   "b": "anchor (H200): bare compiled 43,000 img/s at 1024",
                   "c": "anchor (H200): 115,000 img/s embedding"})
    if mode == "gpu":
        return Preset(
            mode="gpu", quick=True,
            steps=StepSetup(backbone="resnet18", image_size=48, classes=8, per_class=32, n_images=8192,
                            device="cuda", bf16=True),
            per_class=(32,), step_rounds=2, step_round_s=0.5,
            embed_n=8192, embed_rounds=2, embed_round_s=0.3,
            compile_per_class=(32,), compile_rounds=1, compile_round_s=0.5, compile_budget=90.0,
            map_sizes=(2_000,), opentsne_budget=(20.0,), sklearn_budget=(20.0,),
            umap_budget=0.0, umap_skip="--quick (UMAP's numba compile alone takes ~45 s)", tsne_iters=(25, 25),
            analyze_jobs=((5_000, ("pca",), 20.0),),
            total_s=200.0)
    raise ValueError(f"unknown bench mode {mode!r}; choose cpu or gpu")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


class Suite:
    def __init__(self, p: Preset, *, workdir: Path):
        self.p = p
        self.workdir = Path(workdir)
        self.t0 = time.perf_counter()
        self.rows: list[Row] = []
        self.raw: dict = {}
        self.pending = self.plan()

    # -- time keeping ---------------------------------------------------------------------------
    def left(self) -> float:
        return self.p.total_s - (time.perf_counter() - self.t0)

    def plan(self) -> dict[str, float]:
        """Every child job of the preset and its nominal budget, in the order they run."""
        p = self.p
        jobs = {"compile": p.compile_budget}
        for i, n in enumerate(p.map_sizes):
            jobs[f"opentsne:{n}"] = p.opentsne_budget[i]
            jobs[f"sklearn:{n}"] = p.sklearn_budget[i]
        if not p.umap_skip:
            jobs["umap"] = p.umap_budget
        for n, _, b in p.analyze_jobs:
            jobs[f"analyze:{n}"] = b
        return jobs

    def budget(self, job: str) -> float:
        """The budget of ``job``: its nominal one, shrunk in proportion when the work before it ran
        long, so that an overrun is shared by every job still to come instead of the last ones."""
        nominal = self.pending.pop(job)
        rest = nominal + sum(self.pending.values())
        return max(0.0, min(nominal, self.left() * nominal / rest if rest > 0 else 0.0))

    def add(self, row: Row) -> None:
        self.rows.append(row.finish())

    # -- (a) ------------------------------------------------------------------------------------
    def train_steps(self) -> None:
        from .steps import train_step

        for pc in self.p.per_class:
            s = replace(self.p.steps, per_class=pc)
            t = time.perf_counter()
            res = train_step(s, rounds=self.p.step_rounds, round_s=self.p.step_round_s, max_s=self.p.step_max_s)
            self.raw.setdefault("a", []).append(res)
            note = "eager; ours = sampler + uint8 indexing + augment + SGM (soft targets) + Adam through pipeline.step.make_step"
            if self.p.notes.get("a"):
                note += "; " + self.p.notes["a"]
            self.add(Row("a", f"training step ({s.describe()})", "ours", res["ours"]["ips"], "bare",
                         res["bare"]["ips"], "img/s", note=note))
            _say(f"(a) batch {s.batch}: ours {res['ours']['ips']:.0f} img/s, bare {res['bare']['ips']:.0f} img/s "
                 f"({time.perf_counter() - t:.0f} s)")

    # -- (b) ------------------------------------------------------------------------------------
    def compile(self) -> None:
        from .subproc import run_child

        s = self.p.steps
        budget = self.budget("compile")
        kinds = ["bare"] + (["ours"] if s.device.startswith("cuda") else [])
        expected = [(k, replace(s, per_class=pc)) for pc in self.p.compile_per_class for k in kinds]
        if budget < 1.0:
            for k, ss in expected:
                self.add(Row("b", f"torch.compile, {k} step ({ss.describe()})", status="skipped",
                             note="the total time budget was spent"))
            return
        # a cache of its own: the compile time is a cold one, and a child stopped in the middle of
        # writing a kernel (.so) cannot leave a truncated file in the machine's shared cache
        cache = self.workdir / "inductor-cache"
        res = run_child("compile", {"setup": asdict(s), "per_class": list(self.p.compile_per_class),
                                    "rounds": self.p.compile_rounds, "round_s": self.p.compile_round_s},
                        budget_s=budget, env={"TORCHINDUCTOR_CACHE_DIR": str(cache),
                                              "TRITON_CACHE_DIR": str(cache / "triton")})
        self.raw["b"] = res.results
        measured = {(r["kind"], r["batch"]): r for r in res.results if r.get("event") == "measured"}
        compiled = {(r["kind"], r["batch"]): r for r in res.results if r.get("event") == "compiled"}
        for k, ss in expected:
            name = f"torch.compile, {k} step ({ss.describe()})"
            r = measured.get((k, ss.batch))
            if r is not None:
                note = f"compile + first 2 steps {r['compile_s']:.0f} s"
                if k == "ours":
                    note += " (the trainer's --compile)"
                if self.p.notes.get("b"):
                    note += "; " + self.p.notes["b"]
                self.add(Row("b", name, "compiled", r["compiled"], "eager", r["eager"], "img/s", note=note))
            elif res.error:
                self.add(Row("b", name, status="failed", note=res.error))
            elif (k, ss.batch) in compiled:
                self.add(Row("b", name, status="skipped",
                             note=f"compiled in {compiled[(k, ss.batch)]['compile_s']:.0f} s, but the {budget:.0f} s budget ran out while measuring"))
            else:
                self.add(Row("b", name, status="skipped", note=f"compile did not finish within its {budget:.0f} s budget"))
        _say(f"(b) torch.compile: {len(measured)}/{len(expected)} measured ({res.wall_s:.0f} s)")

    # -- (c) ------------------------------------------------------------------------------------
    def embedding(self) -> None:
        from .steps import embedding

        t = time.perf_counter()
        s = self.p.steps
        res = embedding(s, n=self.p.embed_n, rounds=self.p.embed_rounds, round_s=self.p.embed_round_s,
                        max_s=self.p.embed_max_s)
        self.raw["c"] = res
        what = f"{s.backbone} {s.image_size}px, {_k(self.p.embed_n)} images, {torch_dev(s)}"
        note = "eval, batches of 1024" + ("; " + self.p.notes["c"] if self.p.notes.get("c") else "")
        self.add(Row("c", f"embedding, resident uint8 tensor ({what})", "embed_images", res["resident"]["ips"],
                     "bare fwd", res["bare"]["ips"], "img/s", note=note))
        self.add(Row("c", f"embedding, NumPy input as write_outputs passes it ({what})", "embed_images",
                     res["numpy"]["ips"], "bare fwd", res["bare"]["ips"], "img/s",
                     note="includes the host-to-device copy of each batch"))
        _say(f"(c) embedding: {res['resident']['ips']:.0f} / {res['numpy']['ips']:.0f} img/s vs bare "
             f"{res['bare']['ips']:.0f} ({time.perf_counter() - t:.0f} s)")

    # -- (d) ------------------------------------------------------------------------------------
    def maps(self) -> None:
        from .maps import sklearn_estimate
        from .subproc import run_child
        from .synthetic import gaussian_mixture

        sizes = self.p.map_sizes
        paths = {}
        for n in sizes:
            z, _ = gaussian_mixture(n, seed=1)
            paths[str(n)] = str(self.workdir / f"emb_{n}.npy")
            np.save(paths[str(n)], z)
        cells: dict[tuple[str, int, str], tuple] = {}     # (method, n, fit) -> (seconds, bound, note)
        ee, it = self.p.tsne_iters
        total_iters = max(250, ee + it)                   # sklearn's floor; it always exaggerates 250

        def collect(method: str, plan: list[tuple[int, str]], res, b: float) -> None:
            done = {(r["n"], r["fit"]): r for r in res.results if r.get("event") == "done"}
            started = {(r["n"], r["fit"]): r for r in res.results if r.get("event") == "start"}
            for key in plan:
                if key in done:
                    cells[(method, *key)] = (done[key]["seconds"], None, "")
                elif res.error:
                    cells[(method, *key)] = (None, "failed", res.error)
                elif key in started:             # in flight when the budget ran out: a lower bound
                    note = f"{method} cut by its {b:.0f} s budget"
                    if method == "sklearn":
                        prog = [r for r in res.results if r.get("event") == "progress" and r["n"] == key[0]]
                        est = sklearn_estimate(prog, total_iters)
                        if prog:
                            note = f"sklearn cut at {prog[-1]['iter']}/{total_iters} iterations" + (
                                f", ~{est:.0f} s extrapolated" if est is not None else "")
                        else:
                            note = "sklearn cut before its first 50 iterations (still on neighbours/affinities)"
                    cells[(method, *key)] = (b - started[key]["_t"], ">=", note)
                else:
                    cells[(method, *key)] = (None, None, f"{method} not reached within its {b:.0f} s budget")

        for i, n in enumerate(sizes):
            for method in ("opentsne", "sklearn"):
                b = self.budget(f"{method}:{n}")
                if b < 2.0:
                    cells[(method, n, "first")] = (None, None, "the total time budget was spent")
                    continue
                res = run_child("map", {"method": method, "sizes": [n], "paths": paths, "tsne_iters": list(self.p.tsne_iters)},
                                budget_s=b)
                collect(method, [(n, "first")], res, b)
                v = cells[(method, n, "first")]
                _say(f"(d) {method} {_k(n)}: {v[1] or ''}{v[0] if v[0] is None else round(v[0], 1)} s ({res.wall_s:.0f} s)")

        plan = [(sizes[0], "first"), (sizes[0], "warm")] + [(n, "first") for n in sizes[1:]]
        if self.p.umap_skip:
            for key in plan:
                cells[("umap", *key)] = (None, None, self.p.umap_skip)
        else:
            b = self.budget("umap")
            if b < 2.0:
                for key in plan:
                    cells[("umap", *key)] = (None, None, "the total time budget was spent")
            else:
                res = run_child("map", {"method": "umap", "sizes": list(sizes), "paths": paths}, budget_s=b)
                collect("umap", plan, res, b)
                _say(f"(d) umap: {[cells[('umap', *k)][0] for k in plan]} ({res.wall_s:.0f} s)")

        none = (None, None, "")
        for i, n in enumerate(sizes):
            o = cells.get(("opentsne", n, "first"), none)
            self.add(self._time_row("d", f"t-SNE, {_k(n)} points (64-D mixture): openTSNE vs scikit-learn",
                                    "openTSNE", o, "sklearn", cells.get(("sklearn", n, "first"), none),
                                    f"{ee + it} iterations each ({ee} exaggerated), perplexity 30, PCA init, 2 threads"))
            # the UMAP child compiled on its first fit; later fits in it are warm
            u = cells.get(("umap", n, "warm" if i == 0 else "first"), none)
            self.add(self._time_row("d", f"openTSNE vs UMAP (warm, 200 epochs), {_k(n)} points", "openTSNE", o,
                                    "UMAP", u, "project defaults (pipeline.maps.DEFAULTS)"))
        row = self._time_row("d", f"UMAP first fit in a process vs warm refit, {_k(sizes[0])} points", "first",
                             cells.get(("umap", sizes[0], "first"), none), "warm",
                             cells.get(("umap", sizes[0], "warm"), none), "")
        if row.status == "ok" and row.a_bound is None and row.b_bound is None:
            row.note = f"import + numba compile ~{row.a_value - row.b_value:.0f} s, paid once per process"
        self.add(row)

    @staticmethod
    def _time_row(section: str, name: str, a_label: str, a: tuple, b_label: str, b: tuple, note: str) -> Row:
        a_val, a_bound, a_note = a
        b_val, b_bound, b_note = b
        row = Row(section, name, a_label, a_val, b_label, b_val, "s",
                  a_bound=a_bound if a_bound == ">=" else None, b_bound=b_bound if b_bound == ">=" else None)
        notes = [x for x in (a_note, b_note) if x]
        if a_bound == "failed" or b_bound == "failed":
            row.status = "failed"
        elif a_val is None or b_val is None:
            row.status = "skipped"
            notes = notes or ["not measured"]
        row.note = "; ".join(notes + ([note] if note and row.status not in ("skipped", "failed") else []))
        return row

    # -- (e) ------------------------------------------------------------------------------------
    def analyze(self) -> None:
        from .subproc import run_child
        from .synthetic import build_run

        per_step: dict[int, dict] = {}
        for j, (n, maps, nominal) in enumerate(self.p.analyze_jobs):
            name = f"analyze, {_k(n)} images (maps={'+'.join(maps)})"
            run_path = self.workdir / f"run_{n}"
            t = time.perf_counter()
            build_run(run_path, n, seed=2)
            built_s = time.perf_counter() - t
            b = self.budget(f"analyze:{n}")
            if b < 2.0:
                self.add(Row("e", name, status="skipped", note="the total time budget was spent"))
                continue
            res = run_child("analyze", {"run": str(run_path), "maps": list(maps)}, budget_s=b)
            self.raw.setdefault("e", []).append({"n": n, "results": res.results, "build_s": built_s})
            ready = next((r for r in res.results if r.get("event") == "ready"), {})
            done = next((r for r in res.results if r.get("event") == "done"), None)
            logs = [r for r in res.results if r.get("event") == "log"]
            base = ready.get("rss_after_imports_mb")
            notes = []
            if done is not None:
                per_step[n] = done["timings"]
                peak = done["peak_rss_mb"]
                steps = ", ".join(f"{k.replace('map_', 'map ')} {v:.1f} s" for k, v in done["timings"].items() if k != "total")
                row = Row("e", name, "wall", done["seconds"], unit="s")
                notes.append(f"peak RSS {peak:,.0f} MB ({base:,.0f} MB after imports)" if base else f"peak RSS {peak:,.0f} MB")
                notes.append(steps)
            elif res.error:
                row = Row("e", name, status="failed", note=res.error)
                self.add(row)
                continue
            else:
                # analyze itself started when the child reported its imports done
                row = Row("e", name, "wall", b - ready.get("_t", 0.0), unit="s", a_bound=">=")
                peak = res.peak_rss_mb
                done_steps = [l["msg"] for l in logs]
                nxt = ["sub-classes", "mislabels", "confusion/summary/maps"][min(len(done_steps), 2)]
                notes.append(f"cut by its {b:.0f} s budget during {nxt}")
                if done_steps:
                    notes.append("done: " + "; ".join(done_steps))
                if peak:
                    notes.append(f"peak RSS so far {peak:,.0f} MB" + (f" ({base:,.0f} MB after imports)" if base else ""))
            first_n = self.p.analyze_jobs[0][0]
            if n != first_n and done is not None and first_n in per_step:
                t0_first = per_step[first_n]["total"]
                notes.append(f"{done['timings']['total'] / t0_first:.1f}x the {_k(first_n)} time for "
                             f"{n / first_n:.1f}x the images")
            if n >= 100_000 and "tsne" not in maps:
                notes.append(NOTE_450K_MAPS)
            row.note = "; ".join(notes)
            row.extra = {"peak_rss_mb": peak, "rss_after_imports_mb": base, "n": n, "build_s": round(built_s, 1)}
            self.add(row)
            _say(f"(e) {name}: {row.a_bound or ''}{row.a_value:.0f} s ({res.wall_s:.0f} s)")

    # -- everything -----------------------------------------------------------------------------
    def run(self) -> list[Row]:
        self.train_steps()
        self.embedding()
        self.compile()
        self.maps()
        self.analyze()
        return self.rows


def torch_dev(s: StepSetup) -> str:
    return "cuda" if s.device.startswith("cuda") else s.device


def run_suite(p: Preset) -> tuple[list[Row], dict, float]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        suite = Suite(p, workdir=Path(tmp))
        rows = suite.run()
    return rows, suite.raw, time.perf_counter() - t0
