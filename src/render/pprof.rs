//! pprof's `profile.proto`, gzip-compressed: what `go tool pprof`,
//! pprof-rs and most profile viewers read.
//!
//! The message is small, so it is encoded by hand (protobuf wire format,
//! proto3: zero scalars omitted). Each of our logical frames (inlined
//! frames expanded) is one `Location` with one `Line`; functions are
//! distinct (name, file) pairs. Every stack is one `Sample` whose values
//! follow `SAMPLE_TYPES`; `location_id` lists frames innermost first, as
//! pprof expects.

use std::collections::HashMap;
use std::io::Write;

use crate::analyze::report::Report;
use crate::analyze::stacks::{StackRow, StackTable};

/// (type, unit) of each sample value, in order.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    // Live at exit: pprof's in-use space of a heap profile taken at exit.
    ("inuse_space", "bytes"),
    ("cpu", "nanoseconds"),
];

fn sample_values(row: &StackRow) -> [u64; 4] {
    let f = &row.figures;
    [f.allocations, f.allocated_bytes, f.end_bytes, f.cpu_time_ns]
}

/// Field numbers of profile.proto.
mod field {
    pub const SAMPLE_TYPE: u32 = 1;
    pub const SAMPLE: u32 = 2;
    pub const LOCATION: u32 = 4;
    pub const FUNCTION: u32 = 5;
    pub const STRING_TABLE: u32 = 6;
    pub const DURATION_NANOS: u32 = 10;
    pub const PERIOD_TYPE: u32 = 11;
    pub const PERIOD: u32 = 12;
    pub const COMMENT: u32 = 13;
    pub const DEFAULT_SAMPLE_TYPE: u32 = 14;
}

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// A varint field (wire type 0), left out when zero as proto3 does.
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.varint(u64::from(field) << 3);
            self.varint(v);
        }
    }

    /// A length-delimited field (wire type 2), written even when empty:
    /// the string table's first entry must be "".
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn message(&mut self, field: u32, m: Message) {
        self.bytes(field, &m.0);
    }

    /// A packed repeated varint field.
    fn packed(&mut self, field: u32, values: impl Iterator<Item = u64>) {
        let mut inner = Message::default();
        values.for_each(|v| inner.varint(v));
        if !inner.0.is_empty() {
            self.message(field, inner);
        }
    }
}

/// Interns strings into the string table (index 0 is "").
struct Strings {
    table: Vec<String>,
    index: HashMap<String, u64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.table.push(s.to_string());
        self.index
            .insert(s.to_string(), self.table.len() as u64 - 1);
        self.table.len() as u64 - 1
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> Message {
        let mut m = Message::default();
        m.uint(1, self.id(kind));
        m.uint(2, self.id(unit));
        m
    }
}

/// The uncompressed `Profile` message.
pub fn encode(report: &Report, table: &StackTable) -> Vec<u8> {
    let mut strings = Strings::new();
    let mut p = Message::default();
    for (kind, unit) in SAMPLE_TYPES {
        let vt = strings.value_type(kind, unit);
        p.message(field::SAMPLE_TYPE, vt);
    }
    for row in &table.stacks {
        let values = sample_values(row);
        if values.iter().all(|&v| v == 0) || row.frames.is_empty() {
            continue;
        }
        let mut s = Message::default();
        // Location ids are frame indices + 1 (id 0 is invalid).
        s.packed(1, row.frames.iter().map(|&f| u64::from(f) + 1));
        s.packed(2, values.into_iter());
        p.message(field::SAMPLE, s);
    }
    let mut functions: HashMap<(&str, &str), u64> = HashMap::new();
    let mut function_messages = Vec::new();
    for (i, frame) in table.frames.iter().enumerate() {
        let key = (frame.function.as_str(), frame.file.as_str());
        let next = functions.len() as u64 + 1;
        let function_id = *functions.entry(key).or_insert_with(|| {
            let mut f = Message::default();
            f.uint(1, next);
            f.uint(2, strings.id(&frame.function));
            f.uint(3, strings.id(&frame.function));
            f.uint(4, strings.id(&frame.file));
            function_messages.push(f);
            next
        });
        let mut line = Message::default();
        line.uint(1, function_id);
        line.uint(2, u64::from(frame.line));
        let mut loc = Message::default();
        loc.uint(1, i as u64 + 1);
        loc.message(4, line);
        p.message(field::LOCATION, loc);
    }
    for f in function_messages {
        p.message(field::FUNCTION, f);
    }
    p.uint(field::DURATION_NANOS, report.run.duration_ns);
    if report.run.sampling.cpu_hz > 0 {
        let vt = strings.value_type("cpu", "nanoseconds");
        p.message(field::PERIOD_TYPE, vt);
        p.uint(
            field::PERIOD,
            1_000_000_000 / u64::from(report.run.sampling.cpu_hz),
        );
    }
    let comment = format!(
        "lineprof {} run {}",
        env!("CARGO_PKG_VERSION"),
        report.run.id
    );
    let comment = strings.id(&comment);
    p.packed(field::COMMENT, std::iter::once(comment));
    p.uint(field::DEFAULT_SAMPLE_TYPE, strings.id("alloc_space"));
    for s in &strings.table {
        p.bytes(field::STRING_TABLE, s.as_bytes());
    }
    p.0
}

/// The gzip-compressed profile, as `go tool pprof` reads it.
pub fn render(report: &Report, table: &StackTable) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&encode(report, table));
    gz.finish().unwrap_or_default()
}

pub mod decode {
    //! A minimal protobuf reader: enough to walk a profile.proto message
    //! without trusting the encoder above (the tests use it, and so can a
    //! tool that reads lineprof's pprof output). Malformed input ends the
    //! field list early; it never panics.

    /// A field's value: varint, or length-delimited bytes (fixed-width
    /// fields, unused by profile.proto, are skipped).
    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Int(u64),
        Bytes(Vec<u8>),
    }

    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte < 0x80 {
                return Some(v);
            }
            shift += 7;
        }
    }

    /// All fields of a message, in order.
    pub fn fields(b: &[u8]) -> Vec<(u32, Value)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let Some(key) = varint(b, &mut i) else { break };
            let value = match key & 7 {
                0 => match varint(b, &mut i) {
                    Some(v) => Value::Int(v),
                    None => break,
                },
                2 => {
                    let Some(n) = varint(b, &mut i) else { break };
                    let Some(bytes) = usize::try_from(n)
                        .ok()
                        .and_then(|n| b.get(i..i.checked_add(n)?))
                    else {
                        break;
                    };
                    i += bytes.len();
                    Value::Bytes(bytes.to_vec())
                }
                1 => {
                    i += 8;
                    continue;
                }
                5 => {
                    i += 4;
                    continue;
                }
                _ => break,
            };
            out.push(((key >> 3) as u32, value));
        }
        out
    }

    /// Values of a repeated (packed or not) integer field.
    pub fn ints(fields: &[(u32, Value)], field: u32) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, v) in fields.iter().filter(|(f, _)| *f == field) {
            match v {
                Value::Int(n) => out.push(*n),
                Value::Bytes(b) => {
                    let mut i = 0;
                    while let Some(n) = varint(b, &mut i) {
                        out.push(n);
                    }
                }
            }
        }
        out
    }

    /// The sub-messages of a repeated message field.
    pub fn messages(fields: &[(u32, Value)], field: u32) -> Vec<Vec<(u32, Value)>> {
        fields
            .iter()
            .filter(|(f, _)| *f == field)
            .filter_map(|(_, v)| match v {
                Value::Bytes(b) => Some(self::fields(b)),
                Value::Int(_) => None,
            })
            .collect()
    }

    /// The strings of a repeated string field (invalid UTF-8 replaced).
    pub fn strings(fields: &[(u32, Value)], field: u32) -> Vec<String> {
        fields
            .iter()
            .filter(|(f, _)| *f == field)
            .filter_map(|(_, v)| match v {
                Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::Int(_) => None,
            })
            .collect()
    }

    /// The last value of an integer field, 0 when absent (protobuf's default).
    pub fn int(fields: &[(u32, Value)], field: u32) -> u64 {
        ints(fields, field).last().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::decode::{fields, int, ints, messages, Value};
    use super::*;
    use crate::analyze::lines::Figures;
    use crate::analyze::stacks::Frame;
    use crate::render::testing::report;
    use std::io::Read;

    #[test]
    fn round_trips_through_a_decoder() {
        let frame = |file: &str, line, function: &str| Frame {
            file: file.into(),
            line,
            function: function.into(),
        };
        let table = StackTable {
            frames: vec![
                frame("src/main.rs", 5, "app::f"),
                frame("src/main.rs", 9, "app::main"),
                frame("src/main.rs", 6, "app::f"),
            ],
            stacks: vec![
                StackRow {
                    frames: vec![0, 1],
                    figures: Figures {
                        allocations: 2,
                        allocated_bytes: 300,
                        end_bytes: 100,
                        ..Figures::default()
                    },
                    ..StackRow::default()
                },
                StackRow {
                    frames: vec![2, 1],
                    figures: Figures {
                        cpu_samples: 3,
                        cpu_time_ns: 3_000_000,
                        ..Figures::default()
                    },
                    ..StackRow::default()
                },
            ],
            ..StackTable::default()
        };
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&render(&report(), &table)[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, encode(&report(), &table));
        let p = fields(&raw);
        let strings: Vec<String> = p
            .iter()
            .filter(|(f, _)| *f == field::STRING_TABLE)
            .map(|(_, v)| match v {
                Value::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
                Value::Int(_) => panic!("string is not bytes"),
            })
            .collect();
        assert_eq!(strings[0], "");
        let s = |i: u64| strings[i as usize].as_str();
        let types: Vec<(&str, &str)> = messages(&p, field::SAMPLE_TYPE)
            .iter()
            .map(|vt| (s(int(vt, 1)), s(int(vt, 2))))
            .collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(s(int(&p, field::DEFAULT_SAMPLE_TYPE)), "alloc_space");
        let samples = messages(&p, field::SAMPLE);
        assert_eq!(ints(&samples[0], 1), [1, 2]);
        assert_eq!(ints(&samples[0], 2), [2, 300, 100, 0]);
        assert_eq!(ints(&samples[1], 1), [3, 2]);
        assert_eq!(ints(&samples[1], 2), [0, 0, 0, 3_000_000]);
        // Two lines of app::f share one function.
        let functions = messages(&p, field::FUNCTION);
        assert_eq!(functions.len(), 2);
        let name_of = |fid: u64| {
            let f = functions.iter().find(|f| int(f, 1) == fid).unwrap();
            (s(int(f, 2)), s(int(f, 4)))
        };
        let locations = messages(&p, field::LOCATION);
        let located: Vec<(u64, (&str, &str), u64)> = locations
            .iter()
            .map(|l| {
                let line = &messages(l, 4)[0];
                (int(l, 1), name_of(int(line, 1)), int(line, 2))
            })
            .collect();
        assert_eq!(
            located,
            [
                (1, ("app::f", "src/main.rs"), 5),
                (2, ("app::main", "src/main.rs"), 9),
                (3, ("app::f", "src/main.rs"), 6),
            ]
        );
    }
}
