//! Turning stream records into destination requests: decode the stored event, encode, batch
//! by the destination's limits, and (Datadog) compress. Throughput is in bytes of event JSON.
//! Figures and the command are in BENCHMARKS.md.

use audit_log::destination::{cloudwatch, datadog};
use audit_log::fixtures::SEED_EVENTS;
use audit_log::store::StoredEvent;
use audit_log::{AuditEvent, Retention};
use audit_log_stream::StreamRecord;
use aws_lambda_events::event::dynamodb::EventRecord;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// 1,000 stream records of the seed's events, dated within the last hour.
fn records() -> (Vec<StreamRecord>, u64) {
    let now = OffsetDateTime::now_utc();
    let mut bytes = 0;
    let records = (0..1_000)
        .map(|i| {
            let mut v: serde_json::Value =
                serde_json::from_str(SEED_EVENTS[i % SEED_EVENTS.len()].1).unwrap();
            let t = now - std::time::Duration::from_secs(i as u64);
            v["timestamp"] = json!(t.format(&Rfc3339).unwrap());
            let event = AuditEvent::from_value(v).unwrap();
            bytes += event.json().len() as u64;
            let stored = StoredEvent::new(&format!("m{i}"), &event, Retention::default()).unwrap();
            let mut record = EventRecord::default();
            record.event_name = "INSERT".into();
            record.change.new_image = stored.item.into();
            StreamRecord::from(&record)
        })
        .collect();
    (records, bytes)
}

fn decode(records: &[StreamRecord]) -> Vec<AuditEvent> {
    records
        .iter()
        .map(|r| audit_log_stream::event_of(r).unwrap().0)
        .collect()
}

fn requests(c: &mut Criterion) {
    let (records, bytes) = records();
    let now = OffsetDateTime::now_utc();
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("records to datadog requests (gzip)", |b| {
        b.iter(|| {
            let events = decode(black_box(&records));
            let (batches, _) = datadog::batches(&events, now);
            batches
                .iter()
                .map(|batch| datadog::compress(&batch.body()).len())
                .sum::<usize>()
        })
    });
    group.bench_function("records to cloudwatch requests", |b| {
        b.iter(|| {
            let events = decode(black_box(&records));
            cloudwatch::batches(&events, now).0.len()
        })
    });
    // The floor: parsing the same JSON and compressing it, nothing else.
    let jsons: Vec<String> = decode(&records)
        .iter()
        .map(|event| event.json().to_owned())
        .collect();
    group.bench_function("floor: serde_json parse + gzip", |b| {
        b.iter(|| {
            let mut all = Vec::with_capacity(bytes as usize);
            for j in black_box(&jsons) {
                let v: serde_json::Value = serde_json::from_str(j).unwrap();
                black_box(&v);
                all.extend_from_slice(j.as_bytes());
            }
            datadog::compress(&all).len()
        })
    });
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
