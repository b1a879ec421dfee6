"""Each setting's default is written once: the core's (``ServerConfig::default``,
``ParserConfig::default``) reach Python through ``_ferrule.defaults()``, and the
settings table, the help and the core agree on them."""

import dataclasses
import typing

from ferrule import _ferrule
from ferrule.flags import build_parser
from ferrule.settings import Settings

_HINTS = typing.get_type_hints(Settings)


def test_every_core_default_is_the_python_default():
    core = _ferrule.defaults()
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(core) <= fields, set(core) - fields
    python = Settings()
    for name, value in core.items():
        assert getattr(python, name) == value, name
        assert isinstance(getattr(python, name), typing.get_origin(_HINTS[name]) or _HINTS[name]), name


def test_the_core_takes_the_python_defaults():
    # The Rust side of this check: config::defaults::tests (defaults() is ServerConfig::default()).
    _ferrule.Config(Settings().as_dict())


def test_the_help_shows_the_defaults():
    help_text = " ".join(build_parser().format_help().split())
    d = Settings()
    for flag, value in (("--threads", d.threads), ("--backlog", d.backlog), ("--keep-alive", f"{d.keep_alive:g}"),
                        ("--limit-request-line", d.limit_request_line), ("--workers", d.workers),
                        ("--request-buffer-size", d.request_buffer_size)):
        # The flag's own help follows it within a few hundred characters.
        assert f"(default {value}" in help_text.split(flag, 1)[1][:400], flag
