//! Capture's per-event CPU work (parse, validate, build the DynamoDB item) over the seed's
//! examples. Figures and the command are in BENCHMARKS.md.

use audit_log::Retention;
use audit_log::fixtures::SEED_EVENTS;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn per_event(c: &mut Criterion) {
    let retention = Retention::default();
    let mut group = c.benchmark_group("capture");
    group.throughput(Throughput::Elements(SEED_EVENTS.len() as u64));
    group.bench_function("prepare seed events", |b| {
        b.iter(|| {
            for (i, (_, body)) in SEED_EVENTS.iter().enumerate() {
                let id = ["m0", "m1", "m2", "m3", "m4"][i];
                black_box(audit_log_capture::prepare(id, black_box(body), retention).unwrap());
            }
        })
    });
    // The floor: parsing the same JSON and nothing else.
    group.bench_function("serde_json parse floor", |b| {
        b.iter(|| {
            for (_, body) in SEED_EVENTS {
                black_box(serde_json::from_str::<serde_json::Value>(black_box(body)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, per_event);
criterion_main!(benches);
