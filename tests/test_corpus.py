"""tools/gunicorn_corpus.py: gunicorn's parser corpus built from its sdist (`make corpus`).

The cached sdist is what `make corpus` fetched; these tests convert it again into tmp dirs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gunicorn_corpus.py"
SHARED = Path(os.environ.get("FERRULE_SHARED_CORPUS", ROOT.parent / "shared" / "conformance" / "gunicorn"))

spec = importlib.util.spec_from_file_location("gunicorn_corpus", SCRIPT)
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)


@pytest.fixture(scope="module")
def sdist() -> Path:
    path = gc.DEFAULT_CACHE / gc.SDIST
    assert path.is_file(), f"{path} is missing: run `make corpus` first"
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not (SHARED / "index.json").is_file(), reason=f"no reference corpus at {SHARED}")
def test_the_converted_corpus_is_the_shared_one(sdist, tmp_path):
    ref = json.loads((SHARED / "index.json").read_text())
    # Every field when this Python is the one the reference was made with (treq's uri()
    # uses urllib.parse, whose edge cases move between versions); else the fields ferrule reads.
    strict = ["--strict"] if ref.get("python") == ".".join(map(str, sys.version_info[:3])) else []
    r = run("--sdist", str(sdist), "--out", str(tmp_path / "c"), "--compare", str(SHARED), *strict)
    assert r.returncode == 0, r.stderr
    assert "identical to" in r.stderr
    ours = json.loads((tmp_path / "c" / "index.json").read_text())
    assert ours["counts"] == {"valid": 63, "invalid": 74} == ref["counts"]
    # The byte-level promise, checked here too rather than only by the script itself.
    for case in ref["cases"]:
        name = f"{case['kind']}/{case['name']}.http"
        assert (tmp_path / "c" / name).read_bytes() == (SHARED / name).read_bytes(), name


def test_the_cache_make_corpus_wrote_is_complete_and_licensed(sdist):
    out = gc.DEFAULT_CACHE / "gunicorn"
    index = json.loads((out / "index.json").read_text())
    assert len(index["cases"]) == 137
    for case in index["cases"]:
        raw = (out / case["kind"] / f"{case['name']}.http").read_bytes()
        assert len(raw) == case["raw_len"]
        assert json.loads((out / case["kind"] / f"{case['name']}.json").read_text())["name"] == case["name"]
    assert "Permission is hereby granted" in (out / "LICENSE").read_text()
    assert "MIT" in (out / "NOTICE").read_text()
    origin = (out / "ORIGIN.txt").read_text()
    assert gc.SHA256 in origin and f"gunicorn {gc.VERSION}" in origin


def test_a_tarball_with_another_hash_is_refused(sdist, tmp_path):
    bad = tmp_path / gc.SDIST
    bad.write_bytes(sdist.read_bytes() + b"\0")
    r = run("--sdist", str(bad), "--out", str(tmp_path / "c"))
    assert r.returncode == 1
    assert f"expected {gc.SHA256}" in r.stderr and "make corpus" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def unpacked(sdist: Path, tmp_path: Path) -> Path:
    return gc.extract(sdist, tmp_path / "src")


def test_an_expectation_gunicorns_parser_disagrees_with_is_not_written(sdist, tmp_path):
    top = unpacked(sdist, tmp_path)
    py = top / "tests" / "requests" / "valid" / "001.py"
    py.write_text(py.read_text().replace('"PUT"', '"POST"'))
    with pytest.raises(gc.Failure, match=r"valid/001: gunicorn's parser disagrees"):
        gc.convert(top, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_invalid_case_gunicorn_accepts_is_not_written(sdist, tmp_path):
    top = unpacked(sdist, tmp_path)
    bad = top / "tests" / "requests" / "invalid" / "002.http"
    shutil.copyfile(top / "tests" / "requests" / "valid" / "004.http", bad)
    with pytest.raises(gc.Failure, match=r"invalid/002: gunicorn's parser did not raise InvalidRequestLine"):
        gc.convert(top, tmp_path / "out")


def test_cfg_and_escapes_are_evaluated_as_treq_does(sdist, tmp_path):
    out = tmp_path / "out"
    gc.convert(unpacked(sdist, tmp_path), out)
    case = lambda name: json.loads((out / f"{name}.json").read_text())  # noqa: E731
    # cfg.set() calls as written in the .py, in order (treq's own http_parser set is not one).
    assert case("valid/024")["cfg"] == {"limit_request_line": 8200, "limit_request_field_size": 8210}
    assert case("invalid/019")["cfg"] == {"forwarded_allow_ips": "*"}
    assert case("invalid/019")["gunicorn_status"] == 400 and case("invalid/019")["fast_parser_skip"]
    assert case("invalid/007")["gunicorn_status"] == 431
    assert case("invalid/001")["gunicorn_status"] is None and case("invalid/001")["error_base"] == "IOError"
    # treq turns the text "\r\n" into CR LF and drops the file's own newlines.
    raw = (out / "valid/001.http").read_bytes()
    assert raw.startswith(b"PUT /stuff/here?foo=bar HTTP/1.0\r\n") and b"\\" not in raw
    assert len(case("valid/018")["requests"]) == 2


def test_a_corrupt_cached_sdist_is_fetched_again_and_an_unreachable_index_is_one_clear_line(sdist, tmp_path):
    # make corpus itself exercises the download (CI clones afresh); this stays offline.
    (tmp_path / gc.SDIST).write_bytes(b"not gunicorn")
    env = {**os.environ, "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2", "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--cache", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gunicorn_corpus: `pip download gunicorn=={gc.VERSION}` failed"), r.stderr
    assert "--sdist" in last
    assert (tmp_path / gc.SDIST).read_bytes() == b"not gunicorn"  # never used: hash differs
    assert not (tmp_path / "gunicorn").exists()
