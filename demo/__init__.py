"""The crrg web demo (gradio). ``build_demo(pipeline) -> gr.Blocks``; ``launch_options()``.

Imported lazily so that ``demo.drawing`` / ``demo.views`` do not pull in gradio.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_demo", "launch_options"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from demo import ui

        return getattr(ui, name)
    raise AttributeError(f"module 'demo' has no attribute {name!r}")
