//! `audit-log-kernels < input.json`: the per-event work of capture and stream, and the floors
//! it is compared with, timed in this one process. `./scripts/bench` builds it in release in one
//! build with the functions, so it runs their code compiled as theirs is; the bench's driver
//! (tests/bin/bench.rs), which runs the functions as Lambda does, hands it the events it sent
//! them.
//!
//! Input: `{"bodies": [1 KB events], "floors": [{"name": ..., "events": [Lambda events]}]}`.
//! Output: one JSON object of nanoseconds (and bytes), which the driver prints as tables.

use audit_log::destination::{cloudwatch, datadog};
use audit_log::store::StoredEvent;
use audit_log::{AuditEvent, Retention};
use aws_lambda_events::event::dynamodb::EventRecord;
use serde::Deserialize;
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

#[derive(Deserialize)]
struct Input {
    /// One batch of 1 KB events, as producers send them.
    bodies: Vec<String>,
    /// Per whole-function row, the Lambda events the function was invoked with.
    floors: Vec<Floor>,
}

#[derive(Deserialize)]
struct Floor {
    name: String,
    events: Vec<String>,
}

/// A compression a Datadog request body could be sent with.
#[derive(Clone, Copy)]
enum Encoding {
    Gzip(u32),
    /// Level and minimum match.
    Zstd(i32, u32),
}

impl Encoding {
    /// The body's size compressed.
    fn len(self, body: &[u8]) -> usize {
        match self {
            Encoding::Gzip(level) => {
                audit_log::compression::gzip(body, flate2::Compression::new(level)).len()
            }
            Encoding::Zstd(level, min_match) => {
                use zstd::zstd_safe::CParameter;
                let mut compressor = zstd::bulk::Compressor::new(level).unwrap();
                compressor
                    .set_parameter(CParameter::MinMatch(min_match))
                    .unwrap();
                compressor.compress(body).unwrap().len()
            }
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Encoding::Gzip(level) => write!(f, "gzip {level}"),
            Encoding::Zstd(level, min_match) => write!(f, "zstd {level}, min match {min_match}"),
        }
    }
}

/// Best of `runs` timings of `work`.
fn best(runs: usize, mut work: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            work();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn main() {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw).expect("read the input");
    let input: Input = serde_json::from_slice(&raw)
        .expect("usage: audit-log-kernels < {\"bodies\": [...], \"floors\": [...]}");
    let bodies = &input.bodies;

    let capture = best(7, || {
        for (i, b) in bodies.iter().enumerate() {
            black_box(audit_log_capture::prepare(&i.to_string(), b, Retention::default()).unwrap());
        }
    });
    let parse_floor = best(7, || {
        for b in bodies {
            black_box(serde_json::from_str::<Value>(b).unwrap());
        }
    });
    // The records stream reads these events back from.
    let stored: Vec<audit_log_stream::StreamRecord> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut r = EventRecord::default();
            r.event_name = "INSERT".into();
            r.change.new_image = StoredEvent::new(
                &i.to_string(),
                &AuditEvent::from_json(b).unwrap(),
                Retention::default(),
            )
            .unwrap()
            .item
            .into();
            audit_log_stream::StreamRecord::from(&r)
        })
        .collect();
    let read_back = || -> Vec<AuditEvent> {
        stored
            .iter()
            .map(|r| audit_log_stream::event_of(r).unwrap().0)
            .collect()
    };
    let now = OffsetDateTime::now_utc();
    let to_datadog = best(7, || {
        let (batches, _) = datadog::batches(&read_back(), now);
        black_box(
            batches
                .iter()
                .map(|b| datadog::compress(&b.body()).len())
                .sum::<usize>(),
        );
    });
    let to_cloudwatch = best(7, || {
        black_box(cloudwatch::batches(&read_back(), now).0.len());
    });
    let compress_floor = best(7, || {
        let mut all = Vec::new();
        for b in bodies {
            black_box(serde_json::from_str::<Value>(b).unwrap());
            all.extend_from_slice(b.as_bytes());
        }
        black_box(datadog::compress(&all).len());
    });
    // What each compression costs and saves on these requests' bodies: the Datadog Forwarder
    // sends gzip 6, the size to match; zstd for comparison.
    let bodies_to_send: Vec<Vec<u8>> = datadog::batches(&read_back(), now)
        .0
        .iter()
        .map(|b| b.body())
        .collect();
    let used = Encoding::Gzip(datadog::GZIP_LEVEL).to_string();
    let encodings: Vec<Value> = [
        Encoding::Gzip(1),
        Encoding::Gzip(2),
        Encoding::Gzip(3),
        Encoding::Gzip(4),
        Encoding::Gzip(5),
        Encoding::Gzip(6),
        Encoding::Gzip(9),
        Encoding::Zstd(1, 6),
        Encoding::Zstd(3, 7),
    ]
    .into_iter()
    .map(|encoding| {
        let compress = || -> usize { bodies_to_send.iter().map(|b| encoding.len(b)).sum() };
        let took = best(5, || {
            black_box(compress());
        });
        let name = encoding.to_string();
        json!({"name": name, "used": name == used, "nanos": nanos(took), "bytes": compress()})
    })
    .collect();
    // The floor of each whole-function row: parsing the Lambda events it was invoked with.
    let floors: Vec<Value> = input
        .floors
        .iter()
        .map(|floor| {
            let took: Duration = floor
                .events
                .iter()
                .map(|event| {
                    best(5, || {
                        black_box(serde_json::from_str::<Value>(event).unwrap());
                    })
                })
                .sum();
            json!({"name": floor.name, "nanos": nanos(took)})
        })
        .collect();
    println!(
        "{}",
        json!({
            "capture": nanos(capture),
            "parse_floor": nanos(parse_floor),
            "to_datadog": nanos(to_datadog),
            "compress_floor": nanos(compress_floor),
            "to_cloudwatch": nanos(to_cloudwatch),
            "encodings": encodings,
            "floors": floors,
        })
    );
}
