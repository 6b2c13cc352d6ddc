"""Everything a GPU host runs; it never imports Django."""
