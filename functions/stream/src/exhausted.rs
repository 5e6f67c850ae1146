//! Stream batches whose retries ran out reach the on-failure queue as a shard and a range of
//! sequence numbers, not as events. Only the service's own trouble gets a batch there (a
//! destination's never does: its lane keeps what it owes). Their events are read back from
//! the stream (which keeps them 24 hours, longer than the mapping's 6-hour record age) and
//! handed to their lanes again: delivered, or owed, exactly as a live batch would be. Nothing
//! is recorded as a failure for a destination that took it, or for a project without one.

use crate::Stream;
use crate::records::{Change, Image, StreamRecord};
use audit_log::message::{ExhaustedBatch, StreamBatchInfo};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use tokio::time::Instant;

fn unreadable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_dynamodbstreams::error::SdkError<E, R>,
) -> String {
    format!(
        "could not read the stream back: {}",
        aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
    )
}

/// Sequence numbers are decimal strings of varying length.
fn sequence_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

/// Empty pages read in a row before reading back gives up for now (the message is tried
/// again). DynamoDB Streams may answer an empty page where records lie further on (several
/// calls may be needed to get there), so an empty page is no end of the range.
const EMPTY_PAGES_IN_A_ROW: usize = 20;
/// The pause after each page: a shard takes 5 `GetRecords` a second from all its readers,
/// and Lambda's own poller, reading the same shard for live events, takes 4 of them.
const PAGE_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl Stream {
    pub(crate) async fn redeliver_exhausted(
        &self,
        exhausted: &ExhaustedBatch,
        deadline: Instant,
    ) -> Result<(), String> {
        let condition = exhausted
            .request_context
            .condition
            .as_deref()
            .unwrap_or("RetryAttemptsExhausted");
        let records = read_back(
            &self.streams,
            &self.events_stream_arn,
            &exhausted.batch,
            deadline,
        )
        .await?;
        let response = self.deliver(&records, deadline).await;
        if !response.batch_item_failures.is_empty() {
            return Err(format!(
                "the batch's events could not all be handed to their lanes ({condition}); trying again"
            ));
        }
        tracing::warn!(
            records = records.len(),
            %condition,
            "a stream batch whose retries ran out went through the lanes again"
        );
        Ok(())
    }
}

/// The `INSERT` records of the batch's range, read back from its shard of `events_stream` (the
/// function's setting: a message does not name what the function reads). An error (the
/// message is then tried again, and dead-lettered in the end) when the batch is of another
/// stream, or the range cannot be read to its end before `deadline`.
async fn read_back(
    streams: &aws_sdk_dynamodbstreams::Client,
    events_stream: &str,
    batch: &StreamBatchInfo,
    deadline: Instant,
) -> Result<Vec<StreamRecord>, String> {
    let StreamBatchInfo {
        stream_arn,
        shard_id: shard,
        start_sequence_number: start,
        end_sequence_number: end,
    } = batch;
    // Another stream: the table's stream made anew (the old one's records are no longer the
    // function's to read), or a message not from the mapping.
    if stream_arn != events_stream {
        return Err(format!(
            "the batch is of the stream {stream_arn}, not of the events table's ({events_stream}); \
             it is left for a person"
        ));
    }
    let arn = events_stream;
    let late = |_| "could not read the stream back before the deadline; trying again".to_owned();
    let start_at = streams
        .get_shard_iterator()
        .stream_arn(arn)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(start)
        .send();
    let mut iterator = tokio::time::timeout_at(deadline, start_at)
        .await
        .map_err(late)?
        .map_err(unreadable)?
        .shard_iterator;
    let mut records = Vec::new();
    let mut empty_in_a_row = 0;
    while let Some(it) = iterator {
        if Instant::now() >= deadline || empty_in_a_row == EMPTY_PAGES_IN_A_ROW {
            return Err(format!(
                "could not read the stream back to the batch's last record ({} read); trying again",
                records.len()
            ));
        }
        let page =
            tokio::time::timeout_at(deadline, streams.get_records().shard_iterator(it).send())
                .await
                .map_err(late)?
                .map_err(unreadable)?;
        let read = page.records.unwrap_or_default();
        empty_in_a_row = if read.is_empty() {
            empty_in_a_row + 1
        } else {
            0
        };
        for r in read {
            let Some(change) = r.dynamodb else { continue };
            let seq = change.sequence_number.clone().unwrap_or_default();
            if !sequence_le(&seq, end) {
                return Ok(records);
            }
            let last = seq == *end;
            if r.event_name.as_ref().map(|n| n.as_str()) == Some("INSERT") {
                records.push(StreamRecord {
                    event_id: r.event_id.unwrap_or_default(),
                    event_name: "INSERT".into(),
                    change: Change {
                        sequence_number: Some(seq),
                        new_image: Image::from_stream(change.new_image.unwrap_or_default()),
                    },
                });
            }
            if last {
                return Ok(records);
            }
        }
        iterator = page.next_shard_iterator;
        if iterator.is_some() {
            tokio::time::sleep_until(deadline.min(Instant::now() + PAGE_PAUSE)).await;
        }
    }
    // A closed shard ends with the last record it holds.
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::Client;
    use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput;
    use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorOutput;
    use aws_sdk_dynamodbstreams::types::{OperationType, Record, StreamRecord as Change};
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

    fn record(seq: &str, kind: OperationType) -> Record {
        Record::builder()
            .event_id(format!("e{seq}"))
            .event_name(kind)
            .dynamodb(Change::builder().sequence_number(seq).build())
            .build()
    }

    /// A shard whose iterators are `i0`, `i1`...: page `n` holds `pages[n]` and names the next.
    fn shard(pages: Vec<Vec<Record>>) -> Vec<Rule> {
        let start = mock!(Client::get_shard_iterator).then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("i0")
                .build()
        });
        let mut rules = vec![start];
        for (n, page) in pages.into_iter().enumerate() {
            rules.push(
                mock!(Client::get_records)
                    .match_requests(move |r| r.shard_iterator() == Some(&format!("i{n}")))
                    .then_output(move || {
                        GetRecordsOutput::builder()
                            .set_records(Some(page.clone()))
                            .next_shard_iterator(format!("i{}", n + 1))
                            .build()
                    }),
            );
        }
        // Past the pages: the tip of an open shard, empty for ever.
        rules.push(mock!(Client::get_records).then_output(|| {
            GetRecordsOutput::builder()
                .next_shard_iterator("tip")
                .build()
        }));
        rules
    }

    const EVENTS_STREAM: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/1";

    fn range(start: &str, end: &str) -> StreamBatchInfo {
        serde_json::from_value(serde_json::json!({
            "shardId": "shard-1",
            "startSequenceNumber": start,
            "endSequenceNumber": end,
            "streamArn": EVENTS_STREAM,
        }))
        .unwrap()
    }

    async fn read(rules: &[Rule], start: &str, end: &str) -> Result<Vec<String>, String> {
        let client = mock_client!(aws_sdk_dynamodbstreams, RuleMode::MatchAny, rules);
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let records = read_back(&client, EVENTS_STREAM, &range(start, end), far).await?;
        Ok(records
            .into_iter()
            .map(|r| r.change.sequence_number.unwrap())
            .collect())
    }

    // Paused time: the pauses after each page pass at once.
    #[tokio::test(start_paused = true)]
    async fn a_range_is_read_past_empty_pages_to_its_last_record() {
        let rules = shard(vec![
            vec![],
            vec![],
            vec![
                record("100", OperationType::Insert),
                record("101", OperationType::Remove),
            ],
            vec![
                record("102", OperationType::Insert),
                record("103", OperationType::Insert),
            ],
        ]);
        let started = Instant::now();
        assert_eq!(read(&rules, "100", "102").await.unwrap(), ["100", "102"]);
        // Paced, full pages too: the shard's other reader is the live one.
        assert!(
            started.elapsed() >= 3 * PAGE_PAUSE,
            "{:?}",
            started.elapsed()
        );
        // A range that ends on a record that is no event ends there too.
        assert_eq!(read(&rules, "100", "101").await.unwrap(), ["100"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_whose_records_never_come_is_tried_again_not_taken_as_empty() {
        let rules = shard(vec![vec![record("100", OperationType::Insert)]]);
        let e = read(&rules, "100", "105").await.unwrap_err();
        assert!(e.contains("trying again"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_ends_at_the_first_record_past_it_when_its_last_one_is_gone() {
        let rules = shard(vec![vec![
            record("100", OperationType::Insert),
            record("104", OperationType::Insert),
        ]]);
        assert_eq!(read(&rules, "100", "102").await.unwrap(), ["100"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_ends_the_range_with_its_last_record() {
        let start = mock!(Client::get_shard_iterator).then_output(|| {
            GetShardIteratorOutput::builder()
                .shard_iterator("i0")
                .build()
        });
        // The shard was split: its last page names no next iterator.
        let last = mock!(Client::get_records).then_output(|| {
            GetRecordsOutput::builder()
                .records(record("100", OperationType::Insert))
                .records(record("101", OperationType::Insert))
                .build()
        });
        assert_eq!(
            read(&[start, last], "100", "105").await.unwrap(),
            ["100", "101"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_of_another_stream_is_not_read_and_is_left_for_a_person() {
        let rules = shard(vec![vec![record("100", OperationType::Insert)]]);
        let client = mock_client!(aws_sdk_dynamodbstreams, RuleMode::MatchAny, &rules);
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let mut batch = range("100", "100");
        batch.stream_arn = EVENTS_STREAM.replace("stream/1", "stream/0");
        let e = read_back(&client, EVENTS_STREAM, &batch, far)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            e.contains("stream/0") && e.contains("left for a person"),
            "{e}"
        );
        assert!(rules.iter().all(|rule| rule.num_calls() == 0));
        // The events table's own is read.
        assert_eq!(read(&rules, "100", "100").await.unwrap(), ["100"]);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(sequence_le("9", "10"));
        assert!(sequence_le("100", "100"));
        assert!(!sequence_le("101", "100"));
        assert!(sequence_le(
            "1100000000017454423009",
            "1100000000017454423010"
        ));
    }
}
