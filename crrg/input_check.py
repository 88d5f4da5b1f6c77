"""Does the input look like a frontal chest radiograph? A small classifier over what the model
already computes, trained with generated negatives (``train.train_input_check``).

Features (:func:`input_features`): the L2-normalised CLIP image embedding, the detector's 29 region
scores (a chest radiograph has two lungs, a heart, a spine where they belong) and a few intensity
statistics of the preprocessed image that tell inverted and rotated films apart (the lungs are
dark and the mediastinum bright on a radiograph; the apices are at the top). The classifier
(:class:`InputChecker`) has four classes, :data:`INPUT_CLASSES`; an input is accepted when
P(radiograph) >= ``threshold`` (chosen on validation images), otherwise the most probable other
class gives the user-facing reason (:data:`REASONS`). An accepted input whose CLIP embedding lies
farther from the training radiographs than ``ood_threshold`` (Mahalanobis distance under a
shrunk Gaussian fit) is still flagged, as unlike the training images: that part needs no
negatives, so it also covers kinds of input the classifier never saw.

Three states: refused (``ok`` False, ``reason``), accepted with a warning (``ok`` True,
``warning``: P(radiograph) below ``warn_threshold`` or distance above ``ood_warn_threshold``)
and accepted. A refusal costs the user a re-run with ``--force`` on a real film, so only a
confident verdict refuses; an unsure one is reported with a note (:data:`WARNINGS`).

Layout rule (``layout``): orientation statistics (:func:`orientation_stats`: where the spine band,
the mirror symmetry, the rib gradients, the padding lie) follow the robust ones, and the features
end with the same layout statistics of the image's inverted copy and of its copies turned 90, 180
and 270 degrees (:func:`transformed_layouts`, a few ms on the 96 px copy: no extra network pass). A
Gaussian of the training radiographs' layout statistics, fitted on radiographs only, then asks
whether a copy is more typical of radiographs than the image (:meth:`InputChecker.layout_margins`):
beyond a margin chosen on validation radiographs it refuses (inverted / rotated), a smaller one
warns. It needs no inverted or rotated training images, so it holds when those kinds are left out.
The features end with two 16 x 16 thumbnails (:func:`thumbnails`: the image and its inverted copy)
and a checker with ``thumb_components`` adds a second, finer layout model to the margins: an
eigen-radiograph model (principal components of the training radiographs' thumbnails, each
standardised, plus the residual energy off them, :meth:`InputChecker.thumb_distance`) asks the same
question of the whole picture: whether the turned (inverted) thumbnail is nearer the radiographs
than the image's own. Each margin is then the layout-statistics margin plus ``thumb_weights`` x
the thumbnail margin.

Robust intensity statistics (:func:`robust_stats`, medians and quantiles of a 96 px average-pooled
copy) follow the 8 plain ones: a few bright ECG electrodes, wires or tubes move means and the
share of white pixels, not medians, so they must not make a film look inverted. A checker uses the
first ``feature_dim`` features, so checkers trained before these were added keep working.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crrg.images import IMAGE_MEAN, IMAGE_STD
from crrg.types import InputCheck

INPUT_CLASSES: tuple[str, ...] = ("radiograph", "inverted", "rotated", "not_radiograph")
REASONS: dict[str, str] = {
    "inverted": ("This looks like an inverted radiograph (bones dark, lungs bright). A MONOCHROME1 "
                 "DICOM shown without inverting its grey scale looks like this: re-export it as "
                 "MONOCHROME2 or invert it, then try again."),
    "rotated": ("This looks like a rotated radiograph (not upright): rotate it so the apices are at "
                "the top and the patient's right is on the image's left, then try again."),
    "not_radiograph": ("This does not look like a frontal chest radiograph, so no report was written. "
                       "Upload a frontal (PA or AP) chest X-ray."),
    "unlike_training": ("This image is unlike the radiographs the model was trained on (its image "
                        "embedding is far from all of them), so a report would not be reliable."),
}
WARNINGS: dict[str, str] = {
    "inverted": ("This may be an inverted radiograph (bones dark, lungs bright); the report was written "
                 "anyway: check the image's grey scale."),
    "rotated": "This may be a rotated radiograph (not upright); the report was written anyway: check it.",
    "not_radiograph": ("This may not be a frontal chest radiograph; the report was written anyway: "
                       "check the input."),
    "unlike_training": ("This image is somewhat unlike the radiographs the model was trained on; the "
                        "report was written anyway and may be less reliable."),
}
N_STATS = 8
N_ROBUST = 9
N_ORIENT = 13
N_LAYOUT = N_ROBUST + N_ORIENT  # the layout statistics of one image (robust + orientation)
POOL = 96  # robust statistics are taken on an average-pooled POOL x POOL copy
#: offsets in the feature vector: robust statistics, then orientation ones, then the layout
#: statistics of the inverted copy and of the copies turned 90, 180 and 270 degrees
ROBUST_AT = 256 + 29 + N_STATS
LAYOUT_AT = ROBUST_AT  # layout statistics of the image itself: robust + orientation
TRANSFORMS_AT = ROBUST_AT + N_LAYOUT
TRANSFORMS = ("inverted", "rot90", "rot180", "rot270")
THUMB = 16  # thumbnails of the POOL copy: THUMB x THUMB block means (POOL is a multiple of THUMB)
N_THUMB = THUMB * THUMB
#: offset of the thumbnails (the image's, then its inverted copy's) after the transformed copies
THUMB_AT = TRANSFORMS_AT + len(TRANSFORMS) * N_LAYOUT


def image_stats(images: Tensor) -> Tensor:
    """[B, 1, S, S] preprocessed (normalised, black-padded) -> [B, 8] intensity statistics in
    [0, 1] pixel units: mean, std, centre minus border, top minus bottom, centre column minus
    side columns, mirror agreement, share of near-black and of near-white pixels."""
    x = (images[:, 0] * IMAGE_STD + IMAGE_MEAN).clamp(0, 1)  # [B, S, S]
    s = x.shape[-1]
    q = s // 4
    mean, std = x.mean(dim=(1, 2)), x.std(dim=(1, 2))
    centre = x[:, q:-q, q:-q].mean(dim=(1, 2))
    border = (x.sum(dim=(1, 2)) - x[:, q:-q, q:-q].sum(dim=(1, 2))) / (s * s - (s - 2 * q) ** 2)
    top, bottom = x[:, : s // 2].mean(dim=(1, 2)), x[:, s // 2:].mean(dim=(1, 2))
    middle = x[:, :, 3 * s // 8: 5 * s // 8].mean(dim=(1, 2))
    sides = torch.cat([x[:, :, q: 3 * s // 8], x[:, :, 5 * s // 8: -q]], dim=2).mean(dim=(1, 2))
    mirror = 1 - (x - x.flip(-1)).abs().mean(dim=(1, 2))
    dark, bright = (x < 0.05).float().mean(dim=(1, 2)), (x > 0.95).float().mean(dim=(1, 2))
    return torch.stack([mean, std, centre - border, top - bottom, middle - sides, mirror, dark, bright], dim=1)


def pooled(images: Tensor) -> Tensor:
    """[B, 1, S, S] preprocessed -> [B, POOL, POOL] pixels in [0, 1] (what :func:`robust_stats` reads)."""
    x = (images[:, :1].float() * IMAGE_STD + IMAGE_MEAN).clamp(0, 1)
    return F.adaptive_avg_pool2d(x, POOL)[:, 0]


def robust_stats(x: Tensor) -> Tensor:
    """[B, P, P] :func:`pooled` pixels -> [B, 9]: the 5 / 25 / 50 / 75 / 95 % quantiles; median of
    the centre column band minus the median of both lung bands (mid rows); median of the top
    corners minus the overall median; median of the top half minus that of the bottom half;
    median of the lung bands' upper half minus their lower half. Medians, so small bright
    objects (electrodes, wires, tubes, text markers) barely move them."""
    b, p = x.shape[0], x.shape[-1]
    e, q = p // 8, p // 4
    flat = x.reshape(b, -1)
    quantiles = torch.quantile(flat, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]), dim=1).T  # [B, 5]

    def med(part: Tensor) -> Tensor:
        return part.reshape(b, -1).median(dim=1).values

    rows = x[:, q:-q]
    lungs = torch.cat([rows[:, :, e:3 * e], rows[:, :, 5 * e:7 * e]], dim=2)
    corners = torch.cat([x[:, :e, :e], x[:, :e, -e:]], dim=2)
    lung_cols = torch.cat([x[:, :, e:3 * e], x[:, :, 5 * e:7 * e]], dim=2)
    return torch.cat([quantiles, torch.stack([
        med(rows[:, :, 3 * e:5 * e]) - med(lungs), med(corners) - quantiles[:, 2],
        med(x[:, : p // 2]) - med(x[:, p // 2:]),
        med(lung_cols[:, q: p // 2]) - med(lung_cols[:, p // 2: p - q])], dim=1)], dim=1)


def _median(part: Tensor) -> Tensor:
    return part.reshape(part.shape[0], -1).median(dim=1).values


def _band(x: Tensor) -> Tensor:
    """Median of the centre column band minus that of both lung bands (mid rows)."""
    p = x.shape[-1]
    e, q = p // 8, p // 4
    rows = x[:, q:-q]
    return _median(rows[:, :, 3 * e:5 * e]) - _median(torch.cat([rows[:, :, e:3 * e], rows[:, :, 5 * e:7 * e]], dim=2))


def orientation_stats(x: Tensor) -> Tensor:
    """[B, P, P] :func:`pooled` pixels -> [B, 13] statistics that change when a film is turned or
    inverted: the centre-band contrast along rows (the spine lies along the columns of an upright
    film); top-bottom and left-right mirror disagreement; |left - right| half medians; log ratio of
    vertical to horizontal gradient energy (ribs); spread of the column and the row profile; spine
    peak of the column and of the row profile over the lung bands; lungs minus the bottom and the
    top quarter; blank columns minus blank rows (padding: the film's aspect); skew of the centre."""
    b, p = x.shape[0], x.shape[-1]
    e, q = p // 8, p // 4
    lr = (x - x.flip(-1)).abs().mean(dim=(1, 2))
    tb = (x - x.flip(-2)).abs().mean(dim=(1, 2))
    halves = (_median(x[:, :, : p // 2]) - _median(x[:, :, p // 2:])).abs()
    gy = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(1, 2))
    gx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2))
    colp, rowp = x[:, q:-q].median(dim=1).values, x[:, :, q:-q].median(dim=2).values  # [B, P]

    def spine(profile: Tensor) -> Tensor:
        sides = torch.cat([profile[:, e:3 * e], profile[:, 5 * e:7 * e]], dim=1)
        return profile[:, 3 * e:5 * e].amax(dim=1) - sides.amin(dim=1)

    lungs = torch.cat([x[:, :, e:3 * e], x[:, :, 5 * e:7 * e]], dim=2)
    blank_rows, blank_cols = (x.amax(dim=2) < 0.02).float().mean(1), (x.amax(dim=1) < 0.02).float().mean(1)
    c = x[:, q:-q, q:-q].reshape(b, -1)
    skew = (((c - c.mean(1, keepdim=True)) / (c.std(1, keepdim=True) + 1e-4)) ** 3).mean(1)
    return torch.stack([
        _band(x.transpose(1, 2)), tb, lr, halves, torch.log((gy + 1e-4) / (gx + 1e-4)),
        colp[:, e:-e].std(dim=1), rowp[:, e:-e].std(dim=1), spine(colp), spine(rowp),
        _median(lungs[:, q: p // 2]) - _median(x[:, -q:]), _median(lungs[:, p // 2: p - q]) - _median(x[:, :q]),
        blank_cols - blank_rows, skew], dim=1)


def layout_stats(x: Tensor) -> Tensor:
    """[B, P, P] pooled pixels -> [B, N_LAYOUT]: robust and orientation statistics."""
    return torch.cat([robust_stats(x), orientation_stats(x)], dim=1)


def inverted_pixels(x: Tensor) -> Tensor:
    """The pooled pixels with the grey scale flipped, black padding kept black (as a film inverted
    before it was padded)."""
    blank = (x.amax(dim=2, keepdim=True) < 0.02) | (x.amax(dim=1, keepdim=True) < 0.02)
    return torch.where(blank, x, 1 - x)


def transformed_layouts(x: Tensor) -> Tensor:
    """[B, P, P] pooled pixels -> [B, 4 * N_LAYOUT]: :func:`layout_stats` of the inverted copy and
    of the copies turned 90, 180, 270 degrees (:data:`TRANSFORMS`)."""
    copies = [inverted_pixels(x)] + [x.rot90(k, (1, 2)) for k in (1, 2, 3)]
    return torch.cat([layout_stats(c) for c in copies], dim=1)


def thumbnails(x: Tensor) -> Tensor:
    """[B, P, P] pooled pixels -> [B, 2 * N_THUMB]: THUMB x THUMB block means of the image and of
    its inverted copy, flattened (turned copies are the thumbnail turned: block means commute with
    quarter turns)."""
    return torch.cat([F.adaptive_avg_pool2d(c[:, None], THUMB).flatten(1) for c in (x, inverted_pixels(x))], dim=1)


def pixel_features(small: Tensor) -> Tensor:
    """[B, P, P] pooled pixels in [0, 1] -> the pixel part of :func:`input_features` after the plain
    statistics: robust, orientation, the transformed copies' layout statistics, the thumbnails.
    Pixels are rounded to 1/255 first, as the training cache stores them."""
    x = (small.float() * 255).round() / 255
    return torch.cat([layout_stats(x), transformed_layouts(x), thumbnails(x)], dim=1)


def standardised(thumbs: Tensor) -> Tensor:
    """[B, N_THUMB] thumbnails, each to zero mean and unit spread (exposure and contrast removed)."""
    return (thumbs - thumbs.mean(1, keepdim=True)) / (thumbs.std(1, keepdim=True) + 1e-3)


def input_features(embedding: Tensor, region_scores: Tensor, images: Tensor) -> Tensor:
    """[B, E] CLIP image embedding, [B, 29] detector region scores, [B, 1, S, S] preprocessed
    images -> [B, E + 29 + 8 + 9 + 13 + 4 * 22 + 2 * 256] (:func:`pixel_features`)."""
    return torch.cat([F.normalize(embedding.float(), dim=-1), region_scores.float(),
                      image_stats(images.float()), pixel_features(pooled(images))], dim=1)


@dataclass
class InputCheckConfig:
    feature_dim: int = TRANSFORMS_AT  # the leading features it reads (embedding .. orientation statistics)
    hidden_dim: int = 64  # 0 = a linear classifier
    threshold: float = 0.5  # P(radiograph) at or above which an input is accepted
    classes: tuple[str, ...] = INPUT_CLASSES
    embed_dim: int = 256  # the leading features: the CLIP image embedding
    #: Mahalanobis distance of the embedding to the training radiographs above which an input is
    #: "unlike the training images" whatever the classifier says (None: no such check)
    ood_threshold: float | None = None
    #: accepted inputs with P(radiograph) below this get a warning (None: no such warning)
    warn_threshold: float | None = None
    #: accepted inputs farther than this (and not beyond ood_threshold) get a warning
    ood_warn_threshold: float | None = None
    #: a Gaussian of the training radiographs' layout statistics (robust + orientation): an image
    #: whose inverted (or turned) copy is more typical of them than the image itself, by more
    #: than these margins, is refused / warned as inverted (rotated). Fitted on radiographs only.
    layout: bool = False
    layout_inverted_threshold: float | None = None
    layout_rotated_threshold: float | None = None
    layout_inverted_warn: float | None = None
    layout_rotated_warn: float | None = None
    #: eigen-radiograph thumbnail model (0: none): principal components kept; its margins count
    #: ``thumb_weights`` (inverted, rotated) x in the layout margins
    thumb_components: int = 0
    thumb_weights: tuple[float, float] = (1.0, 1.0)


class InputChecker(nn.Module):
    """features [B, F] -> logits [B, 4] over :data:`INPUT_CLASSES`."""

    def __init__(self, config: InputCheckConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or InputCheckConfig()
        out = len(config.classes)
        self.norm = nn.LayerNorm(config.feature_dim)
        if config.hidden_dim:
            self.mlp = nn.Sequential(nn.Linear(config.feature_dim, config.hidden_dim), nn.ReLU(),
                                     nn.Linear(config.hidden_dim, out))
        else:
            self.mlp = nn.Linear(config.feature_dim, out)
        # Gaussian model of the training radiographs' embeddings (train.train_input_check)
        self.register_buffer("ood_mean", torch.zeros(config.embed_dim))
        self.register_buffer("ood_precision", torch.eye(config.embed_dim))
        if config.layout:  # Gaussian of the training radiographs' layout statistics (standardised)
            self.register_buffer("layout_mean", torch.zeros(N_LAYOUT))
            self.register_buffer("layout_scale", torch.ones(N_LAYOUT))
            self.register_buffer("layout_precision", torch.eye(N_LAYOUT))
        if config.thumb_components:  # principal components of the standardised radiograph thumbnails
            self.register_buffer("thumb_mean", torch.zeros(N_THUMB))
            self.register_buffer("thumb_basis", torch.zeros(config.thumb_components, N_THUMB))
            self.register_buffer("thumb_var", torch.ones(config.thumb_components))
            self.register_buffer("thumb_residual", torch.ones(1))

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(self.norm(features[:, : self.config.feature_dim]))

    def distance(self, features: Tensor) -> Tensor:
        """[B] Mahalanobis distance of the embedding part of ``features`` to the training radiographs."""
        d = features[:, : self.config.embed_dim] - self.ood_mean
        return torch.einsum("be,ef,bf->b", d, self.ood_precision, d).clamp(min=0).sqrt()

    def layout_distance(self, layout: Tensor) -> Tensor:
        """[B, N_LAYOUT] layout statistics -> [B] Mahalanobis distance to the training radiographs'."""
        d = (layout - self.layout_mean) / self.layout_scale
        return torch.einsum("be,ef,bf->b", d, self.layout_precision, d).clamp(min=0).sqrt()

    def layout_margins(self, features: Tensor) -> Tensor:
        """[B, 2]: how much more typical of radiographs the inverted copy is than the image, and
        the best of the turned copies (distance of the image minus that of the copy)."""
        own = self.layout_distance(features[:, LAYOUT_AT:LAYOUT_AT + N_LAYOUT])
        copies = [self.layout_distance(features[:, TRANSFORMS_AT + i * N_LAYOUT: TRANSFORMS_AT + (i + 1) * N_LAYOUT])
                  for i in range(len(TRANSFORMS))]
        margins = torch.stack([own - copies[0], own - torch.stack(copies[1:]).amin(dim=0)], dim=1)
        if self.config.thumb_components and features.shape[1] >= THUMB_AT + 2 * N_THUMB:
            margins = margins + self.thumb_margins(features) * torch.tensor(self.config.thumb_weights)
        return margins

    def thumb_distance(self, thumbs: Tensor) -> Tensor:
        """[B, N_THUMB] thumbnails -> [B] distance to the training radiographs' eigen-radiograph
        model: Mahalanobis along the kept components plus the residual energy off them."""
        z = standardised(thumbs) - self.thumb_mean
        p = z @ self.thumb_basis.T
        off = ((z * z).sum(1) - (p * p).sum(1)).clamp(min=0)
        return ((p * p / self.thumb_var).sum(1) + off / self.thumb_residual).sqrt()

    def thumb_margins(self, features: Tensor) -> Tensor:
        """[B, 2]: as :meth:`layout_margins`, from the thumbnails: own distance minus that of the
        inverted thumbnail, and minus the smallest of the three turned ones."""
        own = features[:, THUMB_AT:THUMB_AT + N_THUMB]
        square = own.reshape(-1, THUMB, THUMB)
        turned = [self.thumb_distance(square.rot90(k, (1, 2)).flatten(1)) for k in (1, 2, 3)]
        d = self.thumb_distance(own)
        inverted = self.thumb_distance(features[:, THUMB_AT + N_THUMB:THUMB_AT + 2 * N_THUMB])
        return torch.stack([d - inverted, d - torch.stack(turned).amin(dim=0)], dim=1)

    @torch.no_grad()
    def check(self, features: Tensor) -> list[InputCheck]:
        cfg = self.config
        probs = self(features).softmax(dim=-1)  # [B, 4]
        out = [verdict(row.tolist(), cfg.classes, cfg.threshold, cfg.warn_threshold) for row in probs]
        if cfg.ood_threshold is not None or cfg.ood_warn_threshold is not None:
            d = self.distance(features).tolist()
            out = [far_verdict(c, dist, cfg.ood_threshold, cfg.ood_warn_threshold) for c, dist in zip(out, d)]
        if cfg.layout and features.shape[1] >= TRANSFORMS_AT + len(TRANSFORMS) * N_LAYOUT:
            rules = ((0, "inverted", cfg.layout_inverted_threshold, cfg.layout_inverted_warn),
                     (1, "rotated", cfg.layout_rotated_threshold, cfg.layout_rotated_warn))
            for i, margins in enumerate(self.layout_margins(features).tolist()):
                # the rule the image exceeds most goes first: its reason is the one given
                for j, reason, refuse, warn in sorted(rules, key=lambda r: (r[2] or 0.0) - margins[r[0]]):
                    out[i] = layout_verdict(out[i], margins[j], reason, refuse, warn)
        return out


def verdict(probs: Sequence[float], classes: Sequence[str] = INPUT_CLASSES, threshold: float = 0.5,
            warn_threshold: float | None = None) -> InputCheck:
    """The :class:`crrg.types.InputCheck` of one image's class probabilities: refused below
    ``threshold``, accepted with a warning below ``warn_threshold``, else accepted."""
    score = float(probs[0])
    other = classes[max(range(1, len(classes)), key=lambda i: probs[i])]
    if score < threshold:
        return InputCheck(ok=False, score=score, reason=REASONS[other])
    if warn_threshold is not None and score < warn_threshold:
        return InputCheck(ok=True, score=score, warning=WARNINGS[other])
    return InputCheck(ok=True, score=score)


def far_verdict(check: InputCheck, distance: float, refuse: float | None, warn: float | None) -> InputCheck:
    """``check`` once the embedding's distance is known: an accepted input beyond ``refuse`` is
    refused, one beyond ``warn`` gets a warning (a classifier warning is kept)."""
    if not check.ok:
        return check
    if refuse is not None and distance > refuse:
        return InputCheck(False, check.score, REASONS["unlike_training"])
    if warn is not None and distance > warn and check.warning is None:
        return InputCheck(True, check.score, warning=WARNINGS["unlike_training"])
    return check


def layout_verdict(check: InputCheck, margin: float, reason: str, refuse: float | None,
                   warn: float | None) -> InputCheck:
    """``check`` once the layout margin of ``reason`` is known: an accepted input beyond
    ``refuse`` is refused for ``reason``, beyond ``warn`` it is warned (an earlier warning stays)."""
    if not check.ok:
        return check
    if refuse is not None and margin > refuse:
        return InputCheck(False, check.score, REASONS[reason])
    if warn is not None and margin > warn and check.warning is None:
        return InputCheck(True, check.score, warning=WARNINGS[reason])
    return check


def status(check: InputCheck) -> str:
    """"reject", "warn" or "ok"."""
    return "reject" if not check.ok else "warn" if check.warning else "ok"


def reason_key(check: InputCheck) -> str | None:
    """The class behind a refusal or warning (a key of :data:`REASONS`), None when plainly ok."""
    text = check.reason if not check.ok else check.warning
    table = REASONS if not check.ok else WARNINGS
    return next((k for k, v in table.items() if v == text), None if text is None else "other")


CHECKER_WEIGHTS, CHECKER_CONFIG = "input_check.safetensors", "config.json"


def save_checker(checker: InputChecker, folder: str | Path) -> None:
    """``folder/input_check.safetensors`` (plain state_dict tensors) and ``folder/config.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in checker.state_dict().items()}, str(folder / CHECKER_WEIGHTS))
    (folder / CHECKER_CONFIG).write_text(json.dumps(asdict(checker.config), indent=2))


def config_from_dict(data: dict) -> InputCheckConfig:
    """:class:`InputCheckConfig` from its JSON form (unknown keys are ignored)."""
    known = {f.name for f in fields(InputCheckConfig)}
    values = {k: v for k, v in data.items() if k in known}
    for key in ("classes", "thumb_weights"):
        if key in values:
            values[key] = tuple(values[key])
    return InputCheckConfig(**values)


def load_checker(folder: str | Path) -> InputChecker:
    """The checker :func:`save_checker` wrote (float32, eval mode)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    checker = InputChecker(config_from_dict(json.loads((folder / CHECKER_CONFIG).read_text())))
    checker.load_state_dict(load_file(str(folder / CHECKER_WEIGHTS)))
    return checker.float().eval()
