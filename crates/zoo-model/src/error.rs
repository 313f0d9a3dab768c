//! Errors of the model library: one line each, naming the field or file and how to fix it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
}

impl ModelError {
    pub fn config(path: &str, message: &str) -> Self {
        ModelError::Config {
            path: path.to_string(),
            message: message.to_string(),
        }
    }
    pub fn checkpoint(path: &std::path::Path, message: impl Into<String>) -> Self {
        ModelError::Checkpoint {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}
