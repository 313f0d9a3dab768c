//! Needle in a haystack (NIAH), single and multi-needle.
//!
//! References: Greg Kamradt's "needle in a haystack" pressure test (one fact
//! hidden at a controlled depth of a long document) and RULER (Hsieh et al.,
//! "RULER: What's the Real Context Size of Your Long-Context Language
//! Models?", 2024), whose `niah` generator supplies the key/value templates
//! and the multi-key, multi-value and multi-query variants used here.
//!
//! ## Sample layout
//!
//! A stream of exactly `seq_len + 1` tokens, shifted into inputs/targets:
//!
//! ```text
//! [haystack … needle(s) … haystack] [question + answers]
//! ```
//!
//! * **Needle** (every variant uses RULER's keyed template; the single
//!   variant is one keyed needle rather than a passkey, so all variants share
//!   one vocabulary): `The special magic {type} for {key} is: {value}.` with
//!   `{type}` = `number` (digits), `word` (words) or `uuid`. Keys are
//!   `adjective-animal` pairs (`amber-falcon`) from 32 × 32 built-in words.
//! * **Question**, at the very end, ending on the answer so that the last
//!   stream token is the last answer token:
//!   * single / multi-key: `What is the special magic {type} for {key}? The
//!     special magic {type} for {key} is: {value}`
//!   * multi-value: `What are all the special magic {type}s for {key}? The
//!     special magic {type}s for {key} are: {v1}, {v2}` — values listed in
//!     the order they appear in the haystack;
//!   * multi-query: `What are the special magic {type}s for {k1}, {k2} and
//!     {k3}? The special magic {type} for {k1} is: {v1}. The special magic
//!     {type} for {k2} is: {v2}. …` — keys asked in a random order that is
//!     independent of their order in the haystack.
//! * **Variants**: multi-key adds `num_distractors` needles with other keys
//!   and other values and asks one key; multi-value repeats one key with
//!   `num_values` distinct values; multi-query inserts `num_queries` keys and
//!   asks all of them.
//! * **Depth**: `depth` is the fraction of haystack tokens before a needle.
//!   The first needle (the asked one; the first value or first asked key of
//!   multi-value / multi-query) goes to the requested depth, the other
//!   needles to independent uniform random depths (RULER also scatters
//!   multiple needles randomly). Needles are only inserted *between*
//!   haystack sentences, at the sentence boundary nearest to the target, so
//!   the needle sits at the requested depth ± half a sentence;
//!   `Sample::depth` reports the depth actually achieved.
//! * **Haystack**: built by token counts from sentences tokenised once at
//!   build time. The built-in filler ([`crate::filler`]) is a pool of 4096
//!   sentences drawn independently per sample; a haystack file is split into
//!   sentences (at `.`/`!`/`?`, at most 40 words each, whitespace collapsed)
//!   and read as a contiguous window from a random start, wrapping around at
//!   the end. The window is cut at its front so that needles + haystack +
//!   question are exactly `seq_len + 1` tokens; there is never padding.
//! * **Scoring**: `answers` holds one span per requested value (the target
//!   positions of exactly the value's tokens), `loss_mask` is true only there,
//!   and `needle_positions[k]` is the input span of the needle sentence that
//!   carries `answers[k]`.
//!
//! ## Tokenizer
//!
//! Without a `tokenizer` file, a BPE tokenizer ([`crate::tokenizer`], digits
//! always single tokens) is trained at build time on the haystack sentences
//! plus rendered needles and questions, so templates and keys become few
//! tokens. Every piece of text is encoded with a leading space, so pieces
//! concatenate exactly like the joined text would tokenise.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::seq::{SliceRandom, index};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::filler;
use crate::sample::{Sample, from_stream};
use crate::text::{read_utf8, resolve};
use crate::tokenizer::ZooTokenizer;

/// Which needle-in-a-haystack variant to generate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NeedleVariant {
    /// One keyed needle, asked by key.
    Single,
    /// The asked needle plus `num_distractors` needles with other keys.
    #[serde(alias = "multikey")]
    MultiKey,
    /// One key with `num_values` values; all must be listed.
    #[serde(alias = "multivalue")]
    MultiValue,
    /// `num_queries` keys; all are asked.
    #[serde(alias = "multiquery")]
    MultiQuery,
}

impl NeedleVariant {
    pub const ALL: [NeedleVariant; 4] = [
        NeedleVariant::Single,
        NeedleVariant::MultiKey,
        NeedleVariant::MultiValue,
        NeedleVariant::MultiQuery,
    ];

    /// The snake_case name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            NeedleVariant::Single => "single",
            NeedleVariant::MultiKey => "multi_key",
            NeedleVariant::MultiValue => "multi_value",
            NeedleVariant::MultiQuery => "multi_query",
        }
    }
}

impl fmt::Display for NeedleVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NeedleVariant {
    type Err = TaskError;

    /// Accepts the config name and its spellings without separator or with
    /// a hyphen ("multi_key", "multikey", "multi-key"), case-insensitively.
    fn from_str(s: &str) -> Result<Self, TaskError> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .collect();
        match norm.as_str() {
            "single" => Ok(NeedleVariant::Single),
            "multikey" => Ok(NeedleVariant::MultiKey),
            "multivalue" => Ok(NeedleVariant::MultiValue),
            "multiquery" => Ok(NeedleVariant::MultiQuery),
            _ => Err(TaskError::invalid_argument(
                "needle variant",
                format!(
                    "{} is unknown (use single, multi_key, multi_value or multi_query)",
                    crate::input::clip(s)
                ),
            )),
        }
    }
}

/// What a needle's value looks like.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// `value_len` decimal digits, first digit non-zero.
    Digits,
    /// `value_len` words from a built-in list of 64, space-separated.
    Words,
    /// A random version-4 UUID (`value_len` is ignored).
    Uuid,
}

impl ValueKind {
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Digits => "digits",
            ValueKind::Words => "words",
            ValueKind::Uuid => "uuid",
        }
    }

    /// The noun used in the needle template.
    fn noun(self) -> &'static str {
        match self {
            ValueKind::Digits => "number",
            ValueKind::Words => "word",
            ValueKind::Uuid => "uuid",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueKind {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<Self, TaskError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "digits" | "digit" | "number" | "numbers" => Ok(ValueKind::Digits),
            "words" | "word" => Ok(ValueKind::Words),
            "uuid" | "uuids" => Ok(ValueKind::Uuid),
            _ => Err(TaskError::invalid_argument(
                "value kind",
                format!(
                    "{} is unknown (use digits, words or uuid)",
                    crate::input::clip(s)
                ),
            )),
        }
    }
}

fn default_variant() -> NeedleVariant {
    NeedleVariant::Single
}
fn default_value_kind() -> ValueKind {
    ValueKind::Digits
}
fn default_value_len() -> usize {
    5
}
fn default_two() -> usize {
    2
}
fn default_path() -> Option<PathBuf> {
    None
}
fn default_vocab_size() -> usize {
    256
}
fn default_depth() -> Option<f64> {
    None
}

/// Config for `kind = "needle"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeedleConfig {
    /// Variant used by `Task::sample` (the NIAH grid may ask for others).
    #[serde(default = "default_variant")]
    pub variant: NeedleVariant,
    #[serde(default = "default_value_kind")]
    pub value_kind: ValueKind,
    /// Digits: number of digits; words: number of words; uuid: ignored.
    #[serde(default = "default_value_len")]
    pub value_len: usize,
    /// Extra needles with other keys (multi-key).
    #[serde(default = "default_two")]
    pub num_distractors: usize,
    /// Values attached to the one key (multi-value).
    #[serde(default = "default_two")]
    pub num_values: usize,
    /// Keys inserted and asked (multi-query).
    #[serde(default = "default_two")]
    pub num_queries: usize,
    /// UTF-8 text file for the haystack; None = built-in filler.
    #[serde(default = "default_path", skip_serializing_if = "Option::is_none")]
    pub haystack: Option<PathBuf>,
    /// `tokenizer.json` to use; None = train one on the haystack corpus.
    #[serde(default = "default_path", skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary size when training the tokenizer.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Fixed needle depth in [0, 1] for `Task::sample`; None = uniform random.
    #[serde(default = "default_depth", skip_serializing_if = "Option::is_none")]
    pub depth: Option<f64>,
}

impl Default for NeedleConfig {
    fn default() -> Self {
        NeedleConfig {
            variant: default_variant(),
            value_kind: default_value_kind(),
            value_len: default_value_len(),
            num_distractors: default_two(),
            num_values: default_two(),
            num_queries: default_two(),
            haystack: default_path(),
            tokenizer: default_path(),
            vocab_size: default_vocab_size(),
            depth: default_depth(),
        }
    }
}

const KEY_ADJECTIVES: [&str; 32] = [
    "amber", "crimson", "silver", "golden", "velvet", "frosty", "misty", "rusty", "sunny",
    "stormy", "hollow", "bright", "dusky", "emerald", "ivory", "scarlet", "cobalt", "copper",
    "jade", "lunar", "polar", "coral", "ashen", "mossy", "sandy", "smoky", "tawny", "wintry",
    "zesty", "hazel", "ruby", "azure",
];

const KEY_NOUNS: [&str; 32] = [
    "falcon", "otter", "badger", "heron", "lynx", "marten", "panda", "raven", "tiger", "walrus",
    "bison", "camel", "dingo", "eagle", "ferret", "gecko", "hyena", "ibis", "jackal", "koala",
    "lemur", "moose", "newt", "ocelot", "parrot", "quail", "salmon", "tapir", "urchin", "viper",
    "wombat", "yak",
];

const VALUE_WORDS: [&str; 64] = [
    "apple", "anchor", "bamboo", "banjo", "cactus", "candle", "castle", "cider", "comet", "cotton",
    "crystal", "dragon", "engine", "feather", "fossil", "galaxy", "garnet", "glacier", "guitar",
    "hammer", "helmet", "island", "jasmine", "jigsaw", "kayak", "kernel", "ladle", "lantern",
    "lemon", "magnet", "mango", "marble", "mirror", "nectar", "noodle", "oasis", "olive", "orbit",
    "paddle", "pepper", "pillow", "planet", "pocket", "prism", "puzzle", "quartz", "rocket",
    "saddle", "sapphire", "shovel", "spiral", "sponge", "thimble", "thunder", "tulip", "turnip",
    "violin", "walnut", "whistle", "willow", "zipper", "zeppelin", "compass", "biscuit",
];

/// Number of distinct needle keys.
pub const NUM_KEYS: usize = KEY_ADJECTIVES.len() * KEY_NOUNS.len();

/// The `i`-th needle key, `adjective-animal`.
pub fn key_name(i: usize) -> String {
    let i = i % NUM_KEYS;
    format!(
        "{}-{}",
        KEY_ADJECTIVES[i / KEY_NOUNS.len()],
        KEY_NOUNS[i % KEY_NOUNS.len()]
    )
}

/// Size of the filler sentence pool tokenised at build time.
const FILLER_POOL: usize = 4096;
/// Seed of the filler pool, fixed so every build sees the same haystack text.
const FILLER_SEED: u64 = 0x6861_7973_7461_636b;
/// Seed of the rendered needles and questions added to the tokenizer corpus.
const TEMPLATE_SEED: u64 = 0x6e65_6564_6c65;
/// Rendered needle/question examples added to the tokenizer corpus.
const TEMPLATE_RENDERS: usize = 512;
/// At most this many haystack sentences go into tokenizer training.
const MAX_TRAIN_SENTENCES: usize = 20_000;
/// A haystack-file sentence longer than this many words is cut, so that a
/// file without punctuation still offers insertion points.
const MAX_SENTENCE_WORDS: usize = 40;
/// Values are drawn by index without replacement below this space size and
/// by rejection above it.
const INDEXED_VALUE_SPACE: u128 = 1_000_000;

impl NeedleConfig {
    /// Number of distinct values one sample can need, over all variants (the
    /// NIAH grid can ask for any variant, not just `variant`).
    fn max_distinct_values(&self) -> usize {
        (self.num_distractors + 1)
            .max(self.num_values)
            .max(self.num_queries)
    }

    /// How many distinct values exist, or None if effectively unbounded.
    fn value_space(&self) -> Option<u128> {
        match self.value_kind {
            ValueKind::Digits => 10u128
                .checked_pow(u32::try_from(self.value_len.checked_sub(1)?).ok()?)
                .and_then(|p| p.checked_mul(9)),
            ValueKind::Words => {
                (VALUE_WORDS.len() as u128).checked_pow(u32::try_from(self.value_len).ok()?)
            }
            ValueKind::Uuid => None,
        }
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        crate::input::check_bound("value_len", self.value_len, crate::input::MAX_VALUE_LEN)?;
        crate::input::check_bound("vocab_size", self.vocab_size, crate::input::MAX_VOCAB)?;
        if self.value_kind != ValueKind::Uuid && self.value_len == 0 {
            return Err(TaskError::invalid_config(
                "value_len",
                "0 makes an empty needle value (use at least 1)",
            ));
        }
        if self.num_values == 0 {
            return Err(TaskError::invalid_config(
                "num_values",
                "multi_value needs at least 1 value (use >= 1)",
            ));
        }
        if self.num_queries == 0 {
            return Err(TaskError::invalid_config(
                "num_queries",
                "multi_query needs at least 1 query (use >= 1)",
            ));
        }
        if self.num_distractors + 1 > NUM_KEYS {
            return Err(TaskError::invalid_config(
                "num_distractors",
                format!(
                    "{} needs more distinct keys than the {NUM_KEYS} available (use at most {})",
                    self.num_distractors,
                    NUM_KEYS - 1
                ),
            ));
        }
        if self.num_queries > NUM_KEYS {
            return Err(TaskError::invalid_config(
                "num_queries",
                format!(
                    "{} needs more distinct keys than the {NUM_KEYS} available (use at most {NUM_KEYS})",
                    self.num_queries
                ),
            ));
        }
        let needed = self.max_distinct_values();
        if let Some(space) = self.value_space()
            && space < needed as u128
        {
            return Err(TaskError::invalid_config(
                "value_len",
                format!(
                    "{} {} gives only {space} distinct values but a sample needs {needed} (raise task.value_len or lower num_distractors/num_values/num_queries)",
                    self.value_len, self.value_kind
                ),
            ));
        }
        if self.tokenizer.is_none() && self.vocab_size < crate::tokenizer::MIN_TRAIN_VOCAB {
            return Err(TaskError::invalid_config(
                "vocab_size",
                format!(
                    "{} is too small to train a tokenizer (use at least {})",
                    self.vocab_size,
                    crate::tokenizer::MIN_TRAIN_VOCAB
                ),
            ));
        }
        if let Some(d) = self.depth {
            check_depth(d).map_err(|m| TaskError::invalid_config("depth", m))?;
        }
        Ok(())
    }
}

fn check_depth(depth: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&depth) {
        Ok(())
    } else {
        Err(format!(
            "{depth} is outside [0, 1] (0 = needle first, 1 = needle right before the question)"
        ))
    }
}

/// Haystack sentences, tokenised once.
#[derive(Clone, Debug)]
struct Haystack {
    pieces: Vec<Vec<u32>>,
    /// True for a document (read windows in order), false for the filler
    /// pool (draw sentences independently).
    contiguous: bool,
}

impl Haystack {
    /// Pieces totalling exactly `budget` tokens; the first piece is cut at
    /// its front if the sentences overshoot.
    fn draw(&self, budget: usize, rng: &mut ChaCha8Rng) -> Vec<&[u32]> {
        let mut out: Vec<&[u32]> = Vec::new();
        if budget == 0 {
            return out;
        }
        let n = self.pieces.len();
        let mut next = if self.contiguous {
            rng.gen_range(0..n)
        } else {
            0
        };
        let mut total = 0;
        while total < budget {
            let i = if self.contiguous {
                let i = next;
                next = (next + 1) % n;
                i
            } else {
                rng.gen_range(0..n)
            };
            out.push(&self.pieces[i]);
            total += self.pieces[i].len();
        }
        let mut excess = total - budget;
        let mut skip = 0;
        while excess > 0 {
            let first = out[skip];
            if excess >= first.len() {
                excess -= first.len();
                skip += 1;
            } else {
                out[skip] = &first[excess..];
                excess = 0;
            }
        }
        out.drain(..skip);
        out
    }
}

/// Splits prose into sentences at `.`/`!`/`?` (also before closing quotes
/// or brackets), capping each at `max_words` words; whitespace collapses to
/// single spaces.
pub fn split_sentences(text: &str, max_words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for w in text.split_whitespace() {
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(w);
        words += 1;
        let core = w.trim_end_matches(['"', '\'', ')', ']', '”', '’', '»']);
        if core.ends_with(['.', '!', '?']) || words >= max_words {
            out.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One needle of a plan, in generation order.
#[derive(Clone, Debug)]
struct PlannedNeedle {
    key: String,
    value: String,
    depth: f64,
}

/// Everything random about one sample except the haystack.
#[derive(Clone, Debug)]
struct Plan {
    needles: Vec<PlannedNeedle>,
    /// Needle indices in haystack order (by depth, then generation order).
    order: Vec<usize>,
    /// Question text (leading space included) ending on the last answer.
    question: String,
    /// Byte span of each answer value inside `question`, in answer order.
    answer_spans: Vec<Range<usize>>,
    /// Needle carrying each answer.
    answer_needles: Vec<usize>,
}

/// The token ids of everything in a sample except the haystack.
struct FixedTokens {
    /// Each needle sentence, in generation order.
    needles: Vec<Vec<u32>>,
    /// The question, ending on the last answer.
    question: Vec<u32>,
    /// Token span of each answer inside `question`.
    answers: Vec<Range<usize>>,
}

/// A built needle task.
#[derive(Clone, Debug)]
pub struct NeedleTask {
    config: NeedleConfig,
    tokenizer: ZooTokenizer,
    haystack: Haystack,
    /// The key and the value that encode to the most tokens, for the
    /// worst-case length bound of `min_seq_len`.
    longest_key: String,
    longest_value: String,
}

impl NeedleTask {
    /// Builds the task: reads the haystack, trains or loads the tokenizer and
    /// tokenises the haystack sentences once. Relative paths resolve against
    /// `base_dir`.
    pub fn build(config: NeedleConfig, base_dir: &Path) -> Result<Self, TaskError> {
        config.validate()?;
        let (sentences, contiguous) = match &config.haystack {
            Some(p) => {
                let path = resolve(base_dir, p);
                let text = read_utf8(&path, "haystack file")?;
                let sentences = split_sentences(&text, MAX_SENTENCE_WORDS);
                if sentences.is_empty() {
                    return Err(TaskError::TooSmall {
                        what: "haystack file".to_string(),
                        path,
                        message: "it contains no text (fill it with prose, or remove task.haystack to use the built-in filler)".to_string(),
                    });
                }
                (sentences, true)
            }
            None => (filler::sentences(FILLER_POOL, FILLER_SEED), false),
        };

        let tokenizer = match &config.tokenizer {
            Some(p) => ZooTokenizer::from_file(resolve(base_dir, p))?,
            None => {
                let mut texts: Vec<String> = sentences
                    .iter()
                    .take(MAX_TRAIN_SENTENCES)
                    .cloned()
                    .collect();
                texts.extend(template_corpus(&config));
                ZooTokenizer::train_bpe(&texts, config.vocab_size)?
            }
        };

        let mut pieces = Vec::with_capacity(sentences.len());
        for s in &sentences {
            let ids = tokenizer.try_encode(&format!(" {s}"))?;
            if !ids.is_empty() {
                pieces.push(ids);
            }
        }
        if pieces.is_empty() {
            return Err(TaskError::Tokenizer {
                origin: tokenizer.origin().to_string(),
                message: "encodes the whole haystack to no tokens (use a tokenizer that covers the haystack text)".to_string(),
            });
        }

        let longest_key = longest_by_tokens(&tokenizer, (0..NUM_KEYS).map(key_name))?;
        let mut value_rng = ChaCha8Rng::seed_from_u64(TEMPLATE_SEED);
        let candidates: Vec<String> = match config.value_kind {
            ValueKind::Words => VALUE_WORDS
                .iter()
                .map(|w| vec![*w; config.value_len].join(" "))
                .collect(),
            _ => (0..64)
                .map(|_| random_value(&config, &mut value_rng))
                .chain(std::iter::once(max_digits(&config)))
                .collect(),
        };
        let longest_value = longest_by_tokens(&tokenizer, candidates.into_iter())?;

        Ok(NeedleTask {
            config,
            tokenizer,
            haystack: Haystack { pieces, contiguous },
            longest_key,
            longest_value,
        })
    }

    pub fn config(&self) -> &NeedleConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &ZooTokenizer {
        &self.tokenizer
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// Smallest `seq_len` that fits the configured variant with an empty
    /// haystack. Exact for trained tokenizers (every key and value is a run
    /// of whole pre-tokens); an estimate from the longest key and sampled
    /// values for loaded ones, whose samples may rarely need a bit more.
    pub fn min_seq_len(&self) -> usize {
        self.min_seq_len_for(self.config.variant)
    }

    /// Like [`NeedleTask::min_seq_len`] for any variant.
    pub fn min_seq_len_for(&self, variant: NeedleVariant) -> usize {
        let (n_keys, n_values) = self.counts(variant);
        let identity: Vec<usize> = (0..n_values).collect();
        let plan = self.render(
            variant,
            vec![self.longest_key.clone(); n_keys],
            vec![self.longest_value.clone(); n_values],
            vec![0.0; n_values],
            &identity,
        );
        self.fixed_tokens(&plan).map_or(usize::MAX, |f| {
            let total = f.needles.iter().map(Vec::len).sum::<usize>() + f.question.len();
            total.saturating_sub(1)
        })
    }

    /// A sample with the configured variant; the depth is the configured one
    /// or uniform in [0, 1).
    pub fn sample(&self, seq_len: usize, rng: &mut ChaCha8Rng) -> Result<Sample, TaskError> {
        let depth = match self.config.depth {
            Some(d) => d,
            None => rng.r#gen::<f64>(),
        };
        self.sample_at(seq_len, depth, self.config.variant, rng)
    }

    /// A sample with an explicit depth and variant (the NIAH grid).
    pub fn sample_at(
        &self,
        seq_len: usize,
        depth: f64,
        variant: NeedleVariant,
        rng: &mut ChaCha8Rng,
    ) -> Result<Sample, TaskError> {
        check_depth(depth).map_err(|m| TaskError::invalid_argument("depth", m))?;
        let plan = self.plan(variant, depth, rng);
        self.assemble(seq_len, variant, &plan, rng)
    }

    /// (number of distinct keys, number of needles/values) of a variant.
    fn counts(&self, variant: NeedleVariant) -> (usize, usize) {
        match variant {
            NeedleVariant::Single => (1, 1),
            NeedleVariant::MultiKey => {
                let n = self.config.num_distractors + 1;
                (n, n)
            }
            NeedleVariant::MultiValue => (1, self.config.num_values),
            NeedleVariant::MultiQuery => (self.config.num_queries, self.config.num_queries),
        }
    }

    fn plan(&self, variant: NeedleVariant, depth: f64, rng: &mut ChaCha8Rng) -> Plan {
        let (n_keys, n_values) = self.counts(variant);
        let keys: Vec<String> = index::sample(rng, NUM_KEYS, n_keys)
            .into_iter()
            .map(key_name)
            .collect();
        let values = distinct_values(&self.config, n_values, rng);
        let mut depths = vec![depth];
        depths.extend((1..n_values).map(|_| rng.r#gen::<f64>()));
        // Multi-query asks the keys in an order independent of the haystack
        // order, keeping the requested-depth needle first.
        let mut asked: Vec<usize> = (0..n_values).collect();
        if variant == NeedleVariant::MultiQuery && n_values > 1 {
            asked[1..].shuffle(rng);
        }
        self.render(variant, keys, values, depths, &asked)
    }

    /// Renders the needles and the question. `keys` has one entry per
    /// distinct key, `values` and `depths` one per needle; `asked` is the
    /// order in which multi-query asks the needles.
    fn render(
        &self,
        variant: NeedleVariant,
        keys: Vec<String>,
        values: Vec<String>,
        depths: Vec<f64>,
        asked: &[usize],
    ) -> Plan {
        let needles: Vec<PlannedNeedle> = values
            .into_iter()
            .zip(depths)
            .enumerate()
            .map(|(i, (value, depth))| PlannedNeedle {
                key: keys[if keys.len() == 1 { 0 } else { i }].clone(),
                value,
                depth,
            })
            .collect();
        let mut order: Vec<usize> = (0..needles.len()).collect();
        order.sort_by(|&a, &b| {
            needles[a]
                .depth
                .total_cmp(&needles[b].depth)
                .then(a.cmp(&b))
        });
        let kind = self.config.value_kind;
        let noun = kind.noun();
        match variant {
            NeedleVariant::Single | NeedleVariant::MultiKey => {
                let n = &needles[0];
                let mut q = format!(
                    " What is the special magic {noun} for {k}? The special magic {noun} for {k} is: ",
                    k = n.key
                );
                let span = push_value(&mut q, &n.value);
                Plan {
                    needles,
                    order,
                    question: q,
                    answer_spans: vec![span],
                    answer_needles: vec![0],
                }
            }
            NeedleVariant::MultiValue => {
                let key = needles[0].key.clone();
                let mut q = format!(
                    " What are all the special magic {noun}s for {key}? The special magic {noun}s for {key} are: "
                );
                let mut spans = Vec::new();
                for (i, &n) in order.iter().enumerate() {
                    if i > 0 {
                        q.push_str(", ");
                    }
                    spans.push(push_value(&mut q, &needles[n].value));
                }
                Plan {
                    answer_needles: order.clone(),
                    needles,
                    order,
                    question: q,
                    answer_spans: spans,
                }
            }
            NeedleVariant::MultiQuery => render_multi_query(kind, needles, order, asked),
        }
    }

    /// Tokenises the needles and the question of a plan.
    fn fixed_tokens(&self, plan: &Plan) -> Result<FixedTokens, TaskError> {
        let noun = self.config.value_kind.noun();
        let needles = plan
            .needles
            .iter()
            .map(|n| {
                self.tokenizer.try_encode(&format!(
                    " The special magic {noun} for {} is: {}.",
                    n.key, n.value
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let question = self.tokenizer.try_encode_with_offsets(&plan.question)?;
        let mut spans = Vec::with_capacity(plan.answer_spans.len());
        for chars in &plan.answer_spans {
            let hits: Vec<usize> = question
                .offsets
                .iter()
                .enumerate()
                .filter(|(_, (s, e))| *s < chars.end && *e > chars.start)
                .map(|(i, _)| i)
                .collect();
            match (hits.first(), hits.last()) {
                (Some(&a), Some(&b)) => spans.push(a..b + 1),
                _ => {
                    return Err(TaskError::Tokenizer {
                        origin: self.tokenizer.origin().to_string(),
                        message: format!(
                            "encodes the needle value '{}' to no tokens (use a tokenizer that covers {} values)",
                            &plan.question[chars.clone()],
                            self.config.value_kind
                        ),
                    });
                }
            }
        }
        Ok(FixedTokens {
            needles,
            question: question.ids,
            answers: spans,
        })
    }

    fn assemble(
        &self,
        seq_len: usize,
        variant: NeedleVariant,
        plan: &Plan,
        rng: &mut ChaCha8Rng,
    ) -> Result<Sample, TaskError> {
        let FixedTokens {
            needles: needle_ids,
            question,
            answers: q_spans,
        } = self.fixed_tokens(plan)?;
        let fixed = needle_ids.iter().map(Vec::len).sum::<usize>() + question.len();
        if fixed > seq_len + 1 {
            return Err(TaskError::too_short(
                seq_len,
                format!(
                    "needle variant {variant} (needles and question alone take {fixed} tokens)"
                ),
                fixed - 1,
                "raise seq_len, or lower task.value_len / num_distractors / num_values / num_queries",
            ));
        }
        let budget = seq_len + 1 - fixed;
        let pieces = self.haystack.draw(budget, rng);
        let mut bounds = Vec::with_capacity(pieces.len() + 1);
        bounds.push(0usize);
        for p in &pieces {
            bounds.push(bounds.last().copied().unwrap_or(0) + p.len());
        }

        // Boundary index of each needle, in haystack order; monotone because
        // the targets are sorted and the nearest boundary is monotone.
        let mut slot_of = vec![0usize; plan.needles.len()];
        let mut prev = 0;
        for &n in &plan.order {
            let slot = nearest_boundary(&bounds, plan.needles[n].depth * budget as f64).max(prev);
            slot_of[n] = slot;
            prev = slot;
        }

        let mut stream = Vec::with_capacity(seq_len + 1);
        let mut needle_range = vec![0..0; plan.needles.len()];
        let mut next_needle = 0;
        for slot in 0..=pieces.len() {
            while next_needle < plan.order.len() && slot_of[plan.order[next_needle]] == slot {
                let n = plan.order[next_needle];
                let start = stream.len();
                stream.extend_from_slice(&needle_ids[n]);
                needle_range[n] = start..stream.len();
                next_needle += 1;
            }
            if let Some(p) = pieces.get(slot) {
                stream.extend_from_slice(p);
            }
        }
        let q_start = stream.len();
        stream.extend_from_slice(&question);

        let answer_stream: Vec<Range<usize>> = q_spans
            .iter()
            .map(|r| q_start + r.start..q_start + r.end)
            .collect();
        let needle_positions: Vec<Range<usize>> = plan
            .answer_needles
            .iter()
            .map(|&n| needle_range[n].clone())
            .collect();
        let depth = if budget == 0 {
            plan.needles[0].depth
        } else {
            bounds[slot_of[0]] as f64 / budget as f64
        };
        Ok(from_stream(
            stream,
            &answer_stream,
            needle_positions,
            Some(depth),
        ))
    }
}

/// Index of the boundary closest to `target` (ties go to the earlier one).
fn nearest_boundary(bounds: &[usize], target: f64) -> usize {
    let above = bounds.partition_point(|&b| (b as f64) < target);
    if above == 0 {
        return 0;
    }
    if above == bounds.len() {
        return bounds.len() - 1;
    }
    let below = above - 1;
    if target - bounds[below] as f64 <= bounds[above] as f64 - target {
        below
    } else {
        above
    }
}

fn push_value(q: &mut String, value: &str) -> Range<usize> {
    let start = q.len();
    q.push_str(value);
    start..q.len()
}

fn render_multi_query(
    kind: ValueKind,
    needles: Vec<PlannedNeedle>,
    order: Vec<usize>,
    asked: &[usize],
) -> Plan {
    let noun = kind.noun();
    let names: Vec<&str> = asked.iter().map(|&i| needles[i].key.as_str()).collect();
    let listed = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    };
    let mut q = format!(" What are the special magic {noun}s for {listed}?");
    let mut spans = Vec::new();
    for (i, &n) in asked.iter().enumerate() {
        if i > 0 {
            q.push('.');
        }
        q.push_str(&format!(
            " The special magic {noun} for {} is: ",
            needles[n].key
        ));
        spans.push(push_value(&mut q, &needles[n].value));
    }
    Plan {
        needles,
        order,
        question: q,
        answer_spans: spans,
        answer_needles: asked.to_vec(),
    }
}

fn longest_by_tokens(
    tokenizer: &ZooTokenizer,
    candidates: impl Iterator<Item = String>,
) -> Result<String, TaskError> {
    let mut best = (0usize, String::new());
    for c in candidates {
        let n = tokenizer.try_encode(&format!(" {c}"))?.len();
        if n > best.0 {
            best = (n, c);
        }
    }
    Ok(best.1)
}

/// The all-nines value, a worst case for tokenizers that merge digit runs
/// unevenly.
fn max_digits(config: &NeedleConfig) -> String {
    match config.value_kind {
        ValueKind::Digits => "9".repeat(config.value_len),
        _ => String::new(),
    }
}

fn random_value(config: &NeedleConfig, rng: &mut ChaCha8Rng) -> String {
    match config.value_kind {
        ValueKind::Digits => {
            let mut s = String::with_capacity(config.value_len);
            s.push(char::from(b'0' + rng.gen_range(1..=9u8)));
            for _ in 1..config.value_len {
                s.push(char::from(b'0' + rng.gen_range(0..=9u8)));
            }
            s
        }
        ValueKind::Words => (0..config.value_len)
            .map(|_| VALUE_WORDS[rng.gen_range(0..VALUE_WORDS.len())])
            .collect::<Vec<_>>()
            .join(" "),
        ValueKind::Uuid => {
            let mut b: [u8; 16] = rng.r#gen();
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            )
        }
    }
}

/// The value with index `i` of a small value space (see `value_space`).
fn indexed_value(config: &NeedleConfig, i: u128) -> String {
    match config.value_kind {
        ValueKind::Digits => {
            let base = 10u128.pow(config.value_len as u32 - 1);
            (base + i).to_string()
        }
        _ => {
            let w = VALUE_WORDS.len() as u128;
            let mut rest = i;
            (0..config.value_len)
                .map(|_| {
                    let word = VALUE_WORDS[(rest % w) as usize];
                    rest /= w;
                    word
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

/// `n` pairwise distinct values. Validation guarantees the space holds `n`.
fn distinct_values(config: &NeedleConfig, n: usize, rng: &mut ChaCha8Rng) -> Vec<String> {
    match config.value_space() {
        Some(space) if space <= INDEXED_VALUE_SPACE => {
            index::sample(rng, space as usize, n.min(space as usize))
                .into_iter()
                .map(|i| indexed_value(config, i as u128))
                .collect()
        }
        _ => {
            let mut seen = HashSet::with_capacity(n);
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let v = random_value(config, rng);
                if seen.insert(v.clone()) {
                    out.push(v);
                }
            }
            out
        }
    }
}

/// Needles and questions of every variant, rendered with a fixed seed, so
/// that a trained tokenizer learns the templates, keys and value alphabet.
fn template_corpus(config: &NeedleConfig) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(TEMPLATE_SEED);
    let noun = config.value_kind.noun();
    let mut texts = Vec::with_capacity(TEMPLATE_RENDERS * 2 + 1);
    for i in 0..TEMPLATE_RENDERS {
        let key = key_name(rng.gen_range(0..NUM_KEYS));
        let other = key_name(rng.gen_range(0..NUM_KEYS));
        let value = random_value(config, &mut rng);
        texts.push(format!("The special magic {noun} for {key} is: {value}."));
        texts.push(match i % 3 {
            0 => format!(
                "What is the special magic {noun} for {key}? The special magic {noun} for {key} is: {value}"
            ),
            1 => format!(
                "What are all the special magic {noun}s for {key}? The special magic {noun}s for {key} are: {value}, {value}"
            ),
            _ => format!(
                "What are the special magic {noun}s for {key} and {other}? The special magic {noun} for {other} is: {value}."
            ),
        });
    }
    // Cover every character any value kind can produce, so switching the
    // value kind at evaluation time never yields <unk>.
    texts.push("0123456789 abcdef - : ? . ,".to_string());
    texts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_parsing_accepts_spellings() {
        for (s, v) in [
            ("single", NeedleVariant::Single),
            ("multikey", NeedleVariant::MultiKey),
            ("multi_key", NeedleVariant::MultiKey),
            ("Multi-Value", NeedleVariant::MultiValue),
            ("multi_query", NeedleVariant::MultiQuery),
        ] {
            assert_eq!(s.parse::<NeedleVariant>().unwrap(), v);
        }
        for v in NeedleVariant::ALL {
            assert_eq!(v.to_string().parse::<NeedleVariant>().unwrap(), v);
        }
        let err = "triple".parse::<NeedleVariant>().unwrap_err();
        assert!(err.to_string().contains("multi_query"), "{err}");
        assert_eq!("uuid".parse::<ValueKind>().unwrap(), ValueKind::Uuid);
    }

    #[test]
    fn sentence_split_respects_punctuation_and_word_cap() {
        let s = split_sentences("One two.  Three?\n\"Four!\" five six seven", 2);
        assert_eq!(
            s,
            vec!["One two.", "Three?", "\"Four!\"", "five six", "seven"]
        );
    }

    #[test]
    fn nearest_boundary_picks_closest() {
        let b = [0, 10, 20, 30];
        assert_eq!(nearest_boundary(&b, 0.0), 0);
        assert_eq!(nearest_boundary(&b, 4.9), 0);
        assert_eq!(nearest_boundary(&b, 5.1), 1);
        assert_eq!(nearest_boundary(&b, 30.0), 3);
        assert_eq!(nearest_boundary(&b, 99.0), 3);
        assert_eq!(nearest_boundary(&[0], 3.0), 0);
    }

    #[test]
    fn haystack_draw_hits_budget_exactly() {
        let h = Haystack {
            pieces: vec![vec![1; 7], vec![2; 3], vec![3; 11]],
            contiguous: true,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for budget in [0, 1, 2, 3, 7, 10, 21, 22, 50, 333] {
            let pieces = h.draw(budget, &mut rng);
            assert_eq!(pieces.iter().map(|p| p.len()).sum::<usize>(), budget);
            assert!(pieces.iter().all(|p| !p.is_empty()));
            // Only the first piece may be cut.
            for p in pieces.iter().skip(1) {
                assert!([7, 3, 11].contains(&p.len()));
            }
        }
    }

    #[test]
    fn distinct_values_in_tiny_space_are_all_different() {
        let config = NeedleConfig {
            value_len: 1,
            num_values: 9,
            ..NeedleConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut v = distinct_values(&config, 9, &mut rng);
        v.sort();
        assert_eq!(v, (1..=9).map(|d| d.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn uuid_values_are_version_4() {
        let config = NeedleConfig {
            value_kind: ValueKind::Uuid,
            ..NeedleConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let u = random_value(&config, &mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(u.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
