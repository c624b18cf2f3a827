"""Gradio web UI: one module per tab; webui.layout builds the page (`create_ui`) and serves it (`mount_ui`,
`mount_page`). Nothing is imported here: `from webui import progress` in a tab must not build the page."""
