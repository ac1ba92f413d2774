"""The Jinja2 environments the report's templates render in. Templates ship
inside the package as `gate.templates` and are loaded through
importlib.resources, so an installed wheel renders without the source tree
(a source checkout on PYTHONPATH uses its templates/: fsutil.templates_root).
Every string from the verdict is treated as untrusted: Markdown templates
escape each expression by default (see `md_finalize`), HTML autoescapes.
"""
from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2

from gate.core.fsutil import templates_root
from gate.report.markdown import md_code_block, md_html, md_inline, shorten, visible
from gate.report.values import _num

__all__ = ["Md", "template_env", "render_md", "link", "OPS"]

OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">", "==": "="}


class Md(str):
    """Text already safe for Markdown: the finalizer leaves it alone."""


def md_finalize(value: Any) -> str:
    """Every `{{ }}` in a Markdown template is escaped unless a filter marked
    it safe: a forgotten filter shows backslashes, it never injects."""
    if isinstance(value, Md):
        return value
    if value is None:
        return ""
    return md_inline(value, limit=300)


@functools.lru_cache(maxsize=2)
def template_env(kind: str = "md") -> jinja2.Environment:
    """"md": Markdown templates, escaped by the finalizer; "html": autoescaped."""
    root = templates_root()

    def load(name: str) -> tuple[str, None, Any]:
        return root.joinpath(name).read_text(encoding="utf-8"), None, lambda: True

    common: dict[str, Any] = dict(loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    if kind == "html":
        env = jinja2.Environment(autoescape=True, **common)
    else:
        env = jinja2.Environment(autoescape=False, finalize=md_finalize, **common)
        env.filters.update(
            md=lambda x, limit=60, spaces=False: Md(md_inline(x, limit, spaces)),
            mdh=lambda x, limit=60, spaces=False: Md(md_html(x, limit, spaces)),
            raw=Md,
            codeblock=lambda x: Md(md_code_block(str(x))),
        )
    env.filters.update(num=lambda x: Md(_num(x)), vis=visible, short=shorten,
                       op=lambda x: OPS.get(str(x), str(x)))
    return env


def render_md(template: str, **kw: Any) -> str:
    return template_env("md").get_template(template).render(**kw)


def link(url: str | None) -> "Md | None":
    """An http(s) URL made safe for a Markdown link target (no space or
    parenthesis can end it early), or None for anything else."""
    if not url or urlsplit(url).scheme not in ("http", "https"):
        return None
    return Md(quote(url, safe=":/?#[]@!$&'*+,;=%~-._"))
