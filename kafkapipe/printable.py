"""The one sanitiser for text that reaches a terminal or a log line.

Dead letters carry what hostile servers and events wrote (a ``Location`` header, a
``trace_id``): C0/C1 controls (``\\x1b``, ``\\x9b`` = CSI), DEL, bidi overrides and
zero-width characters could move the cursor, rewrite the screen, forge log lines or make
text read differently from what it is. Everything ``str.isprintable`` rejects is shown
as a visible escape (``\\x1b``, ``\\u202e``); ordinary non-ASCII letters stay as they are.
"""

from __future__ import annotations

import json
from typing import Any


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, spaces: bool = True) -> str:
    """``text`` with every non-printable character escaped visibly; ``spaces=False`` escapes spaces too."""
    if text.isprintable() and (spaces or " " not in text):
        return text
    return "".join(ch if ch.isprintable() and (spaces or ch != " ") else _escape(ch) for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(doc: Any, *, indent: int | None = None, default: Any = None) -> str:
    """JSON as ``json.dumps(ensure_ascii=False)`` writes it, with DEL and non-ASCII controls escaped too.

    Readable letters stay readable; what ``json.dumps`` leaves raw but a terminal would act on
    (C1 controls, DEL, bidi and zero-width characters) becomes a ``\\uXXXX`` escape.
    """
    text = json.dumps(doc, ensure_ascii=False, indent=indent, default=default)
    if text.isascii() and "\x7f" not in text:
        return text
    # json.dumps already escaped C0 inside strings; what is left raw is only inside strings too.
    return "".join(ch if ch.isprintable() or ch in "\n " else _json_escape(ch) for ch in text)
