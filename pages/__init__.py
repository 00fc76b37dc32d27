"""Streamlit pages; ``ui`` holds what they share (state keys, sidebar, errors)."""
