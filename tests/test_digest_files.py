"""`gpu-rca digest --out DIR` as a person opens it: the folder's files link to each other by relative paths
that exist (checked in headless Chromium from file://), screenshots at desktop and phone widths are kept under
test-artifacts/, and a read-only store renders without being written."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
import pytest

from gpu_rca.correlate import Store
from tests.support import REPO, require_binary
from tests.support.digest import MINUTE_NS, START_NS, build_incident

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
WINDOW = ["--since", str(START_NS // 10**9), "--until", str((START_NS + 30 * MINUTE_NS) // 10**9)]


def _digest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_RCA_")}
    return subprocess.run(
        [sys.executable, "-m", "gpu_rca", "digest", *WINDOW, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def _chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_title = tag == "title"
        self.found += [v for k, v in attrs if k in ("href", "src") and v]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "gpu-rca.duckdb"
    with Store.open(path) as store:
        build_incident(store)
    return path


@pytest.fixture(scope="module")
def folder(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "digest"
    done = _digest("--db", str(store_path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_the_folder_holds_md_html_json_and_plots_linked_by_relative_paths(folder):
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    # One plot per ranked cause beside the overview: the top cause's is there, and nothing else is.
    assert {
        "digest.html",
        "digest.json",
        "digest.md",
        "plots/gpu_oom_large_inputs-metrics.png",
        "plots/overview-requests.png",
    } <= set(names)
    assert all(
        n in ("digest.html", "digest.json", "digest.md") or re.fullmatch(r"plots/[a-z_]+-[a-z]+\.png", n) for n in names
    )
    markdown = (folder / "digest.md").read_text()
    md_links = re.findall(r"\]\(([^)\s]+)\)", markdown)
    assert set(md_links) >= {"digest.html", "digest.json", "plots/overview-requests.png"}
    for link in md_links:
        assert (folder / link).is_file(), link
    assert "/digests" not in markdown and "/api" not in markdown
    document = json.loads((folder / "digest.json").read_text())
    assert document["capacity"]["request_memory"]["rows"]


def test_chromium_follows_every_link_of_the_page_to_a_file(folder, tmp_path):
    url = (folder / "digest.html").as_uri()
    dom = _chromium(url, tmp_path / "profile-dom", "--dump-dom").stdout
    parser = _Links()
    parser.feed(dom)
    assert parser.title.startswith("GPU failure digest 2026-03-02 09:50–10:20 UTC")
    files = [link for link in parser.found if not link.startswith(("#", "http://", "https://"))]
    assert {"digest.md", "digest.json", "plots/overview-requests.png"} <= set(files)
    for link in files:
        parts = urlsplit(link)
        assert not parts.scheme and not link.startswith("/"), f"not relative: {link}"
        assert (folder / unquote(parts.path)).is_file(), link
    for anchor in (link[1:] for link in parser.found if link.startswith("#")):
        assert f'id="{anchor}"' in dom, anchor
    assert "['" not in dom and "('" not in dom  # no Python reprs of lists or tuples
    ARTIFACTS.mkdir(exist_ok=True)
    for name, size in (("digest-files-desktop.png", "1280,900"), ("digest-files-phone.png", "390,844")):
        shot = ARTIFACTS / name
        _chromium(url, tmp_path / f"profile-{name}", f"--screenshot={shot}", f"--window-size={size}")
        assert shot.read_bytes().startswith(b"\x89PNG")


def test_a_read_only_store_renders_and_is_not_written(store_path, tmp_path):
    copy = tmp_path / "ro.duckdb"
    copy.write_bytes(store_path.read_bytes())
    before = duckdb.connect(str(copy), read_only=True).execute("SELECT count(*) FROM digests").fetchone()
    copy.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        done = _digest("--db", str(copy), "--format", "md")
        assert done.returncode == 0, done.stderr
        assert "# GPU failure digest" in done.stdout
        notes = [line for line in done.stderr.splitlines() if "read-only" in line]
        assert len(notes) == 1 and "not archived" in notes[0]
        after = duckdb.connect(str(copy), read_only=True).execute("SELECT count(*) FROM digests").fetchone()
        assert after == before
    finally:
        copy.chmod(stat.S_IRUSR | stat.S_IWUSR)
