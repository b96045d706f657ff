//! consentry's integration tests: one binary, one module per feature (STYLE.md).

mod util;

mod cli;
mod consent_rules;
mod demo;
mod erase;
mod filter_jsonl;
mod filter_parquet;
mod report;
