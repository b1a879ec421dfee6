"""gunicorn's validators, by gunicorn's names where they have one (``validate_pos_int``
is ``pos_int``): each returns the value gunicorn would hold (``"4"`` is 4, ``"true"``
is True) or raises ``BadValue`` saying what is expected. The settings table that uses
them is ``gunicorn.py``."""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Optional


class BadValue(ValueError):
    """A value gunicorn's validator would refuse; the message says what is expected."""


#: The largest integer setting the core accepts (i64).
_INT_MAX = 2**63 - 1


def pos_int(value: Any) -> int:
    """validate_pos_int: an int, or a string in any base Python reads (``"4"``, ``"0o22"``)."""
    if isinstance(value, bool):
        raise BadValue(f"must be an integer >= 0, not a boolean (got {value!r})")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise BadValue(f"must be an integer >= 0 (got {value!r})") from None
    if not isinstance(value, int) or value < 0:
        raise BadValue(f"must be an integer >= 0 (got {value!r})")
    if value > _INT_MAX:  # the Rust core takes a 64-bit integer
        raise BadValue(f"must be an integer from 0 to {_INT_MAX} (got {value!r})")
    return value


def seconds(value: Any) -> float:
    """gunicorn's whole seconds, and ferrule's fractions: 30, "30", 2.5 or "2.5"."""
    if isinstance(value, bool):
        raise BadValue(f"must be a number of seconds >= 0, not a boolean (got {value!r})")
    text = value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadValue(f"must be a number of seconds >= 0 (got {text!r})") from None
    if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise BadValue(f"must be a number of seconds >= 0 (got {text!r})")
    return float(value)


def _as_bool(value: Any) -> Any:
    """The integers 0 and 1 of a config file as False and True (`preload_app = 1`, which
    gunicorn refuses with a TypeError); anything else unchanged. Every boolean setting
    and every setting whose True and False mean on and off takes them the same."""
    if type(value) is int and value in (0, 1):
        return value == 1
    return value


def boolean(value: Any) -> Optional[bool]:
    """validate_bool: True/False, or the strings "true"/"false" in any case; 0/1 (`_as_bool`)."""
    value = _as_bool(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadValue(f"must be True or False (got {value!r})")


def string(value: Any) -> Optional[str]:
    """validate_string: None or a string (surrounding spaces dropped)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadValue(f"must be a string (got {value!r})")
    return value.strip()


def string_list(value: Any) -> list:
    """validate_list_string: a string is a list of one."""
    if not value:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise BadValue(f"must be a string or a list of strings (got {value!r})")
    return [string(v) for v in value]


def addr_list(value: Any) -> str:
    """validate_string_to_addr_list: comma-separated addresses and networks, or ``*``.
    A list of them is accepted too. Networks are strict (10.0.0.0/8, not 10.0.0.1/8)."""
    if isinstance(value, (list, tuple)):
        value = ",".join(string_list(value))
    text = string(value) or ""
    for item in (p.strip() for p in text.split(",")):
        if item and item != "*":
            try:
                ipaddress.ip_network(item)
            except ValueError as exc:
                raise BadValue(f"{item!r} is not an IP address or network ({exc})") from None
    return text


def dictionary(value: Any) -> dict:
    if not isinstance(value, dict):
        raise BadValue(f"must be a dict (got {value!r})")
    return value


def scheme_headers(value: Any) -> dict:
    """validate_dict, and what the matching needs: header names to the string that means https."""
    for name, secure in dictionary(value).items():
        if not isinstance(name, str) or not isinstance(secure, str):
            raise BadValue("must map header names to the string that means https, like "
                           f"{{'X-FORWARDED-PROTO': 'https'}} (got {name!r}: {secure!r})")
    return dict(value)


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = string(value)
        if text is None or text.lower() not in choices:
            raise BadValue(f"must be one of {', '.join(choices)} (got {value!r})")
        return text.lower()
    return check


def proxy_protocol(value: Any) -> str:
    value = _as_bool(value)
    if value is None or value is False:
        return "off"
    if value is True:
        return "auto"
    mapping = {"false": "off", "off": "off", "0": "off", "none": "off", "true": "auto", "auto": "auto",
               "1": "auto", "v1": "v1", "v2": "v2"}
    text = string(value)
    if text is None or text.lower() not in mapping:
        raise BadValue(f"must be one of off, v1, v2, auto (got {value!r})")
    return mapping[text.lower()]


def server_timing(value: Any) -> str:
    """--server-timing: off, on (unless the app sent one) or always; True is on."""
    value = _as_bool(value)
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    mapping = {"false": "off", "off": "off", "0": "off", "no": "off", "true": "on", "on": "on", "1": "on",
               "yes": "on", "always": "always"}
    text = string(value)
    if text is None or text.lower() not in mapping:
        raise BadValue(f"must be one of off, on, always (got {value!r})")
    return mapping[text.lower()]


def cert_reqs(value: Any) -> int:
    """gunicorn's --cert-reqs: Python's ssl.CERT_NONE (0), CERT_OPTIONAL (1), CERT_REQUIRED (2)."""
    number = pos_int(value)
    if number not in (0, 1, 2):
        raise BadValue(f"must be 0 (no client certificate), 1 (optional) or 2 (required) (got {value!r})")
    return number


def anything(value: Any) -> Any:
    return value


def cleartext(value: Any) -> str:
    """validate_http2_cleartext: False/None are "off", True is "prior-knowledge"."""
    value = _as_bool(value)
    if value is None or value is False:
        return "off"
    if value is True:
        return "prior-knowledge"
    return one_of("off", "prior-knowledge", "upgrade", "both")(value)


def class_path(value: Any) -> Any:
    """validate_class: a dotted path or a class."""
    return value if isinstance(value, type) else string(value)


def optional_path(value: Any) -> Optional[str]:
    """A file name, or None/"" for none (``--log-config``)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadValue(f"must be a file name (got {value!r})")
    return value


def json_dict(value: Any) -> dict:
    """A dict, or a JSON object as text (``--log-config-dict '{"version": 1, ...}'``)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise BadValue(f"must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise BadValue(f"must be a dict (a JSON object) (got {value!r})")
    return value
