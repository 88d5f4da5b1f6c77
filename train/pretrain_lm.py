"""Language-model pretraining: the GPT-2 decoder from scratch on IU X-ray report sentences.

    python -m train.pretrain_lm --prepared out/data --init runs/stage2/model --out runs/lm

Before the model is built, the compact vocabulary (``DecoderConfig.token_ids``: the GPT-2 ids used
at least ``min_token_count`` times in the training sentences) is computed from ``sentences.jsonl``
(train split only) and the decoder is rebuilt with it; every other part of ``--init`` (or of a
fresh ``model_variant``) is kept as it is. There is no region feature yet: every sentence gets
the zero feature, so the pseudo self-attention prefix reduces to the k/v projections' biases
(after the feature LayerNorm), i.e. a learned "null" region. Stage 3 then conditions the same
decoder on real region features (``train.train_decoder --init OUT/model`` or ``--decoder-from``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from crrg.decoder import ReportDecoder
from crrg.model import CRRGConfig, CRRGModel, get_config
from crrg.tokenizer import build_token_ids
from train import common
from train.datasets import PreparedData
from train.engine import RunConfig
from train.targets import sentence_pool

logger = logging.getLogger(__name__)

STAGE = "lm"


@dataclass
class LMRunConfig(RunConfig):
    """``min_token_count``: a GPT-2 token joins the vocabulary when it occurs this often in the
    training sentences (rarer ones map to ``<unk>``); ``dedupe``: train on each distinct sentence
    once per epoch instead of at its corpus frequency; ``sources``: sentence sources used
    (:func:`train.targets.sentence_pool`: report sentences and clinical-note imaging sentences)."""

    batch_size: int = 64
    epochs: int = 20
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 200
    min_token_count: int = 1
    dedupe: bool = False
    sources: tuple[str, ...] = ("iu_xray", "mimic_cxr", "clinical_notes")


class SentenceDataset(Dataset):
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> str:
        return self.texts[index]


def collate_texts(texts: list[str]) -> dict[str, Any]:
    return {"texts": list(texts), "n": len(texts)}


class LMStage(nn.Module):
    """Teacher-forced LM loss with the zero region feature: ``{"loss", "loss_lm"}``."""

    def __init__(self, decoder: ReportDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        texts = batch["texts"]
        device = next(self.decoder.parameters()).device
        features = torch.zeros(len(texts), self.decoder.config.feature_dim, device=device)  # [N, D]
        loss = self.decoder(features, texts=texts)["loss_lm"]
        return {"loss": loss, "loss_lm": loss}


def sentence_texts(prepared: PreparedData, split: str, cfg: LMRunConfig) -> list[str]:
    texts = [s["text"] for s in sentence_pool(prepared, split, cfg.sources) if s.get("text")]
    return sorted(set(texts)) if cfg.dedupe else texts


def vocabulary_config(config: CRRGConfig, train_texts: list[str], min_count: int) -> CRRGConfig:
    """``config`` whose decoder keeps the GPT-2 ids used in ``train_texts`` (compact vocabulary)."""
    token_ids = build_token_ids(train_texts, min_count=min_count)
    logger.info("decoder vocabulary: %d GPT-2 tokens kept (+ <unk>) from %d training sentences",
                len(token_ids), len(train_texts))
    return dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, token_ids=token_ids))


def with_vocabulary(model: CRRGModel, train_texts: list[str], min_count: int) -> CRRGModel:
    """Rebuild ``model``'s decoder (fresh weights) with the compact vocabulary; other parts kept."""
    model.config = vocabulary_config(model.config, train_texts, min_count)
    model.decoder = ReportDecoder(model.config.decoder)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = common.build_parser(f"pretrain_{STAGE}", __doc__.split("\n\n")[0], f"{STAGE}_default.json")
    args = common.parse_args(parser, argv)
    info = common.setup(args)
    try:
        state, cfg = common.resume_or_configure(args, STAGE, LMRunConfig)
        prepared = PreparedData(args.prepared, args.data)
        train_texts = sentence_texts(prepared, "train", cfg)
        if not train_texts:
            raise ValueError(f"no training sentences from sources {list(cfg.sources)} in {args.prepared}")
        if state is None and args.init is None:  # fresh: the vocabulary goes into the config first
            model = CRRGModel(vocabulary_config(get_config(cfg.model_variant), train_texts, cfg.min_token_count))
        else:
            model = common.load_model(args, cfg.model_variant, state)
            if state is None:
                model = with_vocabulary(model, train_texts, cfg.min_token_count)
        model.train()
        val = SentenceDataset(sentence_texts(prepared, "val", cfg))
        logger.info("lm: %d training sentences, %d validation sentences", len(train_texts), len(val))
        common.fit(args, info, state, stage=STAGE, model=model, module=LMStage(model.decoder),
                   dataset=SentenceDataset(train_texts), collate=collate_texts, run=cfg, eval_dataset=val,
                   find_unused_parameters=False)
    finally:
        common.cleanup_distributed()


if __name__ == "__main__":
    main()
