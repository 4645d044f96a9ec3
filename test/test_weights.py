"""Weight lookup, loading errors and the verified, atomic downloader (against a local HTTP server)."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from superglue_ros import SuperGlue, SuperPoint
from superglue_ros.cli.main import main
from superglue_ros.inference.weights import (OfficialFile, WeightsError, download, find_official, git_blob_sha1,
                                             load_into, search_dirs)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, several read chunks


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /good.pth; /short.pth promises more bytes than it sends, then hangs up;
    /endless.pth sends PAYLOAD three times without a Content-Length."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path.endswith("/good.pth"):
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path.endswith("/short.pth"):
            self._send(PAYLOAD[: len(PAYLOAD) // 3], len(PAYLOAD))
        elif self.path.endswith("/endless.pth"):
            self._send(PAYLOAD * 3, None)
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int | None) -> None:
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/weights"
    httpd.shutdown()
    httpd.server_close()


def spec(filename: str, content: bytes = PAYLOAD) -> dict[str, OfficialFile]:
    return {"file": OfficialFile(filename, git_blob_sha1(content))}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_git_blob_sha1_is_gits():
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`


def test_download_success_verifies_and_reports_progress(server, tmp_path):
    seen = []
    paths = download(tmp_path, names=("file",), base_url=server, expected=spec("good.pth"),
                     progress=lambda label, done, total: seen.append((done, total)))
    assert paths == [tmp_path / "good.pth"] and paths[0].read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1
    assert leftovers(tmp_path) == ["good.pth"]


def test_checksum_mismatch_writes_nothing(server, tmp_path):
    with pytest.raises(WeightsError, match="failed verification"):
        download(tmp_path, names=("file",), base_url=server, expected=spec("good.pth", b"other"))
    assert leftovers(tmp_path) == []


def test_interrupted_transfer_writes_nothing(server, tmp_path):
    with pytest.raises(WeightsError, match="interrupted|failed"):
        download(tmp_path, names=("file",), base_url=server, expected=spec("short.pth"), timeout=10)
    assert leftovers(tmp_path) == []


def test_a_download_beyond_the_size_cap_is_stopped_and_writes_nothing(server, tmp_path, monkeypatch):
    """A server that streams more than any weight file (here 3 MiB against a 2 MiB cap), without saying how
    much, is cut off at the cap rather than filling the disk."""
    monkeypatch.setattr("superglue_ros.inference.weights.DOWNLOAD_LIMIT", 2 << 20)
    with pytest.raises(WeightsError, match="sent more than 2 MiB; stopped"):
        download(tmp_path, names=("file",), base_url=server, expected=spec("endless.pth", PAYLOAD * 3))
    assert leftovers(tmp_path) == []


def test_existing_verified_file_is_not_fetched_again(tmp_path):
    (tmp_path / "good.pth").write_bytes(PAYLOAD)
    paths = download(tmp_path, names=("file",), base_url="http://127.0.0.1:9/unreachable", expected=spec("good.pth"))
    assert paths == [tmp_path / "good.pth"]


def test_unreachable_server_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="download of http://127.0.0.1:9"):
        download(tmp_path, base_url="http://127.0.0.1:9/x", timeout=5)
    assert leftovers(tmp_path) == []


def test_cli_download_reports_failure_with_exit_code_2(server, tmp_path, capsys):
    assert main(["weights", "download", "--dir", str(tmp_path), "--base-url", server]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "superglue-ros weights: error:" in err[0]


def test_lookup_order_explicit_then_env_then_cache(tmp_path, monkeypatch):
    explicit, env, home = tmp_path / "explicit", tmp_path / "env", tmp_path / "home"
    monkeypatch.setenv("SUPERGLUE_ROS_WEIGHTS_DIR", str(env))
    monkeypatch.setenv("HOME", str(home))
    assert search_dirs(explicit) == [explicit, env, home / ".cache" / "superglue_ros"]
    for folder in (home / ".cache" / "superglue_ros", env, explicit):
        folder.mkdir(parents=True)
        (folder / "superglue_outdoor.pth").write_bytes(b"x")
        assert find_official("outdoor", explicit) == folder / "superglue_outdoor.pth"


def test_truncated_file_is_a_clear_error(tmp_path, weight_files):
    truncated = tmp_path / "superpoint_v1.pth"
    truncated.write_bytes(Path(weight_files["superpoint"]).read_bytes()[:5000])
    with pytest.raises(WeightsError, match=r"superpoint_v1.pth is unreadable or truncated.*weights download"):
        load_into(SuperPoint(), truncated)


def test_wrong_file_for_the_model_is_a_clear_error(weight_files):
    with pytest.raises(WeightsError, match="does not fit SuperGlue"):
        load_into(SuperGlue(), weight_files["superpoint"])


def test_state_dict_round_trip(weight_files):
    model = SuperGlue()
    load_into(model, weight_files["superglue"])
    saved = torch.load(weight_files["superglue"])
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
