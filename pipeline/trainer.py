"""Algorithm 1 (SGM training) and the DGMS level loop of Algorithm 2: the :class:`Trainer`, its
fit, validation score and finishing pass, writing a run directory.
(Augmentation: :mod:`pipeline.augment`; one step: :mod:`pipeline.step`; torchrun: :mod:`pipeline.distributed`;
cross-fit fold models: :mod:`pipeline.crossfit`; the finishing pass's files: :mod:`pipeline.outputs`.)

The whole image tensor (N, S, S) uint8 lives on the training device; class-balanced batches are
indexed out of it and augmented there (flip, shift, small rotation, brightness/contrast, random
erasing), so no CPU DataLoader sits on the hot path. Every random draw comes from generators
seeded by (seed, epoch[, step]), which makes a run resumed at an epoch boundary identical to an
uninterrupted one on the CPU.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from . import metrics as M
from .augment import step_generator
from .config import ConfigError, RunConfig
from .corrections import CORRECTIONS_TABLE
from .distributed import NullRun, distributed, embed_sharded
from .errors import TrainingError, one_line
from .embed import embed_images, pick_device
from .hierarchy import resolve_features
from .models import build_model
from .outputs import write_outputs
from .progress import Event
from .progress import write as write_event
from .runs import (PROGRESS, STATUS_COMPLETE, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_RUNNING, Run,
                   RunError, create_run, load_torch, open_run, save_torch)
from .sampling import ClassBalancedSampler
from .step import cosine_lr, make_step
from .sources import Dataset, DataError, load_source


# ----------------------------------------------------------------------------- helpers
@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (the explorer's cancel) behaves like Ctrl-C: the run is left resumable."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    old = None
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:        # not the main thread
        pass
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def soft_targets(ds: Dataset) -> np.ndarray | None:
    if ds.votes is None:
        return None
    v = ds.votes.astype(np.float32)
    s = v.sum(1, keepdims=True)
    onehot = np.eye(ds.num_classes, dtype=np.float32)[ds.table["label"].to_numpy()]
    return np.where(s > 0, v / np.maximum(s, 1e-12), onehot)


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    def __init__(self, cfg: RunConfig, out: Path, *, resume: bool = False, quiet: bool = False,
                 progress_bar: bool = True, dataset: Dataset | None = None):
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        self.quiet = quiet
        self.progress_bar = progress_bar and not quiet
        self.ds = dataset
        self.rank, self.world, self.main = 0, 1, True     # set for real in run() under torchrun

    # -- setup ---------------------------------------------------------------------------------
    def _validate(self) -> None:
        c = self.cfg
        try:
            c.validate()
        except ConfigError as exc:
            raise TrainingError(str(exc)) from None
        world = distributed()[1]
        if world > 1 and c.train.per_class % world:
            raise TrainingError(f"--per-class {c.train.per_class} must be a multiple of the {world} processes")

    def _open_run(self) -> Run:
        cfgd = self.cfg.to_dict()
        if self.resume:
            try:
                run = open_run(self.out, require_complete=False, check_files=False)
            except RunError as exc:
                raise RunError(f"cannot resume: {exc}") from None
            if run.status == STATUS_COMPLETE:
                raise RunError(f"{self.out}: run is already complete; nothing to resume")
            if run.manifest.get("config") != cfgd:
                raise RunError(f"{self.out}: holds a run with a different configuration; resume with the same options")
            return run
        return create_run(self.out, config=cfgd, classes=self.ds.classes)

    # -- main ----------------------------------------------------------------------------------
    def run(self) -> Run:
        self._validate()
        t0 = time.time()
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % (2 ** 32))
        if self.ds is None:
            self.ds = load_source(cfg.data.spec, cfg.data)
        lineage = {}
        if cfg.data.labels_from:
            # before the run directory exists: a bad corrections file trains nothing
            from .corrections import apply_corrections

            self.ds, lineage["corrections"], self.correction_log = apply_corrections(self.ds, cfg.data.labels_from)
            if cfg.data.parent:
                lineage["parent"] = cfg.data.parent
            a = lineage["corrections"]["applied"]
            say(f"corrections from {cfg.data.labels_from}: {a['relabel']} relabelled, {a['drop']} dropped from "
                 f"training, {a['keep']} kept, {a['test_untouched']} on test images left as they are", self.quiet)
        if cfg.data.dedupe:
            from .quality import dedupe_rows, find_duplicates

            pairs, counts = find_duplicates(self.ds.images, self.ds.table["split"].to_numpy())
            drop = dedupe_rows(pairs, self.ds.table["split"].to_numpy())
            lineage["dedupe"] = {**counts, "dropped": int(drop.sum())}
            if drop.any():
                self.ds = self.ds.subset(np.flatnonzero(~drop))
            say(f"--dedupe: {int(drop.sum())} duplicate image(s) left out of training "
                 f"({counts['test_leaked']} test image(s) had a copy in train)", self.quiet)
        ds = self.ds
        if cfg.data.on_bad_image == "skip" and ds.skipped:
            say(f"skipped {len(ds.skipped)} unreadable image(s), e.g. {ds.skipped[0][0]}: {ds.skipped[0][1]}", self.quiet)
        train_rows = ds.split_index("train")
        if len(train_rows) == 0:
            raise DataError(f"{ds.name}: the train split is empty")
        y_all = ds.table["label"].to_numpy().astype(np.int64)
        present = np.unique(y_all[train_rows])
        if len(present) < 2:
            raise DataError(f"{ds.name}: the train split holds fewer than 2 classes")
        try:
            self.split_features = resolve_features(cfg.hierarchy.features, ds.votes is not None)
        except ValueError as exc:
            raise TrainingError(f"{ds.name}: {exc}") from None
        missing = [ds.classes[c] for c in range(ds.num_classes) if c not in set(present.tolist())]
        if missing:
            say(f"warning: class(es) with no training images are left out of training: {', '.join(missing)}", self.quiet)

        self.rank, self.world, local = distributed()
        self.main = self.rank == 0
        if self.main:
            run = self._open_run()
            if lineage:
                old = run.manifest.get("corrections")
                if self.resume and old and "corrections" in lineage and old.get("sha256") != lineage["corrections"]["sha256"]:
                    raise RunError(f"cannot resume: {cfg.data.labels_from} changed since this run started "
                                   "(its corrections differ); start a new run")
                run.save_manifest(**lineage)
                if "corrections" in lineage:
                    run.put_table(CORRECTIONS_TABLE, self.correction_log)
        else:
            run = NullRun(self.out)
            self.quiet, self.progress_bar = True, False
        self.runobj = run
        progress = run.path / PROGRESS
        if self.world > 1 and cfg.train.device in ("auto", "cuda") and torch.cuda.is_available():
            dev = torch.device(f"cuda:{local}")
        else:
            dev = pick_device(cfg.train.device)
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()          # rank 0 has created (or checked) the run directory
        run.save_manifest(status=STATUS_RUNNING, device=str(dev), message="",
                          data={"spec": cfg.data.spec, "n_images": int(len(ds.table)),
                                "splits": {s: int((ds.table["split"] == s).sum()) for s in ("train", "val", "test")},
                                "skipped": len(ds.skipped), "skipped_examples": ds.skipped[:20]})

        try:
            with _sigterm_as_interrupt():
                self._fit(run, ds, dev, train_rows, y_all, progress)
                self._finalize(run, ds, dev)
                if cfg.train.crossfit >= 2 and self.main:
                    from .crossfit import crossfit      # (its fold models are Trainers)
                    crossfit(run, ds, cfg, quiet=self.quiet, progress_bar=self.progress_bar)
        except KeyboardInterrupt:
            self._event(progress, Event("error", time.time(), message="interrupted"))
            run.save_manifest(status=STATUS_INTERRUPTED,
                              message="interrupted; resume with `python -m pipeline train ... --resume`")
            raise
        except TrainingError as exc:
            self._event(progress, Event("error", time.time(), message=str(exc)))
            run.save_manifest(status=STATUS_FAILED, message=str(exc))
            raise
        except Exception as exc:
            # an unreadable checkpoint on --resume, a full disk, a bug: say so in the run instead of
            # leaving it "running" with nothing running
            msg = one_line(exc, 300)
            try:
                self._event(progress, Event("error", time.time(), message=msg))
                run.save_manifest(status=STATUS_FAILED, message=msg)
            except Exception:
                pass
            raise
        run.save_manifest(status=STATUS_COMPLETE, wall_s=round(time.time() - t0, 2), message="")
        self._event(progress, Event("done", time.time(), wall_s=round(time.time() - t0, 2)))
        return run

    def _event(self, progress: Path, event: Event) -> None:
        if self.main:
            write_event(progress, event)

    def _save(self, path: Path, obj) -> None:
        if self.main:
            save_torch(path, obj)

    # -- Algorithm 1 / 2 loop ----------------------------------------------------------------------
    def _fit(self, run: Run, ds: Dataset, dev: torch.device, train_rows: np.ndarray, y_all: np.ndarray,
             progress: Path) -> None:
        cfg = self.cfg
        E, L = cfg.train.epochs, cfg.hierarchy.levels
        total_epochs = E * L
        model = build_model(cfg.model, num_classes=ds.num_classes, loss_name=cfg.loss.name,
                            instance=cfg.loss.instance_weight > 0).to(dev)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        net = model          # what the step runs: the model itself, or its DistributedDataParallel wrapper
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

        # labels the loss sees: classes at level 0, DGMS sub-classes later
        cur_labels = y_all.copy()
        start_epoch, best = 0, -1.0
        ckdir = run.path / "checkpoints"
        if self.resume and (ckdir / "last.pt").exists():
            ck = load_torch(ckdir / "last.pt", map_location="cpu")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            start_epoch = int(ck["epoch"])
            best = float(ck.get("best", -1.0))
            cur_labels = ck["labels"].numpy().astype(np.int64)
            # a kill after a checkpoint's rename but before the manifest leaves the manifest with the
            # previous epoch's size for it; a resume with nothing left to train would keep that
            for name in ("last.pt", "best.pt"):
                if (ckdir / name).exists():
                    run.register(f"checkpoints/{name}")
            say(f"resuming {run.path} after epoch {start_epoch}", self.quiet)
        elif self.resume:
            say(f"no checkpoint in {run.path}; starting from the first epoch", self.quiet)

        images = torch.from_numpy(np.ascontiguousarray(ds.images)).to(dev)       # (N, S, S) uint8, resident
        targets_np = soft_targets(ds) if (cfg.loss.soft_targets and cfg.loss.name in ("sgm", "softmax")) else None
        targets = torch.from_numpy(targets_np).to(dev) if targets_np is not None else None
        is_train = np.zeros(len(y_all), bool)
        is_train[train_rows] = True
        val_rows = ds.split_index("val")

        steps_cfg = cfg.train.steps_per_epoch
        step_fn = make_step(model, opt, cfg, ds.num_classes, dev, net=net, world=self.world)
        bar = None
        reported_small = False
        for epoch in range(start_epoch, total_epochs):
            level = epoch // E
            if epoch % E == 0 and level > 0:
                z = embed_sharded(model, images, device=dev)
                # Algorithm 2: split every class of the ORIGINAL labels into level + 1 Gaussians,
                # fit on the training rows; every row gets its component
                from .hierarchy import crowd_features, split_classes
                split_on, cov = z, "diag"
                if self.split_features == "posterior+votes":
                    # the split follows how images are read (posterior + crowd votes); the SGM
                    # rounds that follow teach the embedding to separate those groups by appearance
                    mu = M.class_means(z[train_rows], y_all[train_rows], ds.num_classes)
                    split_on, cov = crowd_features(z, mu, ds.votes, sigma=cfg.loss.sigma), "full"
                cur_labels = split_classes(split_on, y_all, n_components=level + 1, fit_mask=is_train,
                                           min_per_subclass=cfg.hierarchy.min_per_subclass, seed=cfg.train.seed + level,
                                           covariance_type=cov)
                self._event(progress, Event("level", time.time(), level=level + 1,
                                            subclasses=int(cur_labels.max() + 1)))
                say(f"level {level + 1}/{L}: {int(cur_labels.max() + 1)} sub-classes", self.quiet)
            groups = cur_labels[train_rows]
            n_groups = len(np.unique(groups))
            per = cfg.train.per_class if level == 0 else max(8, round(cfg.train.per_class * ds.num_classes / n_groups))
            sampler = ClassBalancedSampler(groups, per_class=per, seed=cfg.train.seed * 1000 + level)
            if sampler.small_classes and not reported_small:
                names = ", ".join(f"{ds.classes[c] if level == 0 else c} ({n})" for c, n in sampler.small_classes.items())
                say(f"note: class(es) smaller than the {per} images a batch needs are drawn with replacement: {names}", self.quiet)
                reported_small = True
            steps = steps_cfg or max(1, math.ceil(len(train_rows) / sampler.batch_size))
            if bar is None and self.progress_bar:
                from tqdm import tqdm
                bar = tqdm(total=(total_epochs - start_epoch) * steps, unit="step", dynamic_ncols=True,
                           desc="train", file=sys.stderr, mininterval=0.5)
            batches = sampler.epoch(epoch, steps)
            model.train()
            t_ep = time.time()
            sums: dict[str, float] = {}
            for s, rows_np in enumerate(batches):
                if self.world > 1:
                    # every rank draws the same global batch and keeps its share of each class block
                    rows_np = rows_np.reshape(-1, per)[:, self.rank::self.world].reshape(-1)
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(cfg.train.lr, epoch, s, E, steps)
                rows = torch.from_numpy(train_rows[rows_np]).to(dev)
                lab = torch.from_numpy(cur_labels[train_rows[rows_np]]).to(dev)
                tgt = targets[rows] if (targets is not None and level == 0) else None
                gen = step_generator(cfg.train.seed, epoch, s) if self.world == 1 else step_generator(cfg.train.seed, epoch, s, self.rank)
                terms = step_fn(images[rows], lab, tgt, gen)
                if not math.isfinite(terms["loss"]):
                    raise TrainingError(f"loss became NaN/inf at epoch {epoch + 1} step {s + 1}; "
                                        f"stopped, last good checkpoint kept in {ckdir / 'last.pt'}")
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{total_epochs}", loss=f"{terms['loss']:.4f}", refresh=False)
                every = max(1, steps // 10)
                if (s + 1) % every == 0 or s + 1 == steps:
                    el = time.time() - t_ep
                    ips = (s + 1) * sampler.batch_size / max(el, 1e-9)
                    remaining = (steps - s - 1) + (total_epochs - epoch - 1) * steps
                    self._event(progress, Event("step", time.time(), epoch=epoch + 1, epochs=total_epochs,
                                                level=level + 1, step=s + 1, steps=steps, loss=terms["loss"],
                                                terms=terms, images_per_s=round(ips, 1), images=len(ds.table),
                                                eta_s=round(remaining * sampler.batch_size / max(ips, 1e-9), 1)))
            mean_terms = {k: v / steps for k, v in sums.items()}
            score = self._val_score(model, images, y_all, train_rows, val_rows, ds.num_classes, dev)
            is_best = score >= best
            best = max(best, score)
            ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "best": best,
                  "labels": torch.from_numpy(cur_labels), "config": cfg.to_dict(), "classes": list(ds.classes),
                  "num_train_classes": ds.num_classes, "val_score": score}
            # best.pt before last.pt: a kill between the two must not leave last.pt saying this epoch is
            # done (so a resume skips it) while best.pt still holds an older, worse epoch
            if is_best:
                self._save(ckdir / "best.pt", ck)
            self._save(ckdir / "last.pt", ck)
            run.register("checkpoints/last.pt")
            if (ckdir / "best.pt").exists():
                run.register("checkpoints/best.pt")
            ips = steps * sampler.batch_size / max(time.time() - t_ep, 1e-9)
            self._event(progress, Event("epoch", time.time(), epoch=epoch + 1, epochs=total_epochs, level=level + 1,
                                        loss=mean_terms.get("loss"), terms=mean_terms, val_score=score,
                                        images_per_s=round(ips, 1), best=is_best, images=len(ds.table),
                                        eta_s=round((total_epochs - epoch - 1) * steps * sampler.batch_size / max(ips, 1e-9), 1)))
            run.save_manifest()
        if bar is not None:
            bar.close()
        self.model = model
        self.labels_final = cur_labels

    @torch.no_grad()
    def _val_score(self, model, images, y_all, train_rows, val_rows, C: int, dev) -> float:
        """Model selection signal on (up to 2,048) validation images against (up to 1,536) training
        images: Eq. 5 accuracy for SGM (its class means), kNN accuracy for the triplet and softmax
        baselines (their embeddings are not trained as Gaussians around class means, so Eq. 5 would
        choose their checkpoints by a rule they were never fit to). Training-split rows when there
        is no val split."""
        no_val = len(val_rows) == 0
        if no_val:
            val_rows = train_rows
        rng = np.random.default_rng(self.cfg.train.seed)
        tr = train_rows if len(train_rows) <= 1536 else np.sort(rng.choice(train_rows, 1536, replace=False))
        va = val_rows if len(val_rows) <= 2048 else np.sort(rng.choice(val_rows, 2048, replace=False))
        zt = embed_images(model, images[torch.from_numpy(tr).to(images.device)], device=dev)
        zv = embed_images(model, images[torch.from_numpy(va).to(images.device)], device=dev)
        if self.cfg.loss.name != "sgm":
            if no_val:          # leave-one-out kNN on the training sample
                zv, va = zt, tr
            pred = M.knn_predict(zt, y_all[tr], zv, k=self.cfg.train.knn_k, num_classes=C, exclude_self=no_val)
            return float((pred == y_all[va]).mean())
        mu = M.class_means(zt, y_all[tr], C)
        post = M.gaussian_posterior(zv, mu, sigma=self.cfg.loss.sigma)
        return float((post.argmax(1) == y_all[va]).mean())

    # -- after training: embeddings, predictions, metrics ------------------------------------------
    def _finalize(self, run: Run, ds: Dataset, dev: torch.device) -> None:
        cfg = self.cfg
        model = self.model
        ckdir = run.path / "checkpoints"
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()          # rank 0's last checkpoints are in place
        if (ckdir / "best.pt").exists() and cfg.hierarchy.levels == 1:
            # Eq. 5 / kNN on the best epoch's weights (model selection on the val split)
            model.load_state_dict(load_torch(ckdir / "best.pt", map_location=dev)["model"])
        write_outputs(run, ds, model, cfg, dev, sub_levels=getattr(self, "labels_final", None))
