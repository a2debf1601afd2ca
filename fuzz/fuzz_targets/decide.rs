//! Arbitrary requests against a fixed rule set, the shipped `config/`
//! directory (real providers' limits: every algorithm, wildcards, multi-limit
//! rules, replaces, response blocks): deciding and building the answer must
//! never panic, whether the request comes from raw protobuf bytes or from a
//! structured generator whose words are mostly the rules' own domains, keys
//! and values (so requests match rules instead of missing them all).

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use floodgate::clock::ManualClock;
use floodgate::config::{self, LoadOptions};
use floodgate::proto::{Entry, RateLimitDescriptor, RateLimitOverride, RateLimitRequest};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::store::memory::MemoryStore;
use libfuzzer_sys::fuzz_target;
use prost::Message;

struct Fixture {
    limiter: RateLimiter<MemoryStore>,
    clock: ManualClock,
    runtime: tokio::runtime::Runtime,
    vocabulary: Vec<String>,
}

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");

/// Every `domain:`, `key:` and `value:` word of the rules files, plus a few
/// edge cases.
fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = ["", "*", "x"].map(String::from).to_vec();
    let Ok(dir) = std::fs::read_dir(CONFIG) else {
        return words;
    };
    for file in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(file.path()) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim().trim_start_matches("- ");
            for field in ["domain:", "key:", "value:"] {
                if let Some(word) = line.strip_prefix(field) {
                    words.push(word.trim().trim_matches(|c| c == '"' || c == '\'').to_owned());
                }
            }
        }
    }
    words.sort();
    words.dedup();
    words
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rules = config::load_path(&PathBuf::from(CONFIG), &LoadOptions::default())
            .unwrap_or_else(|errors| panic!("config/ must load:\n{errors}"));
        let clock = ManualClock::new(1_700_000_000_000_000_000);
        let limiter = RateLimiter::new(
            rules,
            MemoryStore::new(10_000),
            Arc::new(clock.clone()),
            ServiceOptions::default(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        Fixture {
            limiter,
            clock,
            runtime,
            vocabulary: vocabulary(),
        }
    })
}

/// A word of the rules' vocabulary (by index), or any text.
#[derive(Arbitrary, Debug)]
enum Word {
    Known(u16),
    Any(String),
}

impl Word {
    fn text(&self, vocabulary: &[String]) -> String {
        match self {
            Word::Known(n) => vocabulary
                .get(usize::from(*n) % vocabulary.len().max(1))
                .cloned()
                .unwrap_or_default(),
            Word::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Clock step before the request, in nanoseconds, and its direction.
    step: u64,
    back: bool,
    raw: bool,
    bytes: Vec<u8>,
    domain: Word,
    descriptors: Vec<(Vec<(Word, Word)>, Option<(u32, i32)>, Option<u64>)>,
    hits_addend: u32,
}

impl Input {
    fn request(&self, vocabulary: &[String]) -> Option<RateLimitRequest> {
        if self.raw {
            return RateLimitRequest::decode(self.bytes.as_slice()).ok();
        }
        Some(RateLimitRequest {
            domain: self.domain.text(vocabulary),
            descriptors: self
                .descriptors
                .iter()
                .map(|(entries, limit, hits)| RateLimitDescriptor {
                    entries: entries
                        .iter()
                        .map(|(key, value)| Entry {
                            key: key.text(vocabulary),
                            value: value.text(vocabulary),
                        })
                        .collect(),
                    limit: limit.map(|(requests_per_unit, unit)| RateLimitOverride {
                        requests_per_unit,
                        unit,
                    }),
                    hits_addend: *hits,
                })
                .collect(),
            hits_addend: self.hits_addend,
        })
    }
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let Some(request) = input.request(&fixture.vocabulary) else {
        return;
    };
    let now = fixture_now(fixture);
    let next = if input.back {
        now.saturating_sub(input.step)
    } else {
        now.saturating_add(input.step)
    };
    fixture.clock.set(next);
    let decision = fixture.runtime.block_on(fixture.limiter.decide(&request));
    if let Ok(decision) = decision {
        // Building the answer (headers, body, metadata) must not panic.
        let _ = floodgate::respond::to_response(
            &decision,
            &floodgate::respond::ResponseOptions::default(),
        );
    }
});

fn fixture_now(fixture: &Fixture) -> u64 {
    use floodgate::clock::Clock;
    fixture.clock.now()
}
