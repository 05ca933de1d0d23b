"""The one exception type users see: the CLI prints its message on one line and exits 1."""
from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import os
import tempfile
import traceback
from pathlib import Path


class CalobenchError(Exception):
    """A failure the user can act on; its message is the whole story."""


def unknown(kind: str, name: str, known) -> CalobenchError:
    """'unknown model 'hgcal_wgn' (did you mean: hgcal_wgan?)' with the close matches."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known) or 'none'}"
    return CalobenchError(f"unknown {kind} '{name}' ({hint})")


@contextlib.contextmanager
def plugin_step(what: str, log_path=None, hint: str = ""):
    """Turn an unexpected exception of plugin code into one CalobenchError line naming ``what``;
    the full traceback is appended to ``log_path`` (default: calobench-error-<pid>.log in the
    temp folder)."""
    try:
        yield
    except (CalobenchError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if log_path is None:
            log_path = Path(tempfile.gettempdir()) / f"calobench-error-{os.getpid()}.log"
        where = ""
        with contextlib.suppress(OSError):
            with open(log_path, "a") as f:
                f.write(f"--- {_dt.datetime.now().isoformat(timespec='seconds')} {what}\n")
                f.write(traceback.format_exc())
            where = f"; traceback in {log_path}"
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        raise CalobenchError(f"{what} failed: {type(exc).__name__}{': ' + text if text else ''}{where}{hint}") from None
