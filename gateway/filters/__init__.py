"""Network filters: one module each; a filter chain is an ordered list ending in a terminal filter."""
