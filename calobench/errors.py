"""The one exception type users see: the CLI prints its message on one line and exits 1."""
from __future__ import annotations

import difflib


class CalobenchError(Exception):
    """A failure the user can act on; its message is the whole story."""


def unknown(kind: str, name: str, known) -> CalobenchError:
    """'unknown model 'hgcal_wgn' (did you mean: hgcal_wgan?)' with the close matches."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known) or 'none'}"
    return CalobenchError(f"unknown {kind} '{name}' ({hint})")
