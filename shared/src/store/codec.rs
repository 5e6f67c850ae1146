//! How an event's JSON is kept in its item: zstd with a dictionary trained on audit events. The
//! dictionary knows the field names and the values that repeat, so what is left of a 1 KB event
//! is mostly its ids (about a third of its size), and the item stays within one write unit.
//! Items written before are read too: the JSON as a string, or gzip when it was large.
//!
//! A dictionary that items name is kept as long as items live (over a year): a better one is
//! added beside it, never swapped in. A frame names its dictionary, and is a plain zstd frame:
//! `zstd -d -D shared/src/store/dictionaries/events-1.zdict` reads a value taken from the table.

use super::DecodeError;
use crate::event::MAX_EVENT_BYTES;
use std::cell::RefCell;
use std::io::Read;
use std::sync::LazyLock;
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe;

/// Every dictionary an item may name; new items are written with the last.
const DICTIONARIES: &[&[u8]] = &[include_bytes!("dictionaries/events-1.zdict")];
/// zstd's default level: higher ones saved under 2% on 1 KB events for more CPU (BENCHMARKS.md).
const LEVEL: i32 = 3;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

static ENCODER: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARIES[DICTIONARIES.len() - 1], LEVEL));
static DECODERS: LazyLock<Vec<(u32, DecoderDictionary<'static>)>> = LazyLock::new(|| {
    DICTIONARIES
        .iter()
        .map(|d| (dictionary_id(d), DecoderDictionary::copy(d)))
        .collect()
});

thread_local! {
    // Contexts are reused: making one costs more than packing or unpacking an event.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    /// One per dictionary met, by its id.
    static DECOMPRESSORS: RefCell<Vec<(u32, zstd::bulk::Decompressor<'static>)>> = const { RefCell::new(Vec::new()) };
}

fn dictionary_id(dictionary: &[u8]) -> u32 {
    zstd_safe::get_dict_id_from_dict(dictionary).map_or(0, |id| id.get())
}

/// The event's JSON as its item keeps it.
pub fn pack(json: &str) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(c) => c,
            None => slot.insert(new_compressor()),
        };
        compressor
            .compress(json.as_bytes())
            // Compressing bytes in memory fails only when memory does.
            .expect("zstd compression")
    })
}

fn new_compressor() -> zstd::bulk::Compressor<'static> {
    let mut c = zstd::bulk::Compressor::with_prepared_dictionary(&ENCODER).expect("a zstd context");
    // The size lets a reader allocate once; the checksum (4 bytes) makes damage an error
    // rather than a different event.
    let _ = c.include_contentsize(true);
    let _ = c.include_checksum(true);
    c
}

/// The event's JSON from what its item keeps: a zstd frame, or gzip (items written before).
pub fn unpack(bytes: &[u8]) -> Result<String, DecodeError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return gunzip(bytes);
    }
    let named = zstd_safe::get_dict_id_from_frame(bytes).map_or(0, |id| id.get());
    let size = match zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if size <= MAX_EVENT_BYTES as u64 => size as usize,
        _ => return Err(DecodeError::Corrupt),
    };
    let json = DECOMPRESSORS.with_borrow_mut(|known| {
        let at = match known.iter().position(|(id, _)| *id == named) {
            Some(at) => at,
            None => {
                let (_, dictionary) = DECODERS.iter().find(|(id, _)| *id == named)?;
                let decompressor =
                    zstd::bulk::Decompressor::with_prepared_dictionary(dictionary).ok()?;
                known.push((named, decompressor));
                known.len() - 1
            }
        };
        known[at].1.decompress(bytes, size).ok()
    });
    String::from_utf8(json.ok_or(DecodeError::Corrupt)?).map_err(|_| DecodeError::Corrupt)
}

/// The JSON of an event stored gzipped, before events were kept with zstd.
fn gunzip(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut json = String::new();
    // Bounded: nothing larger than an SQS message was ever stored.
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_EVENT_BYTES as u64 + 1)
        .read_to_string(&mut json)
        .map_err(|_| DecodeError::Corrupt)?;
    Ok(json)
}
