#!/usr/bin/env python3
"""Builds gunicorn's HTTP/1 parser corpus from gunicorn's sdist on PyPI (`make corpus`).

  python tools/gunicorn_corpus.py [--cache DIR] [--sdist FILE] [--out DIR] [--compare REF]

1. fetch: `pip download` of gunicorn's sdist at the pinned version, checked by pip
   (--require-hashes) and again here against the pinned sha256, kept in DIR (default
   .cache/gunicorn-corpus). --sdist FILE uses a tarball you already have (same check).
2. convert: tests/requests/{valid,invalid}/NAME.http + NAME.py become NAME.http (the exact
   bytes gunicorn's tests/treq.py feeds its parser) + NAME.json (the expectation, schema 1
   below) + index.json, in DIR/gunicorn (or --out). The .py files are evaluated by
   treq.load_py itself, with the sdist's own gunicorn package: Config, errors and uri() are
   gunicorn's.
3. verify: every case is fed to gunicorn's own RequestParser, whole and one byte at a time,
   as treq does: a valid case must give exactly its expected requests, an invalid one must
   raise its error class. A corpus that fails this is not written.
gunicorn's LICENSE and NOTICE and an ORIGIN.txt go beside the converted files (MIT).
--compare REF then checks the result against another copy (e.g. ../shared/conformance/
gunicorn): .http bytes identical, JSON equal field by field (exit 1 on a difference).

Schema 1 (what crates/ferrule-http/tests/support/corpus.rs reads):
  every case: name, kind ("valid"|"invalid"), source, cfg (the cfg.set() calls of the .py,
  in order, values as written), python_only, fast_parser_skip, raw_len, raw_sha256.
  valid: requests: [{method, uri {raw, scheme, host, port, path, query, fragment} (treq's
  uri()), version [major, minor], headers [[NAME, value]...], body_b64, body_len,
  body_text (UTF-8 or null), trailers [[NAME, value]...]}], one per pipelined request.
  invalid: error (class name), error_base ("ParseException"|"IOError"), gunicorn_status
  (what gunicorn's workers/base.py handle_error() answers; null: no response),
  fast_parser_alternates.
Exit codes: 0 done, 1 a check failed (hash, verification, comparison), 2 bad usage.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "26.1.0"
SHA256 = "1413d777bf99d31ebeb08acd354b01f1ecc44db0aa7b811ae7b86c669232e4f7"
SDIST = f"gunicorn-{VERSION}.tar.gz"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "gunicorn-corpus"

# From gunicorn's tests/test_invalid_requests.py and test_valid_requests.py (26.1.0).
FAST_INCOMPATIBLE_FLAGS = ("permit_obsolete_folding", "strip_header_spaces")
PYTHON_ONLY_EXCEPTIONS = ("ObsoleteFolding", "InvalidSchemeHeaders")
FAST_PARSER_ALTERNATES = {"InvalidRequestMethod": ["InvalidRequestLine"]}

# gunicorn/workers/base.py handle_error(), in its isinstance order: the first class the
# error is an instance of gives the status. Errors outside it (the IOError ones) surface
# while the app reads the body, or end the connection without a response: null.
HANDLE_ERROR_STATUS = [
    ("UnsupportedTransferCoding", 501),
    ("ConfigurationProblem", 500),
    ("ExpectationFailed", 417),
    ("LimitRequestHeaders", 431),
    ("ForbiddenProxyRequest", 403),
    ("InvalidRequestLine", 400), ("InvalidRequestMethod", 400), ("InvalidHTTPVersion", 400),
    ("InvalidHeader", 400), ("InvalidHeaderName", 400), ("LimitRequestLine", 400),
    ("InvalidProxyLine", 400), ("InvalidSchemeHeaders", 400), ("ObsoleteFolding", 400),
]


class Failure(Exception):
    """A check failed: the message says what and what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def check_hash(path: Path) -> Path:
    got = sha256(path)
    if got != SHA256:
        raise Failure(f"{path}: sha256 {got}, expected {SHA256} (gunicorn {VERSION}, pinned in "
                      f"tools/gunicorn_corpus.py); delete the file and run `make corpus` again")
    return path


def fetch(cache: Path) -> Path:
    """The verified sdist in `cache`, downloaded with pip if it is not there yet."""
    target = cache / SDIST
    if target.exists() and sha256(target) == SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"gunicorn=={VERSION} --hash=sha256:{SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--no-binary", ":all:", "--require-hashes", "-r", str(req), "-d", tmp]
        print(f"fetching gunicorn {VERSION}'s sdist from PyPI (pip download)", file=sys.stderr)
        if subprocess.run(cmd).returncode != 0:
            raise Failure(f"`pip download gunicorn=={VERSION}` failed (see above): PyPI must be "
                          f"reachable, or pass --sdist with {SDIST} (sha256 {SHA256})")
        got = check_hash(Path(tmp) / SDIST)
        os.replace(got, target)
    return target


def extract(sdist: Path, into: Path) -> Path:
    """Unpacks the sdist (regular files and directories only) and returns its top directory."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        for m in members:
            if m.name.startswith(("/", "..")) or "/../" in m.name:
                raise Failure(f"{sdist}: unsafe path {m.name!r} in the archive")
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **safe)
    top = into / f"gunicorn-{VERSION}"
    if not (top / "tests" / "treq.py").is_file():
        raise Failure(f"{sdist}: no tests/treq.py inside; is it gunicorn's sdist?")
    return top


class Gunicorn:
    """gunicorn's own test loader and parser, imported from the unpacked sdist."""

    def __init__(self, top: Path):
        for name in [m for m in sys.modules if m == "gunicorn" or m.startswith("gunicorn.")]:
            del sys.modules[name]
        sys.modules.pop("treq", None)
        paths = [str(top / "tests"), str(top)]
        sys.path[:0] = paths
        try:
            import gunicorn
            import gunicorn.config
            import gunicorn.http.errors
            import treq
        finally:  # submodules are found through the package from now on
            for p in paths:
                sys.path.remove(p)

        if gunicorn.__version__ != VERSION or not gunicorn.__file__.startswith(str(top)):
            raise Failure(f"imported gunicorn {gunicorn.__version__} from {gunicorn.__file__}, "
                          f"expected {VERSION} from {top}")
        self.treq, self.errors, self.Config = treq, gunicorn.http.errors, gunicorn.config.Config
        self._record_set_calls()

    def _record_set_calls(self):
        # The JSON keeps each cfg.set(name, value) as written in the .py: wrap Config.set.
        original = self.Config.set

        def set_and_record(cfg, name, value):
            original(cfg, name, value)
            cfg.__dict__.setdefault("_ferrule_calls", {})[name] = value

        self.Config.set = set_and_record

    def load(self, py: Path) -> dict:
        env = self.treq.load_py(str(py))  # sets http_parser='python' after the file ran
        calls = dict(env["cfg"].__dict__.get("_ferrule_calls", {}))
        calls.pop("http_parser", None)
        env["_cfg_calls"] = calls
        return env

    def status(self, error: type) -> int | None:
        for name, code in HANDLE_ERROR_STATUS:
            if issubclass(error, getattr(self.errors, name)):
                return code
        return None


def pairs(items) -> list:
    return [list(x) for x in items]


def body_fields(body) -> dict:
    raw = body.encode("latin-1") if isinstance(body, str) else bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"body_b64": base64.b64encode(raw).decode("ascii"), "body_len": len(raw),
            "body_text": text}


def request_json(exp: dict) -> dict:
    return {
        "method": exp["method"],
        "uri": dict(exp["uri"]),
        "version": list(exp["version"]),
        "headers": pairs(exp["headers"]),
        **body_fields(exp["body"]),
        "trailers": pairs(exp.get("trailers", [])),
    }


def convert_case(g: Gunicorn, reqdir: Path, kind: str, name: str) -> tuple[bytes, dict]:
    http, py = reqdir / kind / f"{name}.http", reqdir / kind / f"{name}.py"
    env = g.load(py)
    expect, cfg = env["request"], env["cfg"]
    if kind == "valid":
        raw = g.treq.request(str(http), expect).data
    else:
        raw = g.treq.badrequest(str(http)).data
    flags = any(getattr(cfg, f, False) for f in FAST_INCOMPATIBLE_FLAGS)
    case = {
        "schema_version": 1,
        "name": name,
        "kind": kind,
        "source": f"tests/requests/{kind}/{name}.http",
        "cfg": env["_cfg_calls"],
        "python_only": bool(env.get("python_only")),
    }
    if kind == "valid":
        exps = expect if isinstance(expect, list) else [expect]
        case["fast_parser_skip"] = flags
        case.update(raw_len=len(raw), raw_sha256=hashlib.sha256(raw).hexdigest())
        case["requests"] = [request_json(e) for e in exps]
    else:
        err = expect.__name__
        case["fast_parser_skip"] = (flags or case["python_only"]
                                    or err in PYTHON_ONLY_EXCEPTIONS)
        case.update(raw_len=len(raw), raw_sha256=hashlib.sha256(raw).hexdigest())
        case.update(
            error=err,
            error_base="ParseException" if issubclass(expect, g.errors.ParseException)
            else "IOError",
            gunicorn_status=g.status(expect),
            fast_parser_alternates=FAST_PARSER_ALTERNATES.get(err, []),
        )
    verify(g, kind, raw, expect, cfg, f"{kind}/{name}")
    return raw, case


def verify(g: Gunicorn, kind: str, raw: bytes, expect, cfg, label: str) -> None:
    """Feeds the bytes to gunicorn's parser as treq does: whole, then a byte at a time."""
    for chunks in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
        if kind == "valid":
            req = g.treq.request.__new__(g.treq.request)
            req.fname, req.name, req.data = label, label, raw
            req.expect = expect if isinstance(expect, list) else [expect]
            try:
                req.check(cfg, lambda: iter(chunks), req.size_all, req.match_read)
            except Exception as e:  # noqa: BLE001 - any failure means the case is wrong
                raise Failure(f"{label}: gunicorn's parser disagrees with the expectation: "
                              f"{type(e).__name__}: {e}") from e
        else:
            try:
                for _ in g.treq.RequestParser(cfg, iter(chunks), None):
                    pass
            except expect:
                continue
            raise Failure(f"{label}: gunicorn's parser did not raise {expect.__name__}")


def convert(top: Path, out: Path) -> int:
    """Writes the converted corpus to `out` (replaced whole); returns the number of cases."""
    g = Gunicorn(top)
    reqdir = top / "tests" / "requests"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        index = {"schema_version": 1, "python": platform.python_version(), "cases": []}
        counts = {}
        for kind in ("valid", "invalid"):
            (tmp / kind).mkdir()
            names = sorted(p.stem for p in (reqdir / kind).glob("*.http"))
            counts[kind] = len(names)
            for name in names:
                raw, case = convert_case(g, reqdir, kind, name)
                (tmp / kind / f"{name}.http").write_bytes(raw)
                write_json(tmp / kind / f"{name}.json", case)
                index["cases"].append({
                    "name": name, "kind": kind, "raw_len": case["raw_len"],
                    "raw_sha256": case["raw_sha256"], "error": case.get("error"),
                    "n_requests": len(case["requests"]) if kind == "valid" else None,
                    "cfg": case["cfg"],
                })
        index["counts"] = counts
        shutil.copyfile(top / "LICENSE", tmp / "LICENSE")
        shutil.copyfile(top / "NOTICE", tmp / "NOTICE")
        (tmp / "ORIGIN.txt").write_text(origin(index))
        write_json(tmp / "index.json", index)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(index["cases"])


def origin(index: dict) -> str:
    return f"""gunicorn HTTP/1.x parser corpus, converted by ferrule's tools/gunicorn_corpus.py

Source: gunicorn {VERSION} sdist from PyPI ({SDIST}, sha256 {SHA256}),
        files tests/requests/valid/*.http + *.py, tests/requests/invalid/*.http + *.py,
        decoded and evaluated with the sdist's tests/treq.py and gunicorn package
        (Python {index['python']}). {index['counts']['valid']} valid and \
{index['counts']['invalid']} invalid cases, each checked against gunicorn's own parser.
License: gunicorn is released under the MIT license; LICENSE and NOTICE beside this file are
         gunicorn's, verbatim. Keep them with these files if you copy them.
"""


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")


# Fields crates/ferrule-http/tests/support/corpus.rs and the socket test read.
USED_CASE = ("name", "kind", "cfg", "error", "gunicorn_status")
USED_REQUEST = ("method", "headers", "body_b64")
USED_URI = ("path", "query", "fragment")


def compare(out: Path, ref: Path, strict: bool) -> list[str]:
    """Differences between two converted corpora: all fields if strict, else the used ones."""
    problems = []
    a, b = (json.loads((d / "index.json").read_text()) for d in (out, ref))
    ids = [[(c["kind"], c["name"]) for c in x["cases"]] for x in (a, b)]
    if sorted(ids[0]) != sorted(ids[1]):
        problems.append(f"cases differ: only here {sorted(set(ids[0]) - set(ids[1]))}, "
                        f"only in {ref}: {sorted(set(ids[1]) - set(ids[0]))}")
    for (kind, name) in sorted(set(ids[0]) & set(ids[1])):
        label = f"{kind}/{name}"
        if (out / f"{label}.http").read_bytes() != (ref / f"{label}.http").read_bytes():
            problems.append(f"{label}.http: bytes differ")
        mine, theirs = (json.loads((d / f"{label}.json").read_text()) for d in (out, ref))
        if strict:
            if mine != theirs:
                problems.append(f"{label}.json differs: {diff(mine, theirs)}")
            continue
        for key in USED_CASE:
            if mine.get(key) != theirs.get(key):
                problems.append(f"{label}.json {key}: {mine.get(key)!r} != {theirs.get(key)!r}")
        reqs = list(zip(mine.get("requests", []), theirs.get("requests", [])))
        if len(mine.get("requests", [])) != len(theirs.get("requests", [])):
            problems.append(f"{label}.json: a different number of requests")
        for i, (r, s) in enumerate(reqs):
            picked = [(k, r.get(k), s.get(k)) for k in USED_REQUEST]
            picked += [(f"uri.{k}", r["uri"].get(k), s["uri"].get(k)) for k in USED_URI]
            problems += [f"{label}.json requests[{i}].{k}: {x!r} != {y!r}"
                         for k, x, y in picked if x != y]
    if strict:
        strip = [{k: v for k, v in x.items() if k != "python"} for x in (a, b)]
        if strip[0] != strip[1]:
            problems.append(f"index.json differs: {diff(strip[0], strip[1])}")
    return problems


def diff(x, y, path="") -> str:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y), key=str):
            if x.get(k, ...) != y.get(k, ...):
                return diff(x.get(k), y.get(k), f"{path}.{k}")
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (p, q) in enumerate(zip(x, y)):
            if p != q:
                return diff(p, q, f"{path}[{i}]")
    return f"{path or '.'}: {x!r:.200} != {y!r:.200}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help="where the sdist is kept and converted (default: %(default)s)")
    ap.add_argument("--sdist", type=Path, help=f"use this {SDIST} instead of downloading it")
    ap.add_argument("--out", type=Path, help="converted corpus (default: CACHE/gunicorn)")
    ap.add_argument("--compare", type=Path, metavar="REF",
                    help="then compare with another converted copy (exit 1 on a difference)")
    ap.add_argument("--strict", action="store_true",
                    help="with --compare: every field, not only those ferrule's tests read")
    args = ap.parse_args(argv)
    out = (args.out or args.cache / "gunicorn").resolve()
    try:
        sdist = check_hash(args.sdist) if args.sdist else fetch(args.cache)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            n = convert(extract(sdist, Path(tmp)), out)
        print(f"gunicorn {VERSION} corpus: {n} cases in {out}", file=sys.stderr)
        if args.compare:
            problems = compare(out, args.compare, args.strict)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            if problems:
                raise Failure(f"{len(problems)} difference(s) from {args.compare}")
            print(f"identical to {args.compare} ({'every field' if args.strict else 'the fields ferrule reads'}"
                  ", .http bytes)", file=sys.stderr)
    except (Failure, OSError, tarfile.TarError) as e:
        print(f"gunicorn_corpus: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
