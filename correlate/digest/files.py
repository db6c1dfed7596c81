"""A digest written to a folder: `digest.md`, `digest.html`, `digest.json` and `plots/*.png`, linked to each
other by relative paths, so the folder can be opened from disk, copied or attached as it is."""

from __future__ import annotations

from pathlib import Path

from gpu_rca.correlate.digest.links import FileLinks
from gpu_rca.correlate.digest.model import Digest
from gpu_rca.correlate.digest.render_html import render_html
from gpu_rca.correlate.digest.render_md import render_markdown
from gpu_rca.schemas.errors import InputError

MARKDOWN = "digest.md"
HTML = "digest.html"
JSON = "digest.json"
PLOTS = "plots"

#: How each file names the others: relative to the folder they all sit in.
LINKS = FileLinks(markdown=MARKDOWN, html=HTML, json=JSON)


def plot_file(plot_id: str) -> str:
    """A plot's path relative to the folder."""
    return f"{PLOTS}/{plot_id}.png"


def write_digest_files(digest: Digest, folder: Path) -> list[Path]:
    """Write the digest's files into `folder` (created if missing; earlier plots there are replaced)."""
    written = []
    try:
        (folder / PLOTS).mkdir(parents=True, exist_ok=True)
        for old in (folder / PLOTS).glob("*.png"):
            old.unlink()
    except OSError as exc:
        raise InputError(f"cannot write {folder}: {exc.strerror or exc}") from exc
    for plot in digest.plots:
        written.append(_write(folder / plot_file(plot.id), plot.png))
    markdown = render_markdown(digest, plot_href=lambda p: plot_file(p.id), links=LINKS)
    written.append(_write(folder / MARKDOWN, markdown.encode("utf-8")))
    html = render_html(digest, links=LINKS, plot_src=lambda p: plot_file(p.id))
    written.append(_write(folder / HTML, html.encode("utf-8")))
    written.append(_write(folder / JSON, (digest.to_json(include_png=False, indent=2) + "\n").encode("utf-8")))
    return written


def _write(path: Path, data: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
