//! Bench settings from the environment.

use std::str::FromStr;

use anyhow::{Result, anyhow};

/// `name` parsed as `T` (`_` digit separators allowed: `1_000_000`), or `default` when unset or
/// empty; a value that does not parse is an error naming the variable.
pub fn env_or<T>(name: &str, default: T) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|e| anyhow!("{name}={value:?} is not valid: {e}")),
        _ => Ok(default),
    }
}
