"""Training and evaluation on top of the ``crrg`` library (which never imports this package).

Two kinds of module, kept apart (``tests/test_code_shape.py`` checks it):

- **scripts** (``python -m train.NAME``; a module with a ``main`` or ``if __name__ ==
  "__main__"``): parse arguments, build a config, call the library and the helpers. No train
  module imports a script.
  ``prepare`` (data folder -> prepared jsonl), ``train_detector`` (stages 1-2), ``train_decoder``
  (stage 3), ``pretrain_lm``, ``train_clip``, ``cache_features`` + ``train_heads`` (evidence heads,
  calibration), ``train_input_check``, ``assemble`` (one model folder), ``evaluate`` (held-out
  metrics.json), ``nlg_eval`` (note-pair NLG alone), ``merge_metrics``, ``validate_measurements``,
  ``report_quality``, ``sentence_coverage``, ``gate_findings`` (the within-source gate on a
  finished model), ``train_text_tower`` (CLIP's text tower on frozen image embeddings), ``tune_grounding`` (the
  opacity relative share on validation), ``train_image_tower`` (CLIP's image tower fine-tuned on
  within-source labels, compared with the frozen one), ``refit_image_findings`` (the image-level
  findings beyond pneumonia refit with co-occurrence priors and gated), ``rule_out`` (the
  probability below which a report may state an image-level finding absent, on validation).
- **helpers** (imported by the scripts and by each other):
  ``preparation`` (reading the datasets into the prepared folder, its formats), ``datasets``
  (the prepared folder as datasets), ``targets`` (region targets, sentences), ``finding_labels``,
  ``tasks`` (evaluation tasks), ``common`` (options, start-up), ``engine`` (training loop),
  ``checkpoint``, ``distributed``, ``plots``, ``region_losses`` (stage-2 head losses),
  ``feature_cache`` / ``heads_data`` / ``fit_heads`` (evidence-head data and fitting),
  ``negatives`` and ``source_augment`` (input-check data), ``note_pairs`` / ``note_nlg``
  (note-pair NLG), ``eval_grounding`` (grounding metrics), ``report_gate`` (which image-level
  findings a report may state), ``image_level`` (the image-level head's targets, scores,
  calibration and gates), ``label_decisions`` (CheXzero-style label decisions on CLIP embeddings).
"""
