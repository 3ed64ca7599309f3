//! Loading documents in unit tests (the loader's and the section builders').

use super::{load_text, Config, ConfigErrors, Overrides};

/// The origin of the test documents in messages.
pub const FILE: &str = "tollgate.yaml";

pub fn doc(text: &str) -> String {
    text.to_string()
}

/// Loads `text` as if it were the file [`FILE`], with `env` and `overrides`.
pub fn load_doc(
    text: &str,
    env: Vec<(String, String)>,
    overrides: &Overrides,
) -> Result<(Config, Vec<String>), ConfigErrors> {
    load_text(Some((FILE, text)), env, overrides)
}
