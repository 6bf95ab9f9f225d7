"""The pipeline: `optimize` as its phases (load, rules, search, export, gate, check, write,
describe) over an options object and a run state (`superopt.pipeline.optimize`), above the stages
it drives and below the face that presents it. `check` holds the numerical check, `describe`
the report's plain-data description of each rewrite, `gate` the end-to-end A/B gate."""
