"""OwnFiles: this server's /outputs/ and /inputs/ URLs read from the data dir, nothing else."""

from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path

import pytest
from PIL import Image

from fooocus_es.api.inputs import store_request_images
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.media.errors import InputImageError
from fooocus_es.media.inputs import encode_input_png
from fooocus_es.media.limits import ImageLimits
from fooocus_es.media.own_files import OwnFile, OwnFiles
from fooocus_es.settings import Settings

PORT = 7866
FIELD = "uov_input_image"
LIMITS = ImageLimits()
RESULT = "outputs/2026-12-02/abc.png"


def png(color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "outputs" / "2026-12-02").mkdir(parents=True)
    (tmp_path / "outputs" / "2026-12-02" / "abc.png").write_bytes(png())
    (tmp_path / "outputs" / "2026-12-02" / "a b.png").write_bytes(png((1, 2, 3)))
    (tmp_path / "outputs" / "db.sqlite3").write_bytes(b"SQLite format 3\x00")
    (tmp_path / "outputs.db").write_bytes(b"not yours")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "f00d.png").write_bytes(png((0, 255, 0)))
    (tmp_path / "secret.png").write_bytes(png((9, 9, 9)))
    (tmp_path / "outputs" / "escape.png").symlink_to(tmp_path / "secret.png")
    return tmp_path


def own(data_dir: Path, base_url: str = f"http://127.0.0.1:{PORT}", **kwargs: object) -> OwnFiles:
    return OwnFiles(
        base_url=base_url, port=PORT, outputs_dir=data_dir / "outputs", inputs_dir=data_dir / "inputs", **kwargs
    )


def read(files: OwnFiles, url: str) -> bytes | None:
    return files.read(url, field=FIELD, limits=LIMITS)


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:{PORT}/{RESULT}",
        f"http://127.9.8.7:{PORT}/{RESULT}",
        f"http://localhost:{PORT}/{RESULT}",
        f"http://LocalHost.:{PORT}/{RESULT}",
        f"http://[::1]:{PORT}/{RESULT}",
        f"http://[::ffff:127.0.0.1]:{PORT}/{RESULT}",
        f"http://0.0.0.0:{PORT}/{RESULT}",
        f"https://localhost:{PORT}/{RESULT}",
        f"HTTP://127.0.0.1:{PORT}/{RESULT}",
        f"  http://127.0.0.1:{PORT}/{RESULT}  ",
    ],
)
def test_loopback_on_the_own_port_reads_the_file(data_dir: Path, url: str) -> None:
    assert read(own(data_dir), url) == (data_dir / RESULT).read_bytes()


def test_base_url_origin_and_prefix(data_dir: Path) -> None:
    files = own(data_dir, base_url="https://img.example.com/fooocus")
    expected = (data_dir / RESULT).read_bytes()
    assert read(files, f"https://img.example.com/fooocus/{RESULT}") == expected
    assert read(files, f"https://IMG.example.com:443/fooocus/{RESULT}") == expected
    # Another scheme or port is another origin; without the prefix it is not our file route.
    assert files.locate(f"http://img.example.com/fooocus/{RESULT}") is None
    assert files.locate(f"https://img.example.com:8443/fooocus/{RESULT}") is None
    assert files.locate(f"https://img.example.com/{RESULT}") is None
    assert files.locate(f"https://other.example.com/fooocus/{RESULT}") is None
    # The server itself is still reachable on loopback at the root.
    assert read(files, f"http://127.0.0.1:{PORT}/{RESULT}") == expected


def test_settings_build_the_resolver(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, port=PORT, base_url="http://gpu-box.lan:9000")
    files = OwnFiles.from_settings(settings)
    assert files.locate(f"http://gpu-box.lan:9000/{RESULT}") == OwnFile("outputs", "2026-12-02/abc.png")
    assert files.locate(f"http://127.0.0.1:{PORT}/{RESULT}") == OwnFile("outputs", "2026-12-02/abc.png")
    assert files.locate(f"http://127.0.0.1:9000/{RESULT}") is None  # 9000 is the proxy's port, not ours


def test_inputs_folder_and_query_ignored(data_dir: Path) -> None:
    files = own(data_dir)
    assert read(files, f"http://127.0.0.1:{PORT}/inputs/f00d.png") == (data_dir / "inputs" / "f00d.png").read_bytes()
    signed = f"http://127.0.0.1:{PORT}/{RESULT}?sig=0123456789abcdef#frag"
    assert read(files, signed) == (data_dir / RESULT).read_bytes()
    assert read(files, f"http://127.0.0.1:{PORT}/outputs/2026-12-02/a%20b.png") == png((1, 2, 3))


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:{PORT + 1}/{RESULT}",  # another port: someone else's server
        f"http://127.0.0.1/{RESULT}",  # port 80
        f"http://127.0.0.1:{PORT}/v1/engine/generate/",
        f"http://127.0.0.1:{PORT}/outputsx/abc.png",
        f"http://127.0.0.1:{PORT}/static/outputs/abc.png",
        f"http://10.0.0.7:{PORT}/{RESULT}",  # a private address that is not this machine's
        f"ftp://127.0.0.1:{PORT}/{RESULT}",
        f"file:///{RESULT}",
        f"http://127.0.0.1:notaport/{RESULT}",
        f"http://127.0.0.1:{PORT}/outputs/%ff.png",  # not UTF-8 once decoded
        "not a url",
    ],
)
def test_not_an_own_url(data_dir: Path, url: str) -> None:
    files = own(data_dir)
    assert files.locate(url) is None
    assert read(files, url) is None  # left to fetch.py, which refuses loopback/private as before


@pytest.mark.parametrize(
    "path",
    [
        "/outputs/../outputs.db",
        "/outputs/%2e%2e/outputs.db",
        "/outputs/%2E%2E/secret.png",
        "/outputs/..%2f..%2fetc/passwd",
        "/outputs/..%2fsecret.png",
        "/outputs/2026-12-02/../../secret.png",
        "/outputs/%2fetc%2fpasswd",
        "/outputs/escape.png",  # a symlink pointing out of outputs/
        "/outputs/db.sqlite3",  # not an image file
        "/outputs/2026-12-02",
        "/outputs/",
        "/outputs/2026-12-02/abc.png%00.png",
        "/outputs/2026-12-02%5cabc.png",
        "/inputs/missing.png",
        "/outputs/2026-12-02/nope.png",
    ],
)
def test_own_url_without_a_servable_file_is_refused(data_dir: Path, path: str) -> None:
    with pytest.raises(InputImageError) as caught:
        read(own(data_dir), f"http://127.0.0.1:{PORT}{path}")
    assert caught.value.field == FIELD
    assert "does not exist on this server" in caught.value.message


def test_missing_file_names_the_field(data_dir: Path) -> None:
    with pytest.raises(InputImageError) as caught:
        own(data_dir).read(
            f"http://localhost:{PORT}/outputs/2026-12-02/gone.png", field="inpaint_input_image", limits=LIMITS
        )
    assert caught.value.field == "inpaint_input_image"
    assert str(caught.value) == (
        "inpaint_input_image: the URL names a file under /outputs/ that does not exist on this server"
    )


def test_oversized_file_is_refused(data_dir: Path) -> None:
    with pytest.raises(InputImageError, match="larger than 20 bytes"):
        own(data_dir).read(f"http://127.0.0.1:{PORT}/{RESULT}", field=FIELD, limits=ImageLimits(max_bytes=20))


def test_machine_addresses_and_names(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        calls.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.5", 0)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 0, 0, 2)),
        ]

    monkeypatch.setattr(socket, "gethostname", lambda: "GPU-Box")
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    files = own(data_dir, host="10.9.9.9")
    assert files.locate(f"http://127.0.0.1:{PORT}/{RESULT}") is not None
    assert calls == []  # loopback and the base origin need no lookup
    assert files.locate(f"http://192.168.1.5:{PORT}/{RESULT}") is not None
    assert files.locate(f"http://[fe80::1]:{PORT}/{RESULT}") is not None
    assert files.locate(f"http://10.9.9.9:{PORT}/{RESULT}") is not None  # the configured --host
    assert files.locate(f"http://gpu-box:{PORT}/{RESULT}") is not None
    assert files.locate(f"http://192.168.1.6:{PORT}/{RESULT}") is None
    assert files.locate(f"http://192.168.1.5:{PORT + 1}/{RESULT}") is None
    assert calls == ["GPU-Box"]  # looked up once, then cached on the instance


def test_failed_address_lookup_is_not_fatal(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> list[tuple]:
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "getaddrinfo", broken)
    files = own(data_dir)
    assert files.locate(f"http://192.168.1.5:{PORT}/{RESULT}") is None
    assert files.locate(f"http://localhost:{PORT}/{RESULT}") is not None


# store_request_images: the resolver wired into the one path every request image takes.


def test_store_request_images_reads_own_urls(data_dir: Path) -> None:
    params = {
        "uov_input_image": f"http://127.0.0.1:{PORT}/{RESULT}?sig=abc",
        "inpaint_input_image": "None",
        "controlnet_image": [{"cn_img": f"http://localhost:{PORT}/inputs/f00d.png", "cn_type": "ImagePrompt"}],
    }
    stored = store_request_images(params, LocalBlobs(data_dir), LIMITS, own_files=own(data_dir))
    with Image.open(io.BytesIO((data_dir / RESULT).read_bytes())) as original:
        expected = hashlib.sha256(encode_input_png(original.convert("RGB"))).hexdigest()
    assert stored["uov_input_image"] == f"inputs/{expected}.png"
    assert (data_dir / stored["uov_input_image"]).is_file()
    assert stored["inpaint_input_image"] == ""
    assert stored["controlnet_image"][0]["cn_img"].startswith("inputs/")


def test_store_request_images_still_refuses_other_loopback(data_dir: Path) -> None:
    params = {"uov_input_image": f"http://127.0.0.1:{PORT + 1}/{RESULT}"}
    with pytest.raises(InputImageError) as caught:
        store_request_images(params, LocalBlobs(data_dir), LIMITS, own_files=own(data_dir))
    assert caught.value.field == FIELD
    assert "loopback" in caught.value.message


def test_own_file_goes_through_the_decode_checks(data_dir: Path) -> None:
    (data_dir / "outputs" / "fake.png").write_bytes(b"this is not an image")
    params = {"controlnet_image": [{"cn_img": f"http://127.0.0.1:{PORT}/outputs/fake.png"}]}
    with pytest.raises(InputImageError) as caught:
        store_request_images(params, LocalBlobs(data_dir), LIMITS, own_files=own(data_dir))
    assert caught.value.field == "controlnet_image[0].cn_img"
    assert "not a supported image format" in caught.value.message
    tiny = ImageLimits(max_pixels=10)
    params = {"uov_input_image": f"http://127.0.0.1:{PORT}/{RESULT}"}
    with pytest.raises(InputImageError, match="the limit is 10 pixels"):
        store_request_images(params, LocalBlobs(data_dir), tiny, own_files=own(data_dir))


def test_without_a_resolver_own_urls_are_refused_as_before(data_dir: Path) -> None:
    params = {"uov_input_image": f"http://127.0.0.1:{PORT}/{RESULT}"}
    with pytest.raises(InputImageError, match="loopback"):
        store_request_images(params, LocalBlobs(data_dir), LIMITS)
