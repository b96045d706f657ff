//! consentry's integration tests: one binary, one module per feature (STYLE.md).

mod util;

mod consent_rules;
mod demo;
mod report;
