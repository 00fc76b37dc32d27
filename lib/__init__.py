"""Kestrel library: all logic behind the pages and the CLI (never imports streamlit)."""
