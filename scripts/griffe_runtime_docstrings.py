"""A griffe extension for the docs site (mkdocs.yml): a function decorated with one of
``decorators`` gets (part of) its docstring at import time, so griffe reads it from the
imported function rather than the source. ``pyegress.service._start_doc`` is one: it gives every
start method the Args, Returns and Raises they share."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import griffe


class RuntimeDocstrings(griffe.Extension):
    def __init__(self, decorators: list[str]) -> None:
        self.decorators = set(decorators)

    def on_function_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        func: griffe.Function,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if not any(str(d.value) in self.decorators for d in func.decorators):
            return
        doc = inspect.getdoc(griffe.dynamic_import(func.path)) or ""
        func.docstring = griffe.Docstring(
            doc, parent=func, parser=agent.docstring_parser, parser_options=agent.docstring_options
        )
