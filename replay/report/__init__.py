"""`tfblackbox report`: one self-contained HTML page of a store's runs (build.py: the
command; data.py: what is read; downsample.py: long series made short; page.py + app.js +
style.css: the page, plotly.js inlined)."""
