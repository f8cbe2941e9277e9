//! Labelled animal sentences for the tiny-bert-cls fixture (classes cat, dog, horse): seeded,
//! and easy enough that a few dozen steps beat chance.

use rand::{Rng, SeedableRng};
use std::path::Path;

const WORDS: [(&str, &[&str]); 3] = [
    ("cat", &["cat", "kitten", "purred", "mouse", "whiskers", "milk"]),
    ("dog", &["dog", "puppy", "barked", "bone", "kennel", "fetch"]),
    ("horse", &["horse", "pony", "galloped", "saddle", "stable", "hay"]),
];
const FILLER: &[&str] = &["the", "little", "one", "was", "near", "her", "house", "in", "morning", "very", "happy"];

/// Seeded sentences: filler words with two words of the class mixed in.
pub fn sentences(n: usize, seed: u64) -> Vec<(String, &'static str)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let (label, words) = WORDS[i % 3];
            let mut s: Vec<&str> = (0..6).map(|_| FILLER[rng.random_range(0..FILLER.len())]).collect();
            for _ in 0..2 {
                let at = rng.random_range(0..=s.len());
                s.insert(at, words[rng.random_range(0..words.len())]);
            }
            (s.join(" "), label)
        })
        .collect()
}

pub fn write_csv(path: &Path, rows: &[(String, &str)], header: &str) {
    let mut text = format!("{header}\n");
    for (t, l) in rows {
        text.push_str(&format!("\"{t}\",{l}\n"));
    }
    std::fs::write(path, text).unwrap();
}

pub fn write_jsonl(path: &Path, rows: &[(String, &str)]) {
    let lines: Vec<String> =
        rows.iter().map(|(t, l)| serde_json::json!({ "sentence": t, "animal": l }).to_string()).collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}
