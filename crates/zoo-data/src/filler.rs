//! Built-in haystack text: seeded, English-like filler sentences.
//!
//! Needle-in-a-haystack benchmarks (gkamradt's NIAH, RULER by Hsieh et al.
//! 2024) hide a fact inside distracting prose; RULER's cheapest haystack is a
//! repeated "The grass is green. The sky is blue." noise. Repeating one
//! sentence makes the haystack trivially compressible, and shipping essays is
//! not an option, so this module draws sentences from a handful of
//! subject/verb/object templates over small built-in word lists. The result
//! reads like plain prose, varies enough that a model cannot memorise it, and
//! has a tiny vocabulary, which keeps a trained BPE tokenizer small and the
//! haystack cheap to tokenise.
//!
//! Layout of one sentence: a capitalised template instance ending in `.`,
//! e.g. `The patient sailor repaired the ladder beside the harbor.`; a corpus
//! joins sentences with single spaces. The text never contains digits,
//! hyphens, colons or the needle vocabulary ("special", "magic", "number"),
//! so a needle is the only place where those appear in a sample.
//!
//! Everything is driven by a [`ChaCha8Rng`], so a seed fixes the text exactly.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ADJECTIVES: &[&str] = &[
    "quiet", "old", "young", "tall", "small", "patient", "careful", "tired", "cheerful", "brave",
    "clever", "gentle", "busy", "curious", "humble", "lonely", "proud", "sleepy", "friendly",
    "stubborn",
];

const PEOPLE: &[&str] = &[
    "farmer",
    "teacher",
    "sailor",
    "baker",
    "painter",
    "doctor",
    "child",
    "merchant",
    "soldier",
    "poet",
    "gardener",
    "fisherman",
    "student",
    "traveler",
    "musician",
    "carpenter",
    "weaver",
    "shepherd",
    "miller",
    "nurse",
];

const TRANSITIVE_VERBS: &[&str] = &[
    "carried", "painted", "found", "cleaned", "repaired", "sold", "bought", "watched", "opened",
    "moved", "borrowed", "carved", "wrapped", "lifted", "noticed", "followed", "mended", "dropped",
    "hid", "polished",
];

const INTRANSITIVE_VERBS: &[&str] = &[
    "walked", "rested", "waited", "sang", "laughed", "slept", "worked", "paused", "wandered",
    "listened", "danced", "whistled",
];

const OBJECTS: &[&str] = &[
    "basket", "wagon", "letter", "bench", "window", "fence", "boat", "kettle", "blanket", "ladder",
    "barrel", "map", "coat", "rope", "bucket", "chair", "table", "door", "bridge", "book",
];

const PLACES: &[&str] = &[
    "river", "market", "village", "hill", "forest", "harbor", "square", "valley", "road", "meadow",
    "mill", "chapel", "orchard", "well", "station", "library",
];

const PREPOSITIONS: &[&str] = &[
    "near", "beside", "behind", "across", "along", "past", "below", "above",
];

const TIMES: &[&str] = &[
    "in the morning",
    "before noon",
    "after dinner",
    "at dusk",
    "on a cold day",
    "during the storm",
    "late at night",
    "early in spring",
    "every evening",
    "at sunrise",
];

const ADVERBS: &[&str] = &[
    "slowly",
    "quietly",
    "carefully",
    "happily",
    "again",
    "together",
    "silently",
    "briefly",
];

const WEATHER: &[&str] = &["sky", "wind", "air", "rain", "fog", "light"];

const WEATHER_ADJECTIVES: &[&str] = &[
    "grey", "cold", "warm", "heavy", "soft", "bright", "still", "thin",
];

fn pick<'a>(rng: &mut ChaCha8Rng, words: &[&'a str]) -> &'a str {
    words[rng.gen_range(0..words.len())]
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn with_article(word: &str) -> String {
    let article = if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {word}")
}

/// Draws one filler sentence from `rng`.
pub fn sentence(rng: &mut ChaCha8Rng) -> String {
    match rng.gen_range(0..6) {
        0 => format!(
            "The {} {} {} the {} {} the {}.",
            pick(rng, ADJECTIVES),
            pick(rng, PEOPLE),
            pick(rng, TRANSITIVE_VERBS),
            pick(rng, OBJECTS),
            pick(rng, PREPOSITIONS),
            pick(rng, PLACES)
        ),
        1 => format!(
            "A {} {} {} the {} {}.",
            pick(rng, PEOPLE),
            pick(rng, INTRANSITIVE_VERBS),
            pick(rng, PREPOSITIONS),
            pick(rng, PLACES),
            pick(rng, TIMES)
        ),
        2 => format!(
            "{}, the {} {} {} {}.",
            capitalise(pick(rng, TIMES)),
            pick(rng, PEOPLE),
            pick(rng, TRANSITIVE_VERBS),
            with_article(pick(rng, ADJECTIVES)),
            pick(rng, OBJECTS)
        ),
        3 => format!(
            "The {} was {} over the {}.",
            pick(rng, WEATHER),
            pick(rng, WEATHER_ADJECTIVES),
            pick(rng, PLACES)
        ),
        4 => format!(
            "Nobody {} the {} that the {} left {} the {}.",
            pick(rng, TRANSITIVE_VERBS),
            pick(rng, OBJECTS),
            pick(rng, PEOPLE),
            pick(rng, PREPOSITIONS),
            pick(rng, PLACES)
        ),
        _ => format!(
            "The {} and the {} {} {}.",
            pick(rng, PEOPLE),
            pick(rng, PEOPLE),
            pick(rng, INTRANSITIVE_VERBS),
            pick(rng, ADVERBS)
        ),
    }
}

/// `n_sentences` filler sentences, fixed by `seed`.
pub fn sentences(n_sentences: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n_sentences).map(|_| sentence(&mut rng)).collect()
}

/// `n_sentences` filler sentences joined by single spaces: the text a
/// tokenizer is trained on when no haystack file is given.
pub fn corpus(n_sentences: usize, seed: u64) -> String {
    sentences(n_sentences, seed).join(" ")
}

/// Every word the generator can emit, for tests and for tokenizer training
/// corpora that must cover the whole filler vocabulary.
pub fn vocabulary() -> Vec<&'static str> {
    let lists: [&[&str]; 10] = [
        ADJECTIVES,
        PEOPLE,
        TRANSITIVE_VERBS,
        INTRANSITIVE_VERBS,
        OBJECTS,
        PLACES,
        PREPOSITIONS,
        ADVERBS,
        WEATHER,
        WEATHER_ADJECTIVES,
    ];
    let mut words: Vec<&'static str> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    words.extend(TIMES.iter().flat_map(|t| t.split(' ')));
    words.sort_unstable();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_text_and_seeds_differ() {
        assert_eq!(corpus(50, 7), corpus(50, 7));
        assert_ne!(corpus(50, 7), corpus(50, 8));
    }

    #[test]
    fn sentences_are_well_formed_and_free_of_needle_material() {
        let all = sentences(2000, 1);
        for s in &all {
            assert!(s.ends_with('.'), "{s}");
            assert!(s.chars().next().unwrap().is_uppercase(), "{s}");
            assert!(
                !s.chars()
                    .any(|c| c.is_ascii_digit() || c == '-' || c == ':'),
                "{s}"
            );
            for banned in ["special", "magic", "number", "pass key"] {
                assert!(!s.contains(banned), "{s}");
            }
            assert!(!s.contains("  "), "{s}");
        }
    }

    #[test]
    fn every_template_is_used_and_text_varies() {
        let all = sentences(2000, 3);
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert!(distinct.len() > 1900, "only {} distinct", distinct.len());
        for start in ["The ", "A ", "Nobody ", "In the morning, "] {
            assert!(all.iter().any(|s| s.starts_with(start)), "{start}");
        }
        assert!(all.iter().any(|s| s.contains(" was ")));
        assert!(all.iter().any(|s| s.contains(" and the ")));
    }

    #[test]
    fn vocabulary_covers_generated_words() {
        let vocab = vocabulary();
        for s in sentences(500, 11) {
            for w in s.trim_end_matches('.').split([' ', ',']) {
                if w.is_empty() {
                    continue;
                }
                let lower = w.to_lowercase();
                assert!(
                    vocab.contains(&lower.as_str())
                        || [
                            "the", "a", "an", "was", "over", "nobody", "that", "left", "and"
                        ]
                        .contains(&lower.as_str()),
                    "{w} in {s}"
                );
            }
        }
    }
}
