"""User text inside Streamlit markdown: escaped so it shows as typed, never as markup.

Run, dataset, model and class names, file names and error messages that quote
them are free text. Streamlit renders most strings (st.markdown, st.caption,
st.error, st.subheader, widget labels) as markdown with its own extras, so a
name like ``![x](http://host/t.png)`` would load a remote image, ``[a](url)``
becomes a link and ``:red[...]`` a colour. ::

    from lib.text import escape_markdown, error_text
    st.caption(f"Run {escape_markdown(name)} · {accuracy:.1%}")
    except Exception as exc:
        st.error(error_text(exc, "Predict: loading the model"))

Widget *options* (selectbox, multiselect) and st.text are plain text already.
"""

from __future__ import annotations

import html
import re

from lib.errors import KestrelError, log_internal_error

# Characters that make markup anywhere in a line: emphasis, code, links and
# images, HTML and entities, tables, plus what Streamlit and GFM add: ":" (emoji
# and :material/icon: shortcodes, :colour[...], and the "http:" of bare links),
# "$" (LaTeX) and "~" (strikethrough).
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|:$~!&])")
# Markup that only counts at the start of a line: lists, quotes, rules, headings.
_LEADING = re.compile(r"^(\s*)([-+](?=\s|$|-)|>|\d+(?=[.)](?:\s|$)))")
_LINE_BREAKS = re.compile(r"[\r\n\t\f\v\u2028\u2029]+")


def escape_markdown(text: object) -> str:
    """``text`` as a one-line markdown string that renders exactly as the characters it holds.

    Every markup character is backslash-escaped and line breaks become spaces (a
    new line could start a heading, a list or a code block).
    """
    flat = _SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(text)))
    match = _LEADING.match(flat)
    if match and match.group(2)[0].isdigit():  # "1." would start a list: escape the dot
        end = match.end()
        return flat[:end] + "\\" + flat[end:]
    if match:
        return flat[: match.start(2)] + "\\" + flat[match.start(2) :]
    return flat


def plotly_text(text: object) -> str:
    """``text`` for a Plotly label, legend or hover text, which render a subset of HTML.

    ``<a href=…>`` in a run or class name would otherwise become a link in the chart.
    """
    return html.escape(str(text), quote=False)


def error_text(exc: BaseException, where: str = "") -> str:
    """What a page shows for ``exc``, escaped for st.error.

    A :class:`~lib.errors.KestrelError` is the user's to fix: its own message,
    after ``where``. Anything else is a bug: it is logged with its traceback
    (:func:`lib.errors.log_internal_error`) and the text names the log file.
    """
    if isinstance(exc, KestrelError):
        return escape_markdown(f"{where}: {exc}" if where else str(exc))
    path = log_internal_error(exc, where)
    place = f" in {where}" if where else ""
    return escape_markdown(f"Internal error{place}: {type(exc).__name__} (details in {path})")
