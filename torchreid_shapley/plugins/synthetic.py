"""Synthetic ReID datasets: small, procedurally drawn, deterministic, one visual domain each.

Every dataset is a population of drawn persons whose identity shows in their appearance (colours of
hair, top, bottom, shoes and bag, a torso pattern, body proportions), seen by several cameras of
their own (view, position, scale and light per camera) and rendered in one visual *domain* per
dataset (background, colour cast, noise, blur, resolution, clothing palette). Domains differ on
purpose, so that the datasets help a target unequally, as real ReID datasets do. Sizes mirror the
paper's datasets (one large, some tiny), scaled down to train on a CPU:

=============  ==========  ==========  =========  ====  ========================================
name           paper       train imgs  train ids  cams  domain
=============  ==========  ==========  =========  ====  ========================================
synth_market   market1501  480         60         6     street clutter, street clothes, 64x32
synth_cuhk     cuhk02      200         50         4     bright plain indoor, warm cast, 80x40
synth_sense    sensereid   160         80         2     mall gradient, bright clothes, blue, 56x28
synth_grid     grid         48         24         8     dark striped underground, dark clothes, 40x20
synth_prid     prid         40         20         2     outdoor tiles, pastel clothes, blurred
=============  ==========  ==========  =========  ====  ========================================

Each has its own query/gallery split of 60-80 test identities, distinct from the train ones: one
query image each and gallery images from the other cameras, plus gallery-only distractors.
Images are generated from ``(seed, name)`` with numpy and Pillow (no torch) into
``<cache_dir>/synthetic/<name>-seed<seed>-<fingerprint>/`` as PNG files with a ``manifest.json``
written last; a dataset is generated into a temporary directory and renamed into place, so several
processes may generate at once. The directory name holds a fingerprint of the spec and the generator
version: a changed spec or seed gets a new directory, an unchanged one is never drawn again.

The datasets register with torchreid under their names (``data.sources synth_market``); the
``shapley.cache_dir`` and ``shapley.synthetic_seed`` config keys choose the cache and the seed.
Importing this module never imports torch or torchreid.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from torchreid_shapley import hookimpl
from torchreid_shapley.errors import ConfigError

#: Bumped whenever the drawing changes: cached datasets of another version are drawn again.
GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
CACHE_ENV = "TORCHREID_SHAPLEY_CACHE"
DEFAULT_CACHE = "~/.cache/torchreid_shapley"

CANVAS = (128, 64)  # drawing resolution (height, width); images are resized to the domain's size


@dataclass(frozen=True)
class Domain:
    """How one dataset looks: the same kind of person, rendered differently."""

    size: tuple[int, int]                 # stored (height, width): the domain's resolution
    background: str                       # plain | gradient | stripes | tiles | clutter
    background_rgb: tuple[int, int, int]  # base colour of the scene
    cast: tuple[float, float, float]      # multiplicative colour cast of the whole dataset
    light: tuple[float, float]            # range of the per-camera brightness gain
    camera_tint: float                    # std of the per-camera, per-channel colour shift
    noise: float                          # std of pixel noise (0..255)
    blur: float                           # Gaussian blur radius at the stored size
    palette: str                          # street | dark | bright | pastel: clothing colours
    person_scale: tuple[float, float]     # range of the per-camera person height (1 = full height)
    occlusion: float = 0.0                # probability of an occluding object per image


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of one synthetic dataset; ``train_ids * images_per_id`` train images."""

    paper: str              # the real dataset it stands for
    train_ids: int
    images_per_id: int      # train images per identity, spread over the cameras
    test_ids: int           # identities of the query/gallery split (distinct from the train ones)
    gallery_per_id: int     # gallery images per test identity, from cameras other than the query's
    distractors: int        # gallery-only identities (one image each)
    cameras: int
    domain: Domain

    @property
    def num_images(self) -> int:
        return self.train_ids * self.images_per_id


SYNTHETIC_DATASETS: dict[str, SyntheticSpec] = {
    "synth_market": SyntheticSpec(
        paper="market1501", train_ids=60, images_per_id=8, test_ids=80, gallery_per_id=3, distractors=80,
        cameras=6, domain=Domain(size=(64, 32), background="clutter", background_rgb=(128, 124, 118),
                                 cast=(1.0, 1.0, 1.0), light=(0.8, 1.15), camera_tint=0.04, noise=4.0,
                                 blur=0.0, palette="street", person_scale=(0.82, 0.98), occlusion=0.1)),
    "synth_cuhk": SyntheticSpec(
        paper="cuhk02", train_ids=50, images_per_id=4, test_ids=60, gallery_per_id=2, distractors=30,
        cameras=4, domain=Domain(size=(80, 40), background="plain", background_rgb=(196, 192, 184),
                                 cast=(1.04, 1.0, 0.94), light=(0.9, 1.1), camera_tint=0.03, noise=2.0,
                                 blur=0.3, palette="street", person_scale=(0.9, 1.0))),
    "synth_sense": SyntheticSpec(
        paper="sensereid", train_ids=80, images_per_id=2, test_ids=80, gallery_per_id=1, distractors=80,
        cameras=2, domain=Domain(size=(56, 28), background="gradient", background_rgb=(150, 160, 185),
                                 cast=(0.95, 0.98, 1.06), light=(0.8, 1.1), camera_tint=0.05, noise=5.0,
                                 blur=0.6, palette="bright", person_scale=(0.78, 0.95), occlusion=0.15)),
    "synth_grid": SyntheticSpec(
        paper="grid", train_ids=24, images_per_id=2, test_ids=80, gallery_per_id=1, distractors=100,
        cameras=8, domain=Domain(size=(40, 20), background="stripes", background_rgb=(70, 78, 66),
                                 cast=(0.95, 1.03, 0.92), light=(0.65, 0.95), camera_tint=0.05, noise=6.0,
                                 blur=0.5, palette="dark", person_scale=(0.75, 0.95))),
    "synth_prid": SyntheticSpec(
        paper="prid", train_ids=20, images_per_id=2, test_ids=80, gallery_per_id=1, distractors=80,
        cameras=2, domain=Domain(size=(64, 32), background="tiles", background_rgb=(120, 135, 110),
                                 cast=(1.0, 1.0, 1.0), light=(0.8, 1.2), camera_tint=0.07, noise=5.0,
                                 blur=0.8, palette="pastel", person_scale=(0.85, 1.0))),
}

# -- the demo study ---------------------------------------------------------------------------------
#: Four synthetic train-sets that are also the targets: 2^4 = 16 trainings for both modes.
DEMO_TRAIN_SETS: tuple[str, ...] = ("synth_cuhk", "synth_grid", "synth_market", "synth_prid")
DEMO_TARGETS: tuple[str, ...] = DEMO_TRAIN_SETS
#: torchreid KEY VALUE overrides of the demo: resnet18 from scratch (no download) on 32x16 images,
#: 3 epochs, Adam 1e-3. Measured on a 2-core CPU: about 10 s per training on average, 16 trainings
#: in about 3 minutes. resnet18 learns these images from scratch several times faster per step than
#: osnet_x0_25 (mAP 0.70 vs 0.2 on synth_market after 2 epochs), which at this budget barely left its
#: initialisation; mAP grows with the coalition's images along a log curve for every target.
DEMO_OPTS: list[str] = [
    "model.name", "resnet18", "model.pretrained", "False",
    "data.height", "32", "data.width", "16", "data.workers", "0",
    "data.transforms", "['random_flip']",
    "train.optim", "adam", "train.lr", "0.001", "train.max_epoch", "3", "train.batch_size", "32",
    "train.lr_scheduler", "single_step", "train.stepsize", "[20]", "train.print_freq", "1000",
    "train.fixbase_epoch", "0",
    "loss.name", "softmax", "test.batch_size", "256", "test.normalize_feature", "True",
    "test.dist_metric", "cosine", "use_gpu", "False",
    "shapley.schedule", "epochs",
]


def demo_config() -> dict[str, str]:
    """The demo's overrides as ``{key: value}`` (the same pairs as :data:`DEMO_OPTS`)."""
    return dict(zip(DEMO_OPTS[::2], DEMO_OPTS[1::2]))


# -- where datasets live -----------------------------------------------------------------------------
def resolve_cache_dir(cache_dir: str | os.PathLike | None = "") -> Path:
    """``cache_dir`` if given, else ``$TORCHREID_SHAPLEY_CACHE``, else ``~/.cache/torchreid_shapley``."""
    chosen = str(cache_dir or "") or os.environ.get(CACHE_ENV, "") or DEFAULT_CACHE
    return Path(os.path.expanduser(chosen)).resolve()


def _spec(name: str) -> SyntheticSpec:
    try:
        return SYNTHETIC_DATASETS[name]
    except KeyError:
        raise ConfigError(f"{name!r} is not a synthetic dataset; expected one of "
                          f"{sorted(SYNTHETIC_DATASETS)}") from None


def spec_fingerprint(name: str, seed: int) -> str:
    """Hash of everything that changes the drawn images of ``name``."""
    payload = {"generator": GENERATOR_VERSION, "name": name, "seed": int(seed), "spec": asdict(_spec(name)),
               "canvas": CANVAS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def dataset_dir(name: str, cache_dir: str | os.PathLike | None, seed: int) -> Path:
    """The directory of one generated dataset (it may not exist yet)."""
    return resolve_cache_dir(cache_dir) / "synthetic" / f"{name}-seed{int(seed)}-{spec_fingerprint(name, seed)}"


def _config_location(config: Mapping[str, Any] | None) -> tuple[Path, int]:
    shapley = dict((config or {}).get("shapley") or {})
    return resolve_cache_dir(shapley.get("cache_dir", "")), int(shapley.get("synthetic_seed", 0) or 0)


# -- drawing ---------------------------------------------------------------------------------------
_NEUTRALS = [(20, 20, 22), (45, 45, 50), (90, 90, 95), (150, 150, 150), (225, 225, 220), (30, 35, 70),
             (80, 60, 40), (190, 175, 140)]
_SKINS = [(241, 204, 177), (224, 172, 138), (198, 134, 95), (161, 102, 68), (112, 72, 48), (80, 52, 38)]
_HAIRS = [(15, 12, 10), (50, 32, 20), (95, 62, 35), (170, 130, 70), (120, 120, 120), (200, 190, 170)]
_PALETTES = {  # (saturation range, value range, probability of a neutral colour)
    "street": ((0.25, 0.9), (0.3, 0.95), 0.35),
    "dark": ((0.3, 0.85), (0.25, 0.65), 0.4),
    "bright": ((0.6, 1.0), (0.6, 1.0), 0.15),
    "pastel": ((0.2, 0.55), (0.65, 1.0), 0.25),
}
_PATTERNS = ("solid", "hstripes", "vsplit", "block", "collar")
_VIEWS = ("front", "back", "side")


def _colour(rng: np.random.Generator, palette: str) -> tuple[int, int, int]:
    sat, val, neutral = _PALETTES[palette]
    if rng.random() < neutral:
        base = np.array(_NEUTRALS[rng.integers(len(_NEUTRALS))], dtype=float)
        return tuple(int(v) for v in np.clip(base + rng.normal(0, 8, 3), 0, 255))
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def _identity(rng: np.random.Generator, palette: str) -> dict:
    """The appearance of one person: what stays the same across cameras."""
    top = _colour(rng, palette)
    return {
        "skin": _SKINS[rng.integers(len(_SKINS))], "hair": _HAIRS[rng.integers(len(_HAIRS))],
        "long_hair": bool(rng.random() < 0.3), "top": top, "top2": _colour(rng, palette),
        "pattern": _PATTERNS[rng.integers(len(_PATTERNS))], "short_sleeves": bool(rng.random() < 0.35),
        "bottom": _colour(rng, palette), "bottom_kind": ("trousers", "shorts", "skirt")[
            rng.choice(3, p=[0.65, 0.2, 0.15])],
        "shoes": _colour(rng, "dark"), "bag": ("none", "backpack", "shoulder")[rng.choice(3, p=[0.5, 0.3, 0.2])],
        "bag_rgb": _colour(rng, palette), "height": float(rng.uniform(0.88, 1.04)),
        "width": float(rng.uniform(0.85, 1.2)), "torso": float(rng.uniform(0.29, 0.36)),
    }


def _camera(rng: np.random.Generator, domain: Domain, index: int) -> dict:
    """One camera of a dataset: view, position, scale, light and colour shift."""
    light = float(rng.uniform(*domain.light))
    return {
        "view": _VIEWS[(index + int(rng.integers(3))) % 3], "dx": float(rng.uniform(-5, 5)),
        "dy": float(rng.uniform(-4, 4)), "scale": float(rng.uniform(*domain.person_scale)),
        "gain": np.clip(light * (1 + rng.normal(0, domain.camera_tint, 3)), 0.2, 2.0),
        "background": np.clip(np.array(domain.background_rgb, dtype=float) + rng.normal(0, 18, 3), 0, 255),
    }


def _background(rng: np.random.Generator, domain: Domain, base: np.ndarray) -> np.ndarray:
    h, w = CANVAS
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = base
    kind = domain.background
    if kind == "gradient":
        ramp = np.linspace(1.15, 0.75, h, dtype=np.float32)[:, None, None]
        img *= ramp
    elif kind == "stripes":
        period = int(rng.integers(10, 18))
        rows = (np.arange(h) // (period // 2)) % 2 == 0
        img[rows] *= 0.78
    elif kind == "tiles":
        size = int(rng.integers(12, 20))
        yy, xx = np.mgrid[0:h, 0:w]
        checker = ((yy // size + xx // size) % 2 == 0)
        img[checker] *= 0.85
        img[: h // 3] = img[: h // 3] * 0.7 + np.array([150, 170, 200], dtype=np.float32) * 0.3  # sky
    elif kind == "clutter":
        for _ in range(int(rng.integers(3, 8))):
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            y1, x1 = y0 + int(rng.integers(8, 50)), x0 + int(rng.integers(6, 30))
            img[y0:y1, x0:x1] = base * rng.uniform(0.6, 1.3) + rng.normal(0, 20, 3)
    img += rng.normal(0, 6, (1, 1, 3)).astype(np.float32)  # each frame differs a little
    return img


def _draw_person(draw, rng: np.random.Generator, ident: dict, cam: dict) -> None:
    h, w = CANVAS
    scale = cam["scale"] * ident["height"] * float(rng.uniform(0.97, 1.03))
    ph = 0.92 * h * scale
    cx = w / 2 + cam["dx"] + float(rng.uniform(-3, 3))
    top = (h - ph) / 2 + cam["dy"] + float(rng.uniform(-2, 2))
    view = cam["view"]
    side = view == "side"
    head_r = ph * 0.075
    neck = top + 2 * head_r
    torso_h = ph * ident["torso"]
    torso_w = ph * 0.25 * ident["width"] * (0.68 if side else 1.0)
    hip = neck + torso_h
    feet = top + ph
    shoe_h = ph * 0.035
    stride = float(rng.uniform(0.0, 0.6)) * torso_w * (0.9 if side else 0.35)
    leg_w = torso_w * (0.42 if not side else 0.5)
    arm_w = torso_w * 0.22
    x0, x1 = cx - torso_w / 2, cx + torso_w / 2

    # long hair hangs behind the body (seen from the back it covers the shoulders)
    if ident["long_hair"] and view != "back":
        draw.rectangle([cx - head_r * 1.05, top + head_r, cx + head_r * 1.05, neck + torso_h * 0.3], fill=ident["hair"])
    # legs (two, spread by the walking phase), shoes
    kind = ident["bottom_kind"]
    for sign in (-1, 1):
        centre = cx + sign * (stride / 2 if side else torso_w * 0.25 + stride * 0.3)
        lx = centre - leg_w / 2
        leg = [lx, hip, lx + leg_w, feet - shoe_h]
        if kind == "trousers":
            draw.rectangle(leg, fill=ident["bottom"])
        else:
            draw.rectangle(leg, fill=ident["skin"])
            if kind == "shorts":
                draw.rectangle([lx, hip, lx + leg_w, hip + (feet - hip) * 0.4], fill=ident["bottom"])
        draw.rectangle([lx - 1, feet - shoe_h, lx + leg_w + (2 if side else 1), feet], fill=ident["shoes"])
    if kind == "skirt":
        spread = torso_w * 0.18
        draw.polygon([(x0, hip - 1), (x1, hip - 1), (x1 + spread, hip + (feet - hip) * 0.5),
                      (x0 - spread, hip + (feet - hip) * 0.5)], fill=ident["bottom"])
    else:
        draw.rectangle([x0 + 1, hip - 1, x1 - 1, hip + (feet - hip) * 0.12], fill=ident["bottom"])
    # arms behind/at the sides of the torso
    arm_len = torso_h * 1.05
    sleeve = arm_len * (0.35 if ident["short_sleeves"] else 1.0)
    arm_xs = [cx - arm_w / 2 + float(rng.uniform(-1, 1)) * stride * 0.5] if side else [x0 - arm_w, x1]
    for ax in arm_xs:
        draw.rectangle([ax, neck + 1, ax + arm_w, neck + arm_len], fill=ident["skin"])
        draw.rectangle([ax, neck + 1, ax + arm_w, neck + sleeve], fill=ident["top"])
    # backpack behind the torso (front view: straps only)
    if ident["bag"] == "backpack" and side:
        draw.rectangle([x1 - 1, neck + torso_h * 0.1, x1 + torso_w * 0.45, neck + torso_h * 0.8], fill=ident["bag_rgb"])
    # torso with its pattern
    draw.rectangle([x0, neck, x1, hip], fill=ident["top"])
    pattern = ident["pattern"]
    if pattern == "hstripes":
        band = max(2.0, torso_h / 7)
        y = neck + band
        while y < hip:
            draw.rectangle([x0, y, x1, min(hip, y + band / 2)], fill=ident["top2"])
            y += band
    elif pattern == "vsplit" and not side:
        draw.rectangle([x0, neck, cx, hip], fill=ident["top2"])
    elif pattern == "block" and view == "front":
        draw.rectangle([cx - torso_w * 0.28, neck + torso_h * 0.25, cx + torso_w * 0.28, neck + torso_h * 0.6],
                       fill=ident["top2"])
    elif pattern == "collar":
        draw.rectangle([x0, neck, x1, neck + torso_h * 0.2], fill=ident["top2"])
    if ident["bag"] == "backpack" and view == "back":
        draw.rectangle([x0 + torso_w * 0.12, neck + torso_h * 0.1, x1 - torso_w * 0.12, neck + torso_h * 0.8],
                       fill=ident["bag_rgb"])
    elif ident["bag"] == "backpack" and view == "front":
        for sx in (x0 + torso_w * 0.18, x1 - torso_w * 0.18 - 2):
            draw.rectangle([sx, neck, sx + 2, neck + torso_h * 0.55], fill=ident["bag_rgb"])
    elif ident["bag"] == "shoulder":
        bx = x1 - 2 if view != "back" else x0 - torso_w * 0.3
        draw.line([(x0 + 2, neck), (bx + torso_w * 0.15, hip - torso_h * 0.15)], fill=ident["bag_rgb"], width=2)
        draw.rectangle([bx, hip - torso_h * 0.3, bx + torso_w * 0.35, hip + torso_h * 0.05], fill=ident["bag_rgb"])
    # head: face and hair (hair only, seen from the back)
    head = [cx - head_r, top, cx + head_r, top + 2 * head_r]
    if view == "back":
        draw.ellipse(head, fill=ident["hair"])
        if ident["long_hair"]:
            draw.rectangle([cx - head_r * 1.05, top + head_r, cx + head_r * 1.05, neck + torso_h * 0.35],
                           fill=ident["hair"])
    else:
        draw.ellipse(head, fill=ident["skin"])
        draw.chord([head[0] - 1, head[1] - 1, head[2] + 1, head[3] - head_r * 0.6], 180, 360, fill=ident["hair"])


def _render(rng: np.random.Generator, domain: Domain, ident: dict, cam: dict):
    from PIL import Image, ImageDraw, ImageFilter

    canvas = _background(rng, domain, cam["background"])
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    _draw_person(draw, rng, ident, cam)
    if domain.occlusion and rng.random() < domain.occlusion:
        h, w = CANVAS
        y0 = int(rng.integers(h // 2, h - 16))
        x0 = int(rng.integers(-w // 2, w // 2))
        draw.rectangle([x0, y0, x0 + int(rng.integers(w // 2, w)), h], fill=_colour(rng, "street"))
    pixels = np.asarray(image, dtype=np.float32)
    gain = cam["gain"] * np.asarray(domain.cast, dtype=np.float32) * float(rng.uniform(0.93, 1.07))
    pixels = pixels * gain + rng.normal(0, domain.noise, pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    height, width = domain.size
    image = image.resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    if domain.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(domain.blur))
    return image


def _seed_sequence(name: str, seed: int) -> list[int]:
    return [int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), GENERATOR_VERSION]


def _generate_into(name: str, seed: int, directory: Path) -> dict:
    """Draw dataset ``name`` into ``directory`` (which exists) and return its manifest."""
    spec = _spec(name)
    dom = spec.domain
    rng = np.random.default_rng(_seed_sequence(name, seed))
    cams = [_camera(rng, dom, c) for c in range(spec.cameras)]
    people = [_identity(rng, dom.palette) for _ in range(spec.train_ids + spec.test_ids + spec.distractors)]
    for sub in ("train", "query", "gallery"):
        (directory / sub).mkdir()
    splits: dict[str, list] = {"train": [], "query": [], "gallery": []}

    def save(split: str, pid: int, camid: int, k: int) -> None:
        rel = f"{split}/{pid:04d}_c{camid}_{k:02d}.png"
        _render(rng, dom, people[pid], cams[camid]).save(directory / rel, format="PNG", compress_level=1)
        splits[split].append([rel, pid, camid])

    for pid in range(spec.train_ids):  # train labels are 0..train_ids-1, as torchreid expects
        first = int(rng.integers(spec.cameras))
        for k in range(spec.images_per_id):  # cycle over cameras, starting at a random one
            save("train", pid, (first + k) % spec.cameras, k)
    for pid in range(spec.train_ids, spec.train_ids + spec.test_ids):
        order = rng.permutation(spec.cameras)
        save("query", pid, int(order[0]), 0)
        for k in range(spec.gallery_per_id):  # from the other cameras: every query has a true match
            save("gallery", pid, int(order[1 + k % (spec.cameras - 1)]), k)
    for pid in range(spec.train_ids + spec.test_ids, len(people)):
        save("gallery", pid, int(rng.integers(spec.cameras)), 0)

    manifest = {
        "generator": GENERATOR_VERSION, "name": name, "seed": int(seed), "paper": spec.paper,
        "fingerprint": spec_fingerprint(name, seed), "spec": asdict(spec),
        "num_images": len(splits["train"]), "num_ids": spec.train_ids, **splits,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")))
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text())


def ensure_generated(names: Iterable[str], cache_dir: str | os.PathLike | None, seed: int) -> dict[str, Path]:
    """Generate the datasets that are not in the cache yet; ``{name: directory}``.

    Idempotent and safe for concurrent callers: each dataset is drawn into a temporary directory
    beside its final place and renamed there; a process that loses the race drops its copy.
    """
    out = {}
    for name in dict.fromkeys(names):
        final = dataset_dir(name, cache_dir, seed)
        if not (final / MANIFEST).is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # a directory without its manifest was not made by us: set it aside
                stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale-", dir=final.parent))
                try:
                    os.replace(final, stale / "old")
                except OSError:
                    pass
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            try:
                _generate_into(name, seed, tmp)
                try:
                    os.rename(tmp, final)
                except OSError:
                    if not (final / MANIFEST).is_file():  # not a lost race: a real failure
                        raise
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        out[name] = final
    return out


def describe(name: str, cache_dir: str | os.PathLike | None, seed: int, *,
             combineall: bool = False) -> dict[str, int]:
    """Train images and identities of a synthetic dataset, ``{"num_images", "num_ids"}``.

    The dataset is generated if needed and counted from its manifest. With ``combineall`` (torchreid's
    ``data.combineall``) the query and gallery images and identities count too, as torchreid then
    trains on them.
    """
    manifest = read_manifest(ensure_generated([name], cache_dir, seed)[name])
    images, ids = int(manifest["num_images"]), int(manifest["num_ids"])
    if combineall:
        images += len(manifest["query"]) + len(manifest["gallery"])
        ids += len({pid for _, pid, _ in manifest["query"] + manifest["gallery"]})
    return {"num_images": images, "num_ids": ids}


# -- torchreid registration ---------------------------------------------------------------------------
_ACTIVE: dict[str, tuple[Path, int]] = {}   # name -> (cache_dir, seed) the registered class reads
_CLASSES: dict[tuple[str, str], type] = {}  # (torchreid prefix, name) -> the dataset class
_REGISTERED: set[tuple[str, str]] = set()   # (torchreid prefix, name) registered with torchreid


def _dataset_class(name: str, image_dataset: type) -> type:
    def __init__(self, root="", **kwargs):
        cache_dir, seed = _ACTIVE[name]
        directory = ensure_generated([name], cache_dir, seed)[name]
        manifest = read_manifest(directory)
        self.root = str(directory)
        self.dataset_dir = str(directory)
        train, query, gallery = ([(str(directory / rel), int(pid), int(camid)) for rel, pid, camid in manifest[split]]
                                 for split in ("train", "query", "gallery"))
        image_dataset.__init__(self, train, query, gallery, **kwargs)

    title = _class_name(name)
    cls = type(title, (image_dataset,), {
        "__init__": __init__, "__module__": __name__, "__qualname__": title, "synthetic_name": name,
        "dataset_dir": name,
        "__doc__": f"Synthetic ReID dataset {name!r} (stands for {SYNTHETIC_DATASETS[name].paper}); "
                   "see torchreid_shapley.plugins.synthetic.",
    })
    globals()[title] = cls  # picklable by reference (data loader workers started with spawn)
    return cls


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _class_for(name: str) -> type:
    """The torchreid dataset class of ``name`` for the installed torchreid (made once per process)."""
    from . import torchreid_compat

    tr = torchreid_compat.load()
    key = (tr.prefix, name)
    if key not in _CLASSES:
        _CLASSES[key] = _dataset_class(name, tr.data.ImageDataset)
    return _CLASSES[key]


def __getattr__(attr: str):
    """``SynthMarket`` & co. on demand: a process that unpickles a dataset gets its class back."""
    for name in SYNTHETIC_DATASETS:
        if _class_name(name) == attr:
            return _class_for(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def register_synthetic(cache_dir: str | os.PathLike | None = "", seed: int = 0) -> list[str]:
    """Register every synthetic dataset with torchreid (``data.register_image_dataset``).

    Safe to call again: a later call changes the cache directory and seed the registered classes
    read. Images are generated when torchreid first builds a dataset. Returns the names.
    """
    from . import torchreid_compat

    tr = torchreid_compat.load()
    location = (resolve_cache_dir(cache_dir), int(seed))
    for name in SYNTHETIC_DATASETS:
        _ACTIVE[name] = location
        key = (tr.prefix, name)
        if key in _REGISTERED:
            continue
        try:
            tr.data.register_image_dataset(name, _class_for(name))
        except ValueError as exc:  # torchreid refuses a second registration of a name
            raise ConfigError(f"a dataset named {name!r} is already registered with torchreid by another "
                              f"plugin ({exc}); rename that dataset") from None
        _REGISTERED.add(key)
    return list(SYNTHETIC_DATASETS)


def is_synthetic(name: str) -> bool:
    return name in SYNTHETIC_DATASETS


# -- hooks -----------------------------------------------------------------------------------------
@hookimpl
def shapley_register_datasets(config):
    data = (config or {}).get("data") or {}
    names = list(data.get("sources") or []) + list(data.get("targets") or [])
    if not any(is_synthetic(n) for n in names):
        return  # nothing synthetic in this study: do not import torchreid for nothing
    cache_dir, seed = _config_location(config)
    register_synthetic(cache_dir, seed)


@hookimpl
def shapley_describe_train_sets(train_sets, config):
    names = list(train_sets)
    if not names or not all(is_synthetic(n) for n in names):
        return None
    cache_dir, seed = _config_location(config)
    combineall = bool(((config or {}).get("data") or {}).get("combineall", False))
    return {name: describe(name, cache_dir, seed, combineall=combineall) for name in names}


def generate_all(cache_dir: str | os.PathLike | None = "", seed: int = 0,
                 names: Sequence[str] | None = None) -> dict[str, Path]:
    """Generate every (or the named) synthetic dataset; ``{name: directory}``."""
    return ensure_generated(names or list(SYNTHETIC_DATASETS), cache_dir, seed)
