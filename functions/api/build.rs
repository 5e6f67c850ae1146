//! Compresses the console's scripts and styles once, when the api is built: it embeds them
//! gzipped, which keeps its bootstrap under its size limit and is what browsers are sent (API
//! Gateway's HTTP APIs compress nothing themselves). The page itself is a template, filled in
//! at start-up.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Path, PathBuf};

fn main() {
    let from = Path::new("console");
    // A directory: Cargo looks at every file under it.
    println!("cargo:rerun-if-changed={}", from.display());
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("Cargo sets OUT_DIR")).join("console");
    // Anew each time: a file gone from console/ must not stay embeddable from an older build.
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("OUT_DIR is writable");
    for entry in std::fs::read_dir(from).expect("the console's files are beside build.rs") {
        let path = entry.expect("a readable directory").path();
        let served = path.extension().is_some_and(|e| e == "js" || e == "css");
        if !served || !path.is_file() {
            continue;
        }
        let text = std::fs::read(&path).expect("a readable console file");
        // The header's time is left at zero: the same files give the same bytes, so the
        // console's version digest changes only with them.
        let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
        gzip.write_all(&text).expect("writing to memory");
        let gzip = gzip.finish().expect("writing to memory");
        let name = path.file_name().expect("a file").to_string_lossy();
        std::fs::write(out.join(format!("{name}.gz")), gzip).expect("OUT_DIR is writable");
    }
}
