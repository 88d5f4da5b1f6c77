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
N_STATS = 8


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


def input_features(embedding: Tensor, region_scores: Tensor, images: Tensor) -> Tensor:
    """[B, E] CLIP image embedding, [B, 29] detector region scores, [B, 1, S, S] preprocessed
    images -> [B, E + 29 + 8]."""
    return torch.cat([F.normalize(embedding.float(), dim=-1), region_scores.float(),
                      image_stats(images.float())], dim=1)


@dataclass
class InputCheckConfig:
    feature_dim: int = 256 + 29 + N_STATS
    hidden_dim: int = 64  # 0 = a linear classifier
    threshold: float = 0.5  # P(radiograph) at or above which an input is accepted
    classes: tuple[str, ...] = INPUT_CLASSES
    embed_dim: int = 256  # the leading features: the CLIP image embedding
    #: Mahalanobis distance of the embedding to the training radiographs above which an input is
    #: "unlike the training images" whatever the classifier says (None: no such check)
    ood_threshold: float | None = None


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

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(self.norm(features))

    def distance(self, features: Tensor) -> Tensor:
        """[B] Mahalanobis distance of the embedding part of ``features`` to the training radiographs."""
        d = features[:, : self.config.embed_dim] - self.ood_mean
        return torch.einsum("be,ef,bf->b", d, self.ood_precision, d).clamp(min=0).sqrt()

    @torch.no_grad()
    def check(self, features: Tensor) -> list[InputCheck]:
        probs = self(features).softmax(dim=-1)  # [B, 4]
        out = [verdict(row.tolist(), self.config.classes, self.config.threshold) for row in probs]
        if self.config.ood_threshold is not None:
            far = (self.distance(features) > self.config.ood_threshold).tolist()
            out = [InputCheck(False, c.score, REASONS["unlike_training"]) if f and c.ok else c
                   for c, f in zip(out, far)]
        return out


def verdict(probs: Sequence[float], classes: Sequence[str] = INPUT_CLASSES, threshold: float = 0.5
            ) -> InputCheck:
    """The :class:`crrg.types.InputCheck` of one image's class probabilities."""
    score = float(probs[0])
    if score >= threshold:
        return InputCheck(ok=True, score=score, reason=None)
    other = max(range(1, len(classes)), key=lambda i: probs[i])
    return InputCheck(ok=False, score=score, reason=REASONS[classes[other]])


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
    if "classes" in values:
        values["classes"] = tuple(values["classes"])
    return InputCheckConfig(**values)


def load_checker(folder: str | Path) -> InputChecker:
    """The checker :func:`save_checker` wrote (float32, eval mode)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    checker = InputChecker(config_from_dict(json.loads((folder / CHECKER_CONFIG).read_text())))
    checker.load_state_dict(load_file(str(folder / CHECKER_WEIGHTS)))
    return checker.float().eval()
