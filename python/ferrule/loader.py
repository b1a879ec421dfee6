"""Finding the app from a gunicorn-style target: MODULE, MODULE:NAME, MODULE:factory(args)."""

from __future__ import annotations

import ast
import importlib
from typing import Any, Callable


class AppLoadError(Exception):
    """The target could not be turned into a WSGI callable; the message says why."""


def _literal(node: ast.AST, target: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise AppLoadError(f"Failed to parse arguments of {target!r}: only literal values are allowed") from None


def load_app(target: str) -> Callable:
    module_name, _, expr_text = target.partition(":")
    expr_text = expr_text.strip() or "application"
    if not module_name:
        raise AppLoadError(f"No module in app target {target!r}; expected MODULE:NAME")
    try:
        expr = ast.parse(expr_text, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"Failed to parse {expr_text!r} as an attribute name or function call") from None
    args, kwargs, call = [], {}, False
    if isinstance(expr, ast.Call):
        call = True
        args = [_literal(a, target) for a in expr.args]
        kwargs = {kw.arg: _literal(kw.value, target) for kw in expr.keywords if kw.arg}
        expr = expr.func
    if not isinstance(expr, ast.Name):
        raise AppLoadError(f"Failed to parse {expr_text!r} as an attribute name or function call")
    module = importlib.import_module(module_name)
    try:
        app = getattr(module, expr.id)
    except AttributeError:
        raise AppLoadError(f"Failed to find attribute {expr.id!r} in {module_name!r}") from None
    if call:
        app = app(*args, **kwargs)
        if app is None:
            raise AppLoadError(f"The factory {expr_text!r} in {module_name!r} returned None")
    if not callable(app):
        raise AppLoadError(f"Application object {expr_text!r} in {module_name!r} must be callable")
    return app
