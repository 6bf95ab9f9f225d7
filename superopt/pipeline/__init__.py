"""The pipeline: `optimize` as its phases (load, rules, search, export, gate, check, write),
above the stages it drives and below the face that presents it."""
