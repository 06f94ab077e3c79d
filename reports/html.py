"""The report as one HTML page: the markdown rendered by markdown-it-py (CommonMark + tables).

Raw HTML in the markdown is escaped, not passed through: study descriptions and error messages
are user text (``expected <class 'int'>`` must show, not vanish as an unknown tag).
"""
from __future__ import annotations

import html

from markdown_it import MarkdownIt

_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")


def to_html(md: str, title: str) -> str:
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style></head><body>\n"
            f"{body}</body></html>\n")
