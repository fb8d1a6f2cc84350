"""The replay viewer as one self-contained HTML file (``liferaft sim view``).

:func:`write_viewer` reads a simulator trace (docs/simulator.md, "Traces"),
checks that it is one, and writes ``run.html`` next to ``run.json``: the
viewer's page (static/replay.html) with its CSS, its scripts and the trace
inlined, so it opens from ``file://`` with nothing running and nothing
fetched.  The same page, with a file picker instead of an inlined trace, is
served by the console at ``/ui/replay.html``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from liferaft.sim.trace import TraceError, load_trace

# replay.html's scripts, in the order they load (replay.js uses the model).
SCRIPTS = ("replay-model.js", "replay.js")
_PICKER_START = "<!-- picker:"
_PICKER_END = "<!-- /picker -->"


class ViewerWriteError(Exception):
    """The viewer's HTML file could not be written (the message says why)."""


def static_text(name: str) -> str:
    """One file of liferaft/console/static/, from the installed package."""
    return resources.files("liferaft.console").joinpath("static", name).read_text("utf-8")


def _inline_json(text: str) -> str:
    """JSON text made safe inside ``<script type="application/json">``.

    ``<`` only occurs inside JSON strings, where ``\\u003c`` means the same,
    so no ``</script>`` or ``<!--`` in a checker's message or a node id can
    end the element early."""
    return text.replace("<", "\\u003c")


def _raw(name: str, text: str, closing: str) -> str:
    # A static file inlined into <style>/<script> must not close it itself.
    if closing in text.lower():
        raise RuntimeError(f"static/{name} contains {closing!r}: it cannot be inlined")
    return text


def render_viewer(trace_text: str, title: str = "liferaft replay") -> str:
    """The self-contained viewer page for one trace (already checked)."""
    page = static_text("replay.html")
    start, end = page.find(_PICKER_START), page.find(_PICKER_END)
    link = '<link rel="stylesheet" href="replay.css">'
    if start < 0 or end < start or link not in page:
        raise RuntimeError("static/replay.html lacks the markers write_viewer replaces")
    # No file picker: the page shows the trace it carries.
    page = page[:start] + page[end + len(_PICKER_END):]
    page = page.replace(link, "<style>\n" + _raw("replay.css", static_text("replay.css"),
                                                  "</style") + "</style>")
    for name in SCRIPTS:
        tag = f'<script src="{name}"></script>'
        if tag not in page:
            raise RuntimeError(f"static/replay.html does not load {name}")
        page = page.replace(tag, "<script>\n" + _raw(name, static_text(name), "</script")
                            + "</script>")
    data = ('<script type="application/json" id="trace-data">' + _inline_json(trace_text)
            + "</script>\n")
    title_tag = "<title>liferaft replay viewer</title>"
    page = page.replace(title_tag, f"<title>{_escape(title)}</title>")
    # The data goes before the scripts: replay.js reads it when it starts.
    first_script = page.find("<script>")
    return page[:first_script] + data + page[first_script:]


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_viewer(trace_path: Path | str) -> Path:
    """Write the viewer of ``trace_path`` next to it (``run.json`` ->
    ``run.html``) and return its path.  Nothing is written for a file that
    is not a trace (:class:`~liferaft.sim.trace.TraceError`, from the
    simulator's own reader, says why); :class:`ViewerWriteError` when the
    page cannot be written."""
    path = Path(trace_path)
    out = path.with_suffix(".html")
    if path.suffix.lower() in (".html", ".htm"):
        raise TraceError(f"{path} is a web page, not a trace (traces are .json)")
    trace = load_trace(path)
    # The trace as it was checked, compact (the file as written by --trace).
    text = json.dumps(trace, separators=(",", ":"), ensure_ascii=False)
    page = render_viewer(text, title=f"liferaft replay: {path.name}")
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(page, "utf-8")
        os.replace(tmp, out)  # a reader never sees half a page
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ViewerWriteError(f"cannot write {out}: {e.strerror or e}") from None
    return out


__all__ = ["TraceError", "ViewerWriteError", "render_viewer", "static_text", "write_viewer"]
