"""Record linkage and deduplication: blocking in DuckDB SQL, vectorized rapidfuzz comparisons,
an unsupervised Fellegi–Sunter model, connected-components clustering and survivorship.

Modules (imported lazily; `romirecon --help` never loads duckdb or numpy):

- `spec`        field kinds, field specs, blocking rules, kind inference
- `prepare`     SQL that normalizes an input table into the engine's record table
- `blocking`    blocking-rule SQL, candidate pairs (union, each pair once), rule auto-selection
- `comparisons` per-field comparison levels over aligned pair arrays (rapidfuzz `cpdist`)
- `fs`          Fellegi–Sunter: u from random pairs, m by EM over distinct patterns, scoring
- `cluster`     connected components with a giant-cluster guard
- `engine`      the whole linkage on any DuckDB table with an id column
- `survivorship` golden-record SQL
- `explain`     why two records matched or did not
- `api`         `dedupe_file`, `explain_pair`; `cli` the click commands
"""
