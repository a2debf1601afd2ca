//! Arbitrary bytes as a rules file: loading must answer `Ok` or errors with
//! a location, never panic.

#![no_main]

use std::path::PathBuf;

use floodgate::config::{self, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file is text: invalid UTF-8 is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [(PathBuf::from("fuzz.yaml"), text.to_owned())];
    for merge_domains in [false, true] {
        if let Ok(rules) = config::load_sources(&sources, &LoadOptions { merge_domains }) {
            // What `check` and the admin server print must not panic either.
            let _ = config::summary(&rules);
            let _ = config::describe(&rules);
        }
    }
});
