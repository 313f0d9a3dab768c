//! Position encodings, each modelled where it acts:
//! - added to the token embeddings: [`sinusoidal`], [`learned`];
//! - rotating queries and keys inside the mixer: [`rope`];
//! - biasing the attention logits inside the mixer: [`alibi`].
//!
//! The tables are pure functions of (config, position), built on the host for the positions a
//! call needs, so any offset works (incremental decoding, state carry) and nothing is redrawn.

pub mod alibi;
pub mod learned;
pub mod rope;
pub mod sinusoidal;

pub use alibi::Alibi;
pub use learned::LearnedPositions;
pub use rope::Rope;
