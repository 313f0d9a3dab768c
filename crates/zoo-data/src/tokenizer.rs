//! BPE tokenizer for the needle and text tasks, trained in-process or loaded
//! from a HuggingFace `tokenizer.json`.
//!
//! Trained tokenizers use a SentencePiece-style pipeline built from
//! HuggingFace `tokenizers` parts:
//!
//! * no normaliser, so decoding gives back the exact input text;
//! * pre-tokenisation `Metaspace('▁', prepend = never)` → `Punctuation`
//!   (isolated) → `Digits(individual)`: spaces become `▁` glued to the next
//!   word, punctuation stands alone, and **every digit is its own
//!   pre-token**, so no merge can ever span two digits. A 5-digit needle value
//!   is therefore exactly five tokens, which is what lets a tiny model learn to
//!   copy numbers digit by digit;
//! * a BPE model trained with `BpeTrainer` on the given texts; its alphabet is
//!   the characters seen in training plus the ten digits, and anything else
//!   encodes as `<unk>`;
//! * a `Metaspace` decoder (prepend = never), so `decode(encode(s)) == s` for
//!   text over the training alphabet.
//!
//! Special tokens come first, at fixed ids: `<pad>` = 0, `<eos>` = 1,
//! `<unk>` = 2. Because nothing is prepended, `encode(" a") ++ encode(" b")`
//! equals `encode(" a b")` whenever the split falls on a space: generators
//! rely on this to pre-tokenise haystack sentences once and splice them.
//!
//! Training is deterministic: the BPE trainer breaks count ties by pair id and
//! ids follow the sorted alphabet, so the same texts give the same
//! `tokenizer.json` on every run.
//!
//! A loaded tokenizer is used as is, except that padding and truncation are
//! switched off (samples are assembled by token counts here). Its pad id is
//! the id of `<pad>` if it has one, else 0.

use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer, TokenizerBuilder};

use crate::error::TaskError;
use crate::input::{MAX_TOKENIZER_BYTES, clip_path, read_file_capped};

/// Padding token; id 0 in trained tokenizers.
pub const PAD_TOKEN: &str = "<pad>";
/// End-of-sequence token; id 1 in trained tokenizers.
pub const EOS_TOKEN: &str = "<eos>";
/// Unknown-character token; id 2 in trained tokenizers.
pub const UNK_TOKEN: &str = "<unk>";

/// The smallest `vocab_size` accepted for training: the three special tokens
/// plus a minimal alphabet. Smaller values would silently produce a bigger
/// vocabulary than asked for, which hides a config mistake.
pub const MIN_TRAIN_VOCAB: usize = 16;

const TRAINED_ORIGIN: &str = "(trained in memory)";

/// Token ids of a text together with the byte span of the text each covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedText {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

/// A HuggingFace tokenizer plus the few facts the generators need.
#[derive(Clone, Debug)]
pub struct ZooTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    eos_id: Option<u32>,
    vocab_size: usize,
    origin: String,
}

fn tok_err(origin: &str, message: impl std::fmt::Display) -> TaskError {
    TaskError::Tokenizer {
        origin: origin.to_string(),
        message: message.to_string(),
    }
}

fn metaspace() -> Metaspace {
    Metaspace::new('▁', PrependScheme::Never, true)
}

impl ZooTokenizer {
    /// Trains a BPE tokenizer (see the module docs) on `corpus_texts`, each
    /// string one training sequence. The result has at most `vocab_size`
    /// tokens unless the training alphabet alone is larger.
    pub fn train_bpe(corpus_texts: &[String], vocab_size: usize) -> Result<Self, TaskError> {
        if vocab_size < MIN_TRAIN_VOCAB {
            return Err(tok_err(
                TRAINED_ORIGIN,
                format!(
                    "vocab_size {vocab_size} is too small to train (use at least {MIN_TRAIN_VOCAB})"
                ),
            ));
        }
        if corpus_texts.iter().all(|t| t.trim().is_empty()) {
            return Err(tok_err(
                TRAINED_ORIGIN,
                "no text to train on (give a non-empty corpus)",
            ));
        }
        let model = BPE::builder()
            .unk_token(UNK_TOKEN.to_string())
            .fuse_unk(true)
            .build()
            .map_err(|e| tok_err(TRAINED_ORIGIN, e))?;
        let pre_tokenizer = Sequence::new(vec![
            PreTokenizerWrapper::Metaspace(metaspace()),
            PreTokenizerWrapper::Punctuation(Punctuation::new(SplitDelimiterBehavior::Isolated)),
            PreTokenizerWrapper::Digits(Digits::new(true)),
        ]);
        let mut builder = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::default()
        .with_model(model)
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre_tokenizer)))
        .with_decoder(Some(DecoderWrapper::Metaspace(metaspace())))
        .build()
        .map_err(|e| tok_err(TRAINED_ORIGIN, e))?;
        let mut trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(false)
            // Digits are always in the alphabet: a corpus without numbers
            // must still give a tokenizer that spells needle values.
            .initial_alphabet(('0'..='9').collect())
            .special_tokens(vec![
                AddedToken::from(PAD_TOKEN, true),
                AddedToken::from(EOS_TOKEN, true),
                AddedToken::from(UNK_TOKEN, true),
            ])
            .build();
        builder
            .train(&mut trainer, corpus_texts.iter())
            .map_err(|e| tok_err(TRAINED_ORIGIN, format!("training failed: {e}")))?;
        Self::wrap(Tokenizer::from(builder), TRAINED_ORIGIN.to_string())
    }

    /// Loads a `tokenizer.json`; a missing, unreadable or malformed file is
    /// an error that names the path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TaskError> {
        let path = path.as_ref();
        let bytes = read_file_capped(path, "tokenizer file", MAX_TOKENIZER_BYTES)?;
        let origin = clip_path(path);
        let inner: Tokenizer = serde_json::from_slice(&bytes).map_err(|e| {
            tok_err(
                &origin,
                format!(
                    "not a valid tokenizer.json ({e}); point the tokenizer field at a file saved by HuggingFace tokenizers, or remove it to train one"
                ),
            )
        })?;
        let mut inner = inner.into_inner();
        inner
            .with_truncation(None)
            .map_err(|e| tok_err(&origin, e))?;
        inner.with_padding(None);
        Self::wrap(Tokenizer::from(inner), origin)
    }

    fn wrap(inner: Tokenizer, origin: String) -> Result<Self, TaskError> {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        if vocab_size == 0 {
            return Err(tok_err(
                &origin,
                "has an empty vocabulary (use a trained tokenizer.json)",
            ));
        }
        let pad_id = inner.token_to_id(PAD_TOKEN).unwrap_or(0);
        let eos_id = inner.token_to_id(EOS_TOKEN);
        Ok(ZooTokenizer {
            inner,
            pad_id,
            eos_id,
            vocab_size,
            origin,
        })
    }

    /// Writes the tokenizer as a HuggingFace `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TaskError> {
        let path = path.as_ref();
        self.inner.save(path, true).map_err(|e| {
            tok_err(
                &path.display().to_string(),
                format!("cannot save ({e}); check that the directory exists and is writable"),
            )
        })
    }

    /// Token ids of `text` (no special tokens added). Returns an empty vector
    /// only if the underlying tokenizer fails, which cannot happen for a
    /// trained tokenizer; use [`ZooTokenizer::try_encode`] to see the error.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.try_encode(text).unwrap_or_default()
    }

    /// Token ids of `text`, with the tokenizer's error if it fails.
    pub fn try_encode(&self, text: &str) -> Result<Vec<u32>, TaskError> {
        Ok(self.try_encode_with_offsets(text)?.ids)
    }

    /// Token ids of `text` with the byte span of `text` each token covers.
    pub fn try_encode_with_offsets(&self, text: &str) -> Result<EncodedText, TaskError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err(&self.origin, format!("cannot encode text: {e}")))?;
        Ok(EncodedText {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// Text of `ids`, special tokens included. Returns an empty string only
    /// if the decoder fails; use [`ZooTokenizer::try_decode`] to see why.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.try_decode(ids).unwrap_or_default()
    }

    /// Text of `ids`, with the decoder's error if it fails.
    pub fn try_decode(&self, ids: &[u32]) -> Result<String, TaskError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| tok_err(&self.origin, format!("cannot decode ids: {e}")))
    }

    /// One more than the largest id, so it can size an embedding table.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of `<pad>` (0 for trained tokenizers).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `<eos>`, if the tokenizer has one (1 for trained tokenizers).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Where the tokenizer came from: its file path, or "(trained in memory)".
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The wrapped HuggingFace tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        crate::filler::sentences(400, 5)
    }

    #[test]
    fn special_tokens_have_fixed_ids() {
        let tok = ZooTokenizer::train_bpe(&corpus(), 128).unwrap();
        assert_eq!(tok.token_to_id(PAD_TOKEN), Some(0));
        assert_eq!(tok.token_to_id(EOS_TOKEN), Some(1));
        assert_eq!(tok.token_to_id(UNK_TOKEN), Some(2));
        assert_eq!(tok.pad_id(), 0);
        assert_eq!(tok.eos_id(), Some(1));
        assert!(tok.vocab_size() <= 128, "{}", tok.vocab_size());
    }

    #[test]
    fn unseen_characters_become_unk_instead_of_vanishing() {
        let tok = ZooTokenizer::train_bpe(&corpus(), 128).unwrap();
        let ids = tok.encode("The ☃ sat.");
        assert!(ids.contains(&2), "{ids:?}");
    }

    #[test]
    fn rejects_tiny_vocab_and_empty_corpus() {
        assert!(ZooTokenizer::train_bpe(&corpus(), 4).is_err());
        let err = ZooTokenizer::train_bpe(&[String::new()], 64).unwrap_err();
        assert!(err.to_string().contains("no text"), "{err}");
    }
}
