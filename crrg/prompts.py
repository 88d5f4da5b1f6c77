"""Zero-shot prompt lists (no torch here, so the demo can parse prompts before the model loads)."""

from __future__ import annotations

from collections.abc import Sequence


def parse_prompts(prompts: str | Sequence[str] | None) -> list[str]:
    """Comma-separated string or list -> unique, stripped, non-empty prompts (order kept)."""
    if prompts is None:
        return []
    items = prompts.split(",") if isinstance(prompts, str) else list(prompts)
    return list(dict.fromkeys(p.strip() for p in items if p and p.strip()))
