use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A stored item: its event's JSON or why it cannot be read, and its TTL.
type Item = (Result<String, DecodeError>, i64);

/// Partitions in memory: sort key → item, read as the table reads them.
#[derive(Default)]
struct Memory {
    partitions: BTreeMap<String, BTreeMap<String, Item>>,
    /// Items read, in all.
    scanned: std::sync::atomic::AtomicUsize,
    /// Chunks asked for, in all.
    reads: std::sync::atomic::AtomicUsize,
    /// Items of every partition at the same second get the same sort key (a message id
    /// claimed alike in several projects).
    same_keys: bool,
    /// How long each chunk takes to come (tokio's clock).
    delay: std::time::Duration,
    /// The unpacked bytes the last chunk was allowed.
    unpacked: std::sync::atomic::AtomicUsize,
}

impl Memory {
    fn add(&mut self, partition: &str, second: u32, status: &str, expires_at: i64) -> String {
        let id = if self.same_keys { "claimed" } else { partition };
        let sk = format!(
            "2026-01-01T{:02}:{:02}:{:02}.000000000Z#{id}-{second}",
            second / 3600,
            second / 60 % 60,
            second % 60
        );
        let json = format!(r#"{{"status":"{status}","n":"{partition}-{second}"}}"#);
        self.partitions
            .entry(partition.to_owned())
            .or_default()
            .insert(sk.clone(), (Ok(json), expires_at));
        sk
    }

    /// Makes the stored item unreadable: packed in a way this release does not know, or not
    /// JSON once unpacked.
    fn damage(&mut self, partition: &str, sk: &str, unpacked: bool) {
        let item = self
            .partitions
            .get_mut(partition)
            .unwrap()
            .get_mut(sk)
            .unwrap();
        item.0 = if unpacked {
            Ok("{\"status\":".into())
        } else {
            Err(DecodeError::Corrupt)
        };
    }
}

impl Chunks for Memory {
    async fn chunk(
        &self,
        partition: &str,
        request: &PageRequest,
        before: Option<&str>,
        limit: usize,
        unpacked: usize,
    ) -> Result<Chunk, StoreError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.unpacked
            .store(unpacked, std::sync::atomic::Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut chunk = Chunk::default();
        let lo = request
            .since
            .map(crate::store::sort_key_time)
            .unwrap_or_default();
        let items = self.partitions.get(partition).into_iter().flatten().rev();
        let in_range = items
            .filter(|(sk, _)| before.is_none_or(|b| sk.as_str() < b) && sk.as_str() >= lo.as_str());
        for (sk, (json, expires_at)) in in_range {
            if chunk.scanned == limit {
                return Ok(chunk);
            }
            chunk.scanned += 1;
            self.scanned
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            chunk.next = Some(sk.clone());
            if *expires_at > request.now {
                chunk
                    .events
                    .push((StoredKey::new(sk, *expires_at).unwrap(), json.clone()));
            }
        }
        chunk.next = None;
        Ok(chunk)
    }
}

fn ns(page: &Page) -> Vec<String> {
    page.events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(e.get()).unwrap()["n"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The stored key of each item a page answers, events and unreadable ones, newest first.
fn answered(page: &Page) -> Vec<String> {
    let mut keys: Vec<String> = page
        .keys
        .iter()
        .chain(&page.unreadable)
        .map(|k| k.sort_key.clone())
        .collect();
    keys.sort();
    keys.reverse();
    keys
}

/// Every page from the first, as a caller follows `next_after`.
fn all_pages(memory: &Memory, partitions: &[String], request: &PageRequest) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut request = request.clone();
    loop {
        let page = futures::executor::block_on(page(memory, partitions, &request)).unwrap();
        let next = page.next_after.clone();
        pages.push(page);
        match next {
            Some(after) => request.after = Some(after),
            None => return pages,
        }
        assert!(pages.len() < 10_000, "paging must end");
    }
}

fn names(ps: &[&str]) -> Vec<String> {
    ps.iter().map(|p| p.to_string()).collect()
}

#[test]
fn partitions_merge_newest_first() {
    let mut m = Memory::default();
    for s in [1, 4, 7] {
        m.add("a", s, "OK", i64::MAX);
    }
    for s in [2, 3, 9] {
        m.add("b", s, "OK", i64::MAX);
    }
    let request = PageRequest::new(4, usize::MAX, 0);
    let pages = all_pages(&m, &names(&["a", "b"]), &request);
    let seen: Vec<Vec<String>> = pages.iter().map(ns).collect();
    assert_eq!(seen, [vec!["b-9", "a-7", "a-4", "b-3"], vec!["b-2", "a-1"]]);
}

#[test]
fn unreadable_items_are_named_apart_and_the_rest_of_the_page_is_read() {
    let mut m = Memory::default();
    let keys: Vec<String> = (1..=6).map(|s| m.add("a", s, "OK", i64::MAX)).collect();
    m.damage("a", &keys[4], false);
    m.damage("a", &keys[1], true);
    for filtered in [false, true] {
        let mut request = PageRequest::new(3, usize::MAX, 0);
        if filtered {
            request.filter.set("status", "OK").unwrap();
        }
        let pages = all_pages(&m, &names(&["a"]), &request);
        let seen: Vec<Vec<String>> = pages.iter().map(ns).collect();
        assert_eq!(seen, [vec!["a-6", "a-4", "a-3"], vec!["a-1"]]);
        let unreadable: Vec<Vec<&str>> = pages
            .iter()
            .map(|p| p.unreadable.iter().map(|k| k.sort_key.as_str()).collect())
            .collect();
        assert_eq!(unreadable, [vec![keys[4].as_str()], vec![keys[1].as_str()]]);
    }
}

#[test]
fn a_spent_budget_ends_the_page_early_where_reading_stopped_and_the_next_goes_on() {
    let mut m = Memory::default();
    for s in 0..100 {
        m.add("a", s, if s % 10 == 0 { "FAILED" } else { "OK" }, i64::MAX);
    }
    let mut request = PageRequest::new(100, usize::MAX, 0);
    request.filter.set("status", "FAILED").unwrap();
    request.read_budget = 25;
    let pages = all_pages(&m, &names(&["a"]), &request);
    let found: Vec<String> = pages.iter().flat_map(ns).collect();
    assert_eq!(
        found,
        (0..10)
            .rev()
            .map(|s| format!("a-{}", s * 10))
            .collect::<Vec<_>>()
    );
    assert!(pages.len() > 1, "the budget cut the search into pages");
    assert!(pages.iter().all(|p| p.events.len() < 10));
}

#[test]
fn expired_events_are_left_out_and_bytes_end_a_page() {
    let mut m = Memory::default();
    m.add("a", 1, "OK", 50);
    m.add("a", 2, "OK", 500);
    m.add("a", 3, "OK", 500);
    let request = PageRequest::new(10, 40, 100);
    let pages = all_pages(&m, &names(&["a"]), &request);
    let seen: Vec<Vec<String>> = pages.iter().map(ns).collect();
    assert_eq!(seen, [vec!["a-3"], vec!["a-2"]]);
}

/// Partitions of events interleaved in time, one in 50 FAILED.
fn interleaved(partitions: u32, each: u32) -> (Memory, Vec<String>) {
    let mut m = Memory::default();
    for i in 0..each {
        for p in 0..partitions {
            let s = i * partitions + p;
            let status = if s.is_multiple_of(50) { "FAILED" } else { "OK" };
            m.add(&format!("p{p}"), s, status, i64::MAX);
        }
    }
    (m, (0..partitions).map(|p| format!("p{p}")).collect())
}

#[test]
fn many_partitions_share_a_search_budget_and_every_page_moves_on() {
    let (m, partitions) = interleaved(40, 200);
    let mut request = PageRequest::new(100, usize::MAX, 0);
    request.filter.set("status", "FAILED").unwrap();
    request.read_budget = 200;
    let pages = all_pages(&m, &partitions, &request);
    let found: usize = pages.iter().map(|p| p.events.len()).sum();
    assert_eq!(found, 8_000 / 50);
    assert!(pages.len() <= 2 * 8_000 / 200, "{} pages", pages.len());
    let scanned = m.scanned.load(std::sync::atomic::Ordering::SeqCst);
    assert!(scanned <= 3 * 8_000, "{scanned} items read for 8,000");
}

#[test]
fn more_partitions_than_turns_share_the_whole_budget_at_first() {
    let (m, partitions) = interleaved(100, 200);
    let mut request = PageRequest::new(1_000, usize::MAX, 0);
    request.filter.set("status", "FAILED").unwrap();
    request.read_budget = 5_000;
    let pages = all_pages(&m, &partitions, &request);
    assert_eq!(
        pages.iter().map(|p| p.events.len()).sum::<usize>(),
        20_000 / 50
    );
    // A fiftieth of each partition per page, read about once, all in the first reads (16 at
    // once): no turns one after another.
    assert!(pages.len() <= 5, "{} pages", pages.len());
    let scanned = m.scanned.load(std::sync::atomic::Ordering::SeqCst);
    assert!(scanned <= 22_000, "{scanned} items read for 20,000");
    let reads = m.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        reads <= pages.len() * 101,
        "{reads} reads in {} pages",
        pages.len()
    );
}

#[test]
fn a_few_busy_partitions_among_many_with_nothing_in_range_take_few_turns() {
    // 4 busy partitions of 64; the others hold nothing in the range.
    let (m, busy) = interleaved(4, 2_000);
    let partitions: Vec<String> = busy
        .into_iter()
        .chain((4..64).map(|p| format!("empty{p}")))
        .collect();
    let mut request = PageRequest::new(100, usize::MAX, 0);
    request.filter.set("status", "FAILED").unwrap();
    request.read_budget = 5_000;
    let pages = all_pages(&m, &partitions, &request);
    assert_eq!(
        pages.iter().map(|p| p.events.len()).sum::<usize>(),
        8_000 / 50
    );
    // The budget left after the first reads goes to the four in one round of turns, not in
    // shares of 64 one after another.
    let reads = m.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        reads <= pages.len() * (64 + 12),
        "{reads} reads in {} pages",
        pages.len()
    );
}

#[test]
fn a_busy_partition_among_quiet_older_ones_is_searched_without_reading_them_again_each_page() {
    // One busy project, newest; 39 quiet ones whose events are all older.
    let mut m = Memory::default();
    let quiet: u32 = 39 * 200;
    for s in 0..quiet {
        let status = if s.is_multiple_of(50) { "FAILED" } else { "OK" };
        m.add(&format!("q{}", s % 39), s, status, i64::MAX);
    }
    for s in quiet..quiet + 10_000 {
        let status = if s.is_multiple_of(50) { "FAILED" } else { "OK" };
        m.add("busy", s, status, i64::MAX);
    }
    let partitions: Vec<String> = std::iter::once("busy".to_owned())
        .chain((0..39).map(|q| format!("q{q}")))
        .collect();
    let mut request = PageRequest::new(100, usize::MAX, 0);
    request.filter.set("status", "FAILED").unwrap();
    request.read_budget = 200;
    let pages = all_pages(&m, &partitions, &request);
    let stored = (quiet + 10_000) as usize;
    assert_eq!(
        pages.iter().map(|p| p.events.len()).sum::<usize>(),
        stored / 50
    );
    assert!(pages.len() <= 2 * stored / 200, "{} pages", pages.len());
    let scanned = m.scanned.load(std::sync::atomic::Ordering::SeqCst);
    assert!(scanned <= 3 * stored, "{scanned} items read for {stored}");
}

#[test]
fn the_partitions_of_a_page_share_its_unpacked_bytes() {
    for (partitions, each) in [(1, 32 << 20), (16, 2 << 20)] {
        let (m, names) = interleaved(partitions, 3);
        futures::executor::block_on(page(&m, &names, &PageRequest::new(10, usize::MAX, 0)))
            .unwrap();
        assert_eq!(m.unpacked.load(std::sync::atomic::Ordering::SeqCst), each);
    }
}

#[tokio::test(start_paused = true)]
async fn partitions_too_many_to_read_before_the_deadline_end_in_an_error_not_a_late_page() {
    let request = || PageRequest {
        deadline: Some(tokio::time::Instant::now() + std::time::Duration::from_secs(10)),
        ..PageRequest::new(10, usize::MAX, 0)
    };
    // Partitions whose chunks each take `seconds` to come.
    let slow = |partitions: u32, seconds: u64| {
        let (mut m, names) = interleaved(partitions, 1);
        m.delay = std::time::Duration::from_secs(seconds);
        (m, names)
    };
    // 16 partitions are read at once, each read taking a second: ten rounds fit.
    let (few, few_names) = slow(160, 1);
    let answered = page(&few, &few_names, &request()).await.unwrap();
    assert_eq!(answered.events.len(), 10);

    // Beyond them, and when a round takes too long, the deadline ends the page.
    for (partitions, seconds, reads) in [(400, 1, 160), (20, 30, 16)] {
        let (m, names) = slow(partitions, seconds);
        let started = tokio::time::Instant::now();
        let late = page(&m, &names, &request()).await;
        assert_eq!(late.unwrap_err(), StoreError::TimedOut);
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(10));
        assert_eq!(m.reads.load(std::sync::atomic::Ordering::SeqCst), reads);
    }
}

#[test]
fn many_partitions_listed_unfiltered_read_about_what_the_pages_hold() {
    let (m, partitions) = interleaved(40, 200);
    let pages = all_pages(&m, &partitions, &PageRequest::new(100, usize::MAX, 0));
    assert_eq!(pages.iter().map(|p| p.events.len()).sum::<usize>(), 8_000);
    assert_eq!(pages.len(), 80);
    let scanned = m.scanned.load(std::sync::atomic::Ordering::SeqCst);
    assert!(scanned <= 3 * 8_000, "{scanned} items read for 8,000");
}

/// Two projects holding the same sort key: a page that ends at one's item goes on with the
/// other's, whatever the page size.
#[test]
fn the_same_sort_key_in_two_partitions_is_answered_once_each() {
    let mut m = Memory {
        same_keys: true,
        ..Memory::default()
    };
    for s in [1, 2, 3] {
        m.add("a", s, "OK", i64::MAX);
        m.add("b", s, "OK", i64::MAX);
    }
    for limit in 1..=7 {
        let pages = all_pages(
            &m,
            &names(&["a", "b"]),
            &PageRequest::new(limit, usize::MAX, 0),
        );
        let got: Vec<String> = pages.iter().flat_map(ns).collect();
        assert_eq!(
            got,
            ["b-3", "a-3", "b-2", "a-2", "b-1", "a-1"],
            "limit {limit}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the events, partitions, filter, page size and budget: paging to the end gives
    /// every kept, unexpired event once, newest first.
    #[test]
    fn paging_to_the_end_gives_every_match_once_newest_first(
        events in prop::collection::vec(
            (0..4usize, 0..600u32, any::<bool>(), any::<bool>(), prop::option::weighted(0.15, any::<bool>())),
            0..120,
        ),
        limit in 1..20usize,
        budget in 1..50usize,
        filtered in any::<bool>(),
        since in prop::option::of(0..600u32),
        same_keys in any::<bool>(),
    ) {
        let mut m = Memory { same_keys, ..Memory::default() };
        let mut expected = Vec::new();
        let mut expected_items = Vec::new();
        // One item per key: the last write of a key is what is stored.
        let stored: BTreeMap<(usize, u32), (bool, bool, Option<bool>)> = events
            .into_iter()
            .map(|(p, s, failed, expired, damaged)| ((p, s), (failed, expired, damaged)))
            .collect();
        for ((p, s), (failed, expired, damaged)) in stored {
            let partition = format!("p{p}");
            let sk = m.add(&partition, s, if failed { "FAILED" } else { "OK" }, if expired { 5 } else { 500 });
            if let Some(unpacked) = damaged {
                m.damage(&partition, &sk, unpacked);
            }
            let in_range = since.is_none_or(|lo| s >= lo);
            if expired || !in_range {
                continue;
            }
            // Whether an unreadable item matches cannot be told: every one is named.
            if damaged.is_some() {
                expected_items.push(sk);
            } else if !filtered || failed {
                // The same sort key in several partitions: the later partition first.
                expected.push(((sk.clone(), partition.clone()), format!("{partition}-{s}")));
                expected_items.push(sk);
            }
        }
        expected.sort();
        expected.reverse();
        expected_items.sort();
        expected_items.reverse();
        let mut request = PageRequest::new(limit, usize::MAX, 100);
        request.read_budget = budget;
        if filtered {
            request.filter.set("status", "FAILED").unwrap();
        }
        let partitions = names(&["p0", "p1", "p2", "p3"]);
        request.since = since.map(|lo| time::macros::datetime!(2026-01-01 0:00 UTC) + std::time::Duration::from_secs(lo.into()));
        let pages = all_pages(&m, &partitions, &request);
        let got: Vec<String> = pages.iter().flat_map(ns).collect();
        let want: Vec<String> = expected.into_iter().map(|(_, n)| n).collect();
        prop_assert_eq!(got, want);
        // Page after page, every item answered once, newest first.
        let items: Vec<String> = pages.iter().flat_map(answered).collect();
        prop_assert_eq!(items, expected_items);
        for p in &pages {
            prop_assert!(p.events.len() <= limit);
        }
    }
}
