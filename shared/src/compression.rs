//! gzip: for Datadog's bodies, for the bench's comparison of levels, and for the events stored
//! gzipped before they were packed with zstd (which tests still write). The caller picks the
//! level.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

pub fn gzip(bytes: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), level);
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}
