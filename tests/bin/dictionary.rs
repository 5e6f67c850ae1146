//! Trains a zstd dictionary for stored events on varied audit events (`samples`):
//!   cargo run -p audit-log-tests --bin audit-log-dictionary -- shared/src/store/dictionaries/events-2.zdict
//! A dictionary that items name is never replaced (items live over a year): a new one is added
//! beside it in `shared/src/store/codec.rs`, and new items are written with it.

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: audit-log-dictionary <output file>");
    let dictionary = audit_log_tests::samples::train_dictionary();
    std::fs::write(&out, &dictionary).expect("writing the dictionary");
    println!("{out}: {} bytes", dictionary.len());
}
