"""User-facing message hygiene (no gradio): users see the base name of the file they gave, never
a server path (an upload lives in gradio's temporary folder on the server)."""

from __future__ import annotations

import re

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/:'\"()]+/)+([^\s/:'\"()]+)")


def public_message(text: str) -> str:
    """``text`` with every absolute path cut to its base name."""
    return _ABSOLUTE_PATH.sub(r"\1", text)
