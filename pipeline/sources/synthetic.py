"""``synthetic[:N]``: a seeded generator of 48x48 grayscale faces in the 8 FER+ classes.

Nothing is downloaded or read from disk. Every class is a mixture of 2 to 4 hidden sub-classes a
curator would recognise (happiness: closed smile / open smile with teeth / laughing with eyes shut;
surprise: eyes only / eyes and open mouth / hands on face; ...), crossed with attributes that cut
across classes (glasses, baby proportions, skin tone, head tilt, lighting, noise). A known fraction
of labels (default 8%) is flipped to a confusable class, and every image carries a 10-vote
distribution like FER+ centred on its *given* label (the annotators made the flip, so the votes
do not leak it); its few hesitation votes lean towards the class its variant resembles only some of the
time, as FER+'s do. ``votes=none`` drops the votes (a folder of images has none). Ground truth travels in ``gt_*`` columns so every later stage can be scored.

Spec: ``synthetic``, ``synthetic:N`` or ``synthetic:N,seed=S,flip=F,votes=crowd|none``.
"""
from __future__ import annotations

import numpy as np

from .base import FERPLUS_CLASSES, DataError, Dataset, make_table

S = 48

# Hidden sub-classes per class, in the order of FERPLUS_CLASSES: (name, relative frequency, the class
# the crowd leans to when it hesitates). The lean is what FER+ shows for real sub-classes ("happiness
# near surprise", "happiness near contempt"): each variant of an expression has its own confusion.
SUBCLASSES: dict[str, list[tuple[str, float, str | None]]] = {
    "neutral": [("plain", 0.5, None), ("looking aside", 0.3, "contempt"), ("eyes half closed", 0.2, "sadness")],
    "happiness": [("closed smile", 0.4, "contempt"), ("open smile with teeth", 0.35, None),
                  ("laughing, eyes shut", 0.25, "surprise")],
    "surprise": [("eyes only", 0.35, "neutral"), ("eyes and open mouth", 0.4, None), ("hands on face", 0.25, "fear")],
    "sadness": [("downturned mouth", 0.5, None), ("crying", 0.3, "fear"), ("head down", 0.2, "neutral")],
    "anger": [("pressed lips", 0.55, "disgust"), ("shouting", 0.45, None)],
    "disgust": [("wrinkled nose", 0.5, None), ("tongue out", 0.25, "contempt"), ("raised lip", 0.25, "anger")],
    "fear": [("stretched mouth", 0.5, "surprise"), ("hands up", 0.5, None)],
    "contempt": [("smirk", 0.6, "happiness"), ("eye roll", 0.4, "neutral")],
}

# Where a flipped label goes: the classes people confuse (FER+'s largest confusion flows).
CONFUSABLE = {
    "neutral": ["sadness", "contempt"],
    "happiness": ["contempt", "surprise"],
    "surprise": ["fear", "happiness"],
    "sadness": ["neutral", "fear"],
    "anger": ["disgust", "sadness"],
    "disgust": ["anger", "contempt"],
    "fear": ["surprise", "sadness"],
    "contempt": ["happiness", "neutral"],
}

CLASS_SHARE = np.array([0.17, 0.17, 0.13, 0.13, 0.12, 0.09, 0.10, 0.09])


def _parse(arg: str) -> dict:
    out = {"n": 4000, "seed": 0, "flip": 0.08, "votes": "crowd"}
    if not arg:
        return out
    for i, part in enumerate(p.strip() for p in arg.split(",")):
        if not part:
            continue
        if "=" in part:
            k, v = (x.strip() for x in part.split("=", 1))
        elif i == 0:
            k, v = "n", part
        else:
            raise DataError(f"synthetic: cannot read {part!r}; use synthetic:N,seed=S,flip=F,votes=crowd|none")
        if k not in out:
            raise DataError(f"synthetic: unknown option {k!r}; use n, seed, flip or votes")
        if k == "votes":
            if v not in ("crowd", "none"):
                raise DataError(f"synthetic: votes={v!r}; use votes=crowd or votes=none")
            out[k] = v
            continue
        try:
            out[k] = float(v) if k == "flip" else int(v)
        except ValueError:
            raise DataError(f"synthetic: {k}={v!r} is not a number") from None
    if out["n"] < 80:
        raise DataError(f"synthetic: N={out['n']} is too small; use at least 80 images")
    if not 0 <= out["flip"] < 0.5:
        raise DataError(f"synthetic: flip={out['flip']} must be in [0, 0.5)")
    return out


def load(arg: str, cfg) -> Dataset:
    opts = _parse(arg)
    return generate(opts["n"], seed=opts["seed"], flip_rate=opts["flip"], size=cfg.image_size if cfg else S,
                    votes=opts["votes"] == "crowd")


# ----------------------------------------------------------------------------- drawing primitives
class _Canvas:
    """Soft-edged shapes on a (rotated) coordinate grid. Coordinates are in a 48-unit face frame."""

    def __init__(self, size: int, tilt_deg: float, shift: tuple[float, float], scale: float):
        t = np.deg2rad(tilt_deg)
        u = (np.arange(size, dtype=np.float32) + 0.5) * (S / size)
        yy, xx = np.meshgrid(u, u, indexing="ij")
        xc, yc = xx - 24 - shift[0], yy - 24 - shift[1]
        c, s = np.cos(t), np.sin(t)
        self.x = (c * xc + s * yc) / scale + 24
        self.y = (-s * xc + c * yc) / scale + 24
        self.img = np.zeros((size, size), np.float32)

    @staticmethod
    def _soft(d: np.ndarray, edge: float = 0.8) -> np.ndarray:
        return np.clip(0.5 - d / edge, 0.0, 1.0)

    def paint(self, mask: np.ndarray, value: float) -> None:
        self.img += mask * (value - self.img)

    def ellipse(self, cx, cy, a, b, value, rot=0.0) -> np.ndarray:
        x, y = self.x - cx, self.y - cy
        if rot:
            r = np.deg2rad(rot)
            x, y = np.cos(r) * x + np.sin(r) * y, -np.sin(r) * x + np.cos(r) * y
        d = (np.sqrt((x / a) ** 2 + (y / b) ** 2) - 1.0) * min(a, b)
        m = self._soft(d)
        self.paint(m, value)
        return m

    def ring(self, cx, cy, r, width, value) -> None:
        d = np.abs(np.hypot(self.x - cx, self.y - cy) - r) - width / 2
        self.paint(self._soft(d), value)

    def line(self, x0, y0, x1, y1, width, value) -> None:
        px, py = self.x - x0, self.y - y0
        dx, dy = x1 - x0, y1 - y0
        L2 = dx * dx + dy * dy + 1e-9
        t = np.clip((px * dx + py * dy) / L2, 0, 1)
        d = np.hypot(px - t * dx, py - t * dy) - width / 2
        self.paint(self._soft(d), value)

    def curve(self, cx, cy, half_w, bend, width, value, skew=0.0) -> None:
        """A mouth-like parabola: y = cy + bend * (1 - (x-cx)^2/half_w^2) ... bend>0 smiles (curves down in image y)."""
        u = (self.x - cx) / half_w
        inside = np.abs(u) <= 1.0
        yline = cy - bend * (1 - u ** 2) + skew * u
        d = np.abs(self.y - yline) - width / 2
        d = np.where(inside, d, np.hypot(np.abs(self.x - cx) - half_w, self.y - (cy + skew * np.sign(u))) - width / 2)
        self.paint(self._soft(d), value)


def _draw_face(rng: np.random.Generator, cls: str, sub: str, attrs: dict, size: int) -> np.ndarray:
    baby = attrs["baby"]
    cv = _Canvas(size, attrs["tilt"], (rng.normal(0, 1.0), rng.normal(0, 1.0) + (3.0 if sub == "head down" else 0.0)),
                 scale=1.0 + rng.normal(0, 0.03))
    bg = attrs["background"]
    cv.img[:] = bg
    skin = attrs["skin"]
    dark = 0.08
    # head: babies have rounder, larger heads with features set lower
    ha, hb = (17.5, 19.0) if baby else (15.5, 20.5)
    cv.ellipse(24, 25, ha, hb, skin)
    # hair
    hair = attrs["hair"]
    cv.ellipse(24, 9.5 if not baby else 9.0, ha * 0.95, 6.0 if not baby else 4.0, hair)
    fy = 4.0 if baby else 0.0      # features lower on a baby face
    eye_y = 21 + fy
    eye_dx = 6.5 if not baby else 6.0
    eye_r = 2.4 if not baby else 3.3
    mouth_y = 34 + fy * 0.6

    # ---- eyes
    openness = 1.0
    look = 0.0
    if cls == "neutral" and sub == "eyes half closed":
        openness = 0.35
    look_y = 0.0
    if cls == "neutral" and sub == "looking aside":
        look = rng.choice([-1.3, 1.3])
    if cls == "contempt" and sub == "eye roll":
        look_y = -1.2 * eye_r * 0.4
    if cls in ("surprise", "fear"):
        openness = 1.55
    if cls == "happiness" and sub == "laughing, eyes shut":
        openness = 0.0
    if cls == "anger":
        openness = 0.7
    if cls == "disgust":
        openness = 0.55
    for side in (-1, 1):
        ex = 24 + side * eye_dx
        if openness <= 0.05:
            cv.curve(ex, eye_y + 0.5, eye_r, 1.5, 1.0, dark)        # shut, smiling eyes: an arc
        else:
            cv.ellipse(ex, eye_y, eye_r * 1.1, eye_r * 0.75 * openness, 0.95)
            cv.ellipse(ex + look, eye_y + look_y, eye_r * 0.5, min(eye_r * 0.5, eye_r * 0.75 * openness), dark)

    # ---- brows
    brow_y = eye_y - 4.5 - (2.2 if cls in ("surprise", "fear") else 0.0)
    inner_drop = {"anger": 2.4, "disgust": 1.2, "sadness": -1.8, "fear": -1.2}.get(cls, 0.0)
    for side in (-1, 1):
        ex = 24 + side * eye_dx
        cv.line(ex - side * 3.2, brow_y + inner_drop, ex + side * 3.2, brow_y - 0.3 * inner_drop, 1.3, hair * 0.7)

    # ---- nose
    cv.line(24, eye_y + 3, 24.6, mouth_y - 5, 1.0, skin * 0.8)
    if cls == "disgust" and sub == "wrinkled nose":
        for k in (-1, 1):
            cv.line(24 + k * 1.5, eye_y + 3.5, 24 + k * 3.5, eye_y + 5.5, 0.8, skin * 0.6)
            cv.line(24 + k * 1.5, eye_y + 5.0, 24 + k * 3.5, eye_y + 7.0, 0.8, skin * 0.6)

    # ---- mouth
    mw = 6.0 if not baby else 4.5
    lip = 0.25
    if cls == "neutral":
        cv.line(24 - mw * 0.8, mouth_y, 24 + mw * 0.8, mouth_y, 1.1, lip)
    elif cls == "happiness":
        if sub == "closed smile":
            cv.curve(24, mouth_y, mw * 1.1, -2.8, 1.3, lip)
        else:
            open_h = 3.2 if sub == "open smile with teeth" else 4.5
            m = cv.ellipse(24, mouth_y + 1.0, mw * 1.1, open_h, dark)
            cv.img[:] = np.where((m > 0.5) & (cv.y < mouth_y + 0.6 + (0.4 if sub == "open smile with teeth" else -1.0)), 0.97, cv.img)
            cv.curve(24, mouth_y - 1.0, mw * 1.15, -1.0, 1.0, lip)
    elif cls == "surprise":
        if sub == "eyes only":
            cv.line(24 - mw * 0.5, mouth_y, 24 + mw * 0.5, mouth_y, 1.1, lip)
        else:
            cv.ellipse(24, mouth_y + 1.0, mw * 0.55, 3.6, dark)
        if sub == "hands on face":
            for side in (-1, 1):
                cv.ellipse(24 + side * 14.5, mouth_y - 1, 3.8, 6.5, skin * 1.05, rot=side * 15)
                for f in range(3):
                    cv.line(24 + side * (13 + f * 1.4), mouth_y - 7, 24 + side * (13.5 + f * 1.4), mouth_y - 11, 1.0, skin * 0.9)
    elif cls == "sadness":
        cv.curve(24, mouth_y + 1.0, mw, 2.6, 1.2, lip)
        if sub == "crying":
            for side in (-1, 1):
                cv.line(24 + side * eye_dx, eye_y + 2.5, 24 + side * (eye_dx + 0.5), eye_y + 9, 1.2, 0.98)
    elif cls == "anger":
        if sub == "pressed lips":
            cv.line(24 - mw * 0.7, mouth_y + 0.5, 24 + mw * 0.7, mouth_y + 0.5, 2.0, dark)
        else:
            cv.ellipse(24, mouth_y + 1.0, mw * 0.95, 2.6, dark)
            cv.line(24 - mw * 0.8, mouth_y - 0.5, 24 + mw * 0.8, mouth_y - 0.5, 1.0, 0.95)
    elif cls == "disgust":
        if sub == "tongue out":
            cv.ellipse(24, mouth_y, mw * 0.7, 1.5, dark)
            cv.ellipse(24, mouth_y + 2.5, 2.2, 2.6, 0.6)
        elif sub == "raised lip":
            cv.curve(24, mouth_y, mw * 0.9, 0.0, 1.4, lip, skew=-2.2)
        else:
            cv.curve(24, mouth_y + 0.5, mw * 0.8, 1.5, 1.3, lip)
    elif cls == "fear":
        cv.ellipse(24, mouth_y + 1.0, mw * 1.1, 1.6, dark)
        if sub == "hands up":
            for side in (-1, 1):
                cv.ellipse(24 + side * 17, 41, 4.0, 5.5, skin * 1.05)
                for f in range(4):
                    cv.line(24 + side * (14.5 + f * 1.6), 37, 24 + side * (14.5 + f * 1.7), 31.5, 1.0, skin * 1.0)
    elif cls == "contempt":
        k = 1 if sub == "smirk" else -1
        cv.line(24 - k * mw * 0.8, mouth_y, 24 + k * 0.5, mouth_y, 1.1, lip)
        cv.curve(24 + k * mw * 0.55, mouth_y - 0.3, mw * 0.55, -0.2, 1.1, lip, skew=-k * 1.5)

    # ---- glasses: two rings and a bridge
    if attrs["glasses"]:
        for side in (-1, 1):
            cv.ring(24 + side * eye_dx, eye_y, eye_r + 2.2, 0.9, 0.05)
        cv.line(24 - eye_dx + eye_r + 2, eye_y, 24 + eye_dx - eye_r - 2, eye_y, 0.9, 0.05)

    img = cv.img
    # lighting: a left-right gradient; noise
    g = attrs["lighting"]
    img = img * (1.0 + g * (cv.x - 24) / 24)
    img = img + rng.normal(0, attrs["noise"], img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate(n: int = 4000, *, seed: int = 0, flip_rate: float = 0.08, size: int = S, votes: bool = True) -> Dataset:
    """Generate ``n`` faces deterministically from ``seed``. Returns a :class:`Dataset`.

    ``votes=False`` gives a data set without crowd votes (like a folder of images); images, labels and
    splits are the same either way.
    """
    rng = np.random.default_rng(seed)
    classes = list(FERPLUS_CLASSES)
    C = len(classes)
    share = CLASS_SHARE / CLASS_SHARE.sum()
    true = rng.choice(C, size=n, p=share)
    # make sure each class has a few images even for small n
    true[: C * 4] = np.repeat(np.arange(C), 4)
    rng.shuffle(true)

    sub_offsets, sub_names = [], []
    for c in classes:
        sub_offsets.append(len(sub_names))
        sub_names.extend(f"{c}: {s}" for s, _, _ in SUBCLASSES[c])
    sub_local = np.empty(n, np.int64)
    for j, c in enumerate(classes):
        idx = np.flatnonzero(true == j)
        p = np.array([w for _, w, _ in SUBCLASSES[c]])
        sub_local[idx] = rng.choice(len(p), size=len(idx), p=p / p.sum())
    gsub = np.array([sub_offsets[t] + s for t, s in zip(true, sub_local)])

    attrs = {
        "glasses": rng.random(n) < 0.18,
        "baby": rng.random(n) < 0.15,
        "skin": rng.uniform(0.45, 0.85, n).astype(np.float32),
        "tilt": rng.normal(0, 7, n).clip(-18, 18).astype(np.float32),
        "lighting": rng.uniform(-0.25, 0.25, n).astype(np.float32),
        "noise": rng.uniform(0.01, 0.06, n).astype(np.float32),
        "background": rng.uniform(0.05, 0.6, n).astype(np.float32),
        "hair": rng.uniform(0.05, 0.4, n).astype(np.float32),
    }
    images = np.empty((n, size, size), np.uint8)
    img_rngs = rng.spawn(n)
    for i in range(n):
        a = {k: v[i] for k, v in attrs.items()}
        c = classes[true[i]]
        images[i] = _draw_face(img_rngs[i], c, SUBCLASSES[c][sub_local[i]][0], a, size)

    # label noise: flip to a confusable class
    flipped = rng.random(n) < flip_rate
    given = true.copy()
    for i in np.flatnonzero(flipped):
        opts = CONFUSABLE[classes[true[i]]]
        given[i] = classes.index(opts[rng.integers(len(opts))])

    u = rng.random(n)
    split = np.where(u < 0.8, "train", np.where(u < 0.9, "val", "test"))
    # Votes come from their own generator, so images, labels and splits are the same with or without them.
    vote_arr = _crowd_votes(np.random.default_rng([seed, 104729]), true, given, sub_local, flipped, classes) if votes else None

    table = make_table(
        ids=[f"syn{seed}-{i:06d}" for i in range(n)], source="synthetic", split=split, label=given, classes=classes,
        gt_label=true, gt_label_name=np.asarray(classes, dtype=object)[true],
        gt_subclass=gsub, gt_subclass_name=np.asarray(sub_names, dtype=object)[gsub],
        gt_flipped=flipped, gt_glasses=attrs["glasses"], gt_baby=attrs["baby"],
        gt_skin=attrs["skin"], gt_tilt=attrs["tilt"], gt_lighting=attrs["lighting"],
    )
    return Dataset(table=table, images=images, classes=classes, votes=vote_arr, name=f"synthetic:{n}")


# Hesitation votes, shaped like FER+'s: most images get 0-1 votes off the majority, a few get 2-3. An image
# of a variant with a lean sends each hesitation vote to that lean class only with probability LEAN_P;
# the rest go to a random other class (SCATTER_P) or to a class people confuse with the given one. So the
# votes hint at a variant (as FER+'s do) without naming it: a rule on the votes alone finds few variants.
HESITATION = (1.2, 6.0)     # Beta(a, b) share of the 10 annotators who hesitate
MAX_HESITATION = 3
LEAN_P = 0.5
SCATTER_P = 0.25


def _crowd_votes(rng: np.random.Generator, true, given, sub_local, flipped, classes) -> np.ndarray:
    n, C = len(true), len(classes)
    votes = np.zeros((n, C), np.float32)
    k_other = np.minimum(MAX_HESITATION, rng.binomial(10, rng.beta(*HESITATION, size=n)))
    for i in range(n):
        lean = None if flipped[i] else SUBCLASSES[classes[true[i]]][sub_local[i]][2]
        confusable = [classes.index(x) for x in CONFUSABLE[classes[given[i]]]]
        for _ in range(k_other[i]):
            r = rng.random()
            if lean is not None and r < LEAN_P:
                target = classes.index(lean)
            elif r < LEAN_P + SCATTER_P:
                target = int(rng.choice([c for c in range(C) if c != given[i]]))
            else:
                target = int(rng.choice(confusable))
            votes[i, target] += 1
        votes[i, given[i]] += 10 - k_other[i]
    # the given label keeps a strict majority (FER+ drops images without one): at most 3 of 10 disagree
    return votes
