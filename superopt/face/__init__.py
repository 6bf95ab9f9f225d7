"""The face: the command line and everything that presents results (console tables, the HTML
and JSON report, subgraph drawings, `inspect`, `bench`). Nothing below imports it."""
