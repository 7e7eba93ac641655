"""resolve_inside: only regular image files under the served root."""

from __future__ import annotations

from pathlib import Path

import pytest

from fooocus_es.media.safe_paths import resolve_inside


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "outputs"
    (served / "2024-05-01").mkdir(parents=True)
    (served / "2024-05-01" / "a.png").write_bytes(b"png")
    (served / "top.WEBP").write_bytes(b"webp")
    (served / "notes.txt").write_bytes(b"text")
    (served / "dir.png").mkdir()
    (tmp_path / "secret.png").write_bytes(b"secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "b.png").write_bytes(b"outside")
    return served


def test_files_inside_resolve(root: Path) -> None:
    assert resolve_inside(root, "2024-05-01/a.png") == (root / "2024-05-01" / "a.png").resolve()
    assert resolve_inside(root, "top.WEBP") == (root / "top.WEBP").resolve()


@pytest.mark.parametrize(
    "relative",
    [
        "",
        "../secret.png",
        "2024-05-01/../../secret.png",
        "2024-05-01/../a.png",
        "./2024-05-01/a.png",
        "/etc/passwd.png",
        str(Path("/") / "tmp" / "x.png"),
        "2024-05-01\\a.png",
        "..\\secret.png",
        "2024-05-01/a.png\x00.png",
        "C:/Windows/x.png",
        "2024-05-01//a.png",
        "notes.txt",
        "dir.png",
        "missing.png",
        "2024-05-01/",
        ".",
    ],
)
def test_refused(root: Path, relative: str) -> None:
    assert resolve_inside(root, relative) is None


def test_symlinks_out_of_root_refused(root: Path) -> None:
    (root / "escape.png").symlink_to(root.parent / "secret.png")
    (root / "outdir").symlink_to(root.parent / "outside", target_is_directory=True)
    (root / "loop.png").symlink_to(root / "loop.png")
    assert resolve_inside(root, "escape.png") is None
    assert resolve_inside(root, "outdir/b.png") is None
    assert resolve_inside(root, "loop.png") is None


def test_symlinks_within_root(root: Path) -> None:
    (root / "alias.png").symlink_to(root / "2024-05-01" / "a.png")
    (root / "text.png").symlink_to(root / "notes.txt")  # image name, text file behind it
    assert resolve_inside(root, "alias.png") == (root / "2024-05-01" / "a.png").resolve()
    assert resolve_inside(root, "text.png") is None


def test_missing_root(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path / "nope", "a.png") is None


def test_root_given_through_a_symlink(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "served-link"
    link.symlink_to(root, target_is_directory=True)
    assert resolve_inside(link, "2024-05-01/a.png") == (root / "2024-05-01" / "a.png").resolve()
