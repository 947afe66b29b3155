//! Where the time goes, per hop, from the traces themselves.
//!
//! Input: the spans `overhead-collector --spans-out FILE` wrote (one JSON object per line).
//! For every trace that contains the *anchor* span (by default each trace's root; with a name,
//! the first span of that name, e.g. `POST /api/orders`), every span below the anchor is placed
//! on the anchor's timeline and grouped by (service, kind, name):
//!
//! - **starts at**: its start, from the anchor's start;
//! - **duration** and **self time** (duration minus the time covered by its children: what the
//!   span spent in its own code, waiting on nothing it traced);
//! - **hop wait**, for a span whose parent belongs to another service (a SERVER under a CLIENT,
//!   a CONSUMER under a PRODUCER): from the parent's start to its own start — connection and
//!   network time, or the time a message waited in the queue.
//!
//! Plus, per trace, the anchor's duration and the time until the last span of the trace ended
//! (asynchronous work included). Percentiles are nearest-rank over the traces.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::Context as _;

/// One span, as `overhead-collector --spans-out` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanRecord {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `service.name` of its resource.
    pub service: String,
    /// Span name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer`, `internal`.
    pub kind: String,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
}

/// Parses the JSON lines (blank lines are skipped).
///
/// # Errors
/// A line that is not a span object, with its number.
pub fn parse(text: &str) -> anyhow::Result<Vec<SpanRecord>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("line {}", i + 1))?;
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            let n = |k: &str| {
                v[k].as_u64()
                    .with_context(|| format!("line {}: no {k}", i + 1))
            };
            Ok(SpanRecord {
                trace_id: s("trace_id"),
                span_id: s("span_id"),
                parent_span_id: s("parent_span_id"),
                service: s("service"),
                name: s("name"),
                kind: s("kind"),
                start_ns: n("start_ns")?,
                end_ns: n("end_ns")?,
            })
        })
        .collect()
}

#[derive(Default)]
struct Samples {
    offset: Vec<i64>,
    duration: Vec<i64>,
    self_time: Vec<i64>,
    hop_wait: Vec<i64>,
}

fn percentile(values: &mut [i64], q: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn ms(ns: Option<i64>) -> String {
    ns.map_or_else(|| "—".to_owned(), |v| format!("{:.2} ms", v as f64 / 1e6))
}

fn signed(a: u64, b: u64) -> i64 {
    (i128::from(a) - i128::from(b)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Time within `[start, end)` covered by the union of `intervals`.
fn covered(start: u64, end: u64, intervals: &mut [(u64, u64)]) -> u64 {
    intervals.sort_unstable();
    let (mut total, mut cursor) = (0, start);
    for &(s, e) in intervals.iter() {
        let (s, e) = (s.max(cursor), e.min(end));
        if e > s {
            total += e - s;
            cursor = e;
        }
    }
    total
}

/// The breakdown as a markdown report.
pub fn report(spans: &[SpanRecord], anchor_name: Option<&str>) -> String {
    let mut traces: HashMap<&str, Vec<&SpanRecord>> = HashMap::new();
    for s in spans {
        traces.entry(&s.trace_id).or_default().push(s);
    }
    let mut rows: BTreeMap<(String, String, String), Samples> = BTreeMap::new();
    let (mut anchor_durations, mut completions) = (Vec::new(), Vec::new());
    for members in traces.values() {
        let by_id: HashMap<&str, &SpanRecord> =
            members.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        let mut children: HashMap<&str, Vec<&SpanRecord>> = HashMap::new();
        for s in members {
            children.entry(&s.parent_span_id).or_default().push(s);
        }
        let anchor = members
            .iter()
            .filter(|s| match anchor_name {
                Some(name) => s.name == name,
                None => !by_id.contains_key(s.parent_span_id.as_str()),
            })
            .min_by_key(|s| s.start_ns);
        let Some(anchor) = anchor else { continue };
        anchor_durations.push(signed(anchor.end_ns, anchor.start_ns));
        let mut last_end = anchor.end_ns;
        let mut stack = vec![*anchor];
        while let Some(span) = stack.pop() {
            last_end = last_end.max(span.end_ns);
            let kids = children
                .get(span.span_id.as_str())
                .cloned()
                .unwrap_or_default();
            let mut intervals: Vec<(u64, u64)> =
                kids.iter().map(|k| (k.start_ns, k.end_ns)).collect();
            let duration = span.end_ns.saturating_sub(span.start_ns);
            let busy = covered(span.start_ns, span.end_ns, &mut intervals);
            let row = rows
                .entry((span.service.clone(), span.kind.clone(), span.name.clone()))
                .or_default();
            row.offset.push(signed(span.start_ns, anchor.start_ns));
            row.duration.push(duration as i64);
            row.self_time.push(duration.saturating_sub(busy) as i64);
            if let Some(parent) = by_id.get(span.parent_span_id.as_str())
                && parent.service != span.service
            {
                row.hop_wait.push(signed(span.start_ns, parent.start_ns));
            }
            stack.extend(kids);
        }
        completions.push(signed(last_end, anchor.start_ns));
    }

    let mut out = String::new();
    let anchor_label = anchor_name.unwrap_or("the root span");
    let _ = writeln!(
        out,
        "{} traces anchored at {anchor_label}: anchor p50 {}, p99 {}; last span of the trace \
         ended (asynchronous work included) p50 {}, p99 {} after the anchor started.\n",
        anchor_durations.len(),
        ms(percentile(&mut anchor_durations, 0.50)),
        ms(percentile(&mut anchor_durations, 0.99)),
        ms(percentile(&mut completions, 0.50)),
        ms(percentile(&mut completions, 0.99)),
    );
    out.push_str(
        "| service | kind | span | spans | starts at p50 | duration p50 | duration p99 | self p50 | self p99 | hop wait p50 | hop wait p99 |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by_key(|(_, s)| {
        let mut o = s.offset.clone();
        percentile(&mut o, 0.5).unwrap_or(0)
    });
    for ((service, kind, name), mut s) in rows {
        let _ = writeln!(
            out,
            "| {service} | {kind} | {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.duration.len(),
            ms(percentile(&mut s.offset, 0.50)),
            ms(percentile(&mut s.duration, 0.50)),
            ms(percentile(&mut s.duration, 0.99)),
            ms(percentile(&mut s.self_time, 0.50)),
            ms(percentile(&mut s.self_time, 0.99)),
            ms(percentile(&mut s.hop_wait, 0.50)),
            ms(percentile(&mut s.hop_wait, 0.99)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        id: &str,
        parent: &str,
        service: &str,
        name: &str,
        kind: &str,
        start_ms: u64,
        end_ms: u64,
    ) -> String {
        serde_json::json!({
            "trace_id": "t1", "span_id": id, "parent_span_id": parent, "service": service,
            "name": name, "kind": kind, "start_ns": start_ms * 1_000_000, "end_ns": end_ms * 1_000_000,
            "error": false,
        })
        .to_string()
    }

    #[test]
    fn a_placement_trace_breaks_down_per_hop() {
        let text = [
            span("a", "", "load", "POST", "client", 0, 10),
            span("b", "a", "gateway", "POST /api/orders", "server", 1, 9),
            span("c", "b", "gateway", "POST", "client", 2, 8),
            span("d", "c", "orders", "POST /orders", "server", 3, 7),
            span("e", "d", "orders", "INSERT orders", "client", 4, 5),
            span("f", "d", "orders", "UPDATE inventory", "client", 4, 6),
            span(
                "g",
                "d",
                "orders",
                "publish orders.placed",
                "producer",
                20,
                21,
            ),
            span(
                "h",
                "g",
                "fulfillment",
                "process orders.placed",
                "consumer",
                30,
                40,
            ),
        ]
        .join("\n");
        let spans = parse(&text).unwrap();
        assert_eq!(spans.len(), 8);
        let report = report(&spans, Some("POST /api/orders"));
        assert!(
            report.starts_with("1 traces anchored at POST /api/orders: anchor p50 8.00 ms"),
            "{report}"
        );
        assert!(
            report
                .contains("last span of the trace ended (asynchronous work included) p50 39.00 ms"),
            "{report}"
        );
        // orders: 4 ms, children cover 4..6 (2 ms) -> self 2 ms; its parent is gateway's CLIENT,
        // which started 1 ms before it.
        assert!(
            report.contains("| orders | server | POST /orders | 1 | 2.00 ms | 4.00 ms | 4.00 ms | 2.00 ms | 2.00 ms | 1.00 ms | 1.00 ms |"),
            "{report}"
        );
        // The message waited 10 ms between publish and processing.
        assert!(report.contains("| fulfillment | consumer | process orders.placed | 1 | 29.00 ms | 10.00 ms | 10.00 ms | 10.00 ms | 10.00 ms | 10.00 ms | 10.00 ms |"), "{report}");
        assert!(
            !report.contains("| load |"),
            "spans above the anchor are left out"
        );
        // Rows follow the timeline.
        let gateway = report.find("| gateway | server").unwrap();
        let consumer = report.find("| fulfillment |").unwrap();
        assert!(gateway < consumer);
    }

    #[test]
    fn without_a_name_the_root_is_the_anchor() {
        let text = [
            span("a", "", "load", "POST", "client", 0, 10),
            span("b", "a", "gateway", "POST /api/orders", "server", 1, 9),
        ]
        .join("\n");
        let report = report(&parse(&text).unwrap(), None);
        assert!(
            report.contains("| load | client | POST | 1 | 0.00 ms | 10.00 ms |"),
            "{report}"
        );
        assert!(report.contains("| gateway | server | POST /api/orders | 1 | 1.00 ms | 8.00 ms | 8.00 ms | 8.00 ms | 8.00 ms | 1.00 ms | 1.00 ms |"), "{report}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50));
        assert_eq!(percentile(&mut v, 0.99), Some(99));
        assert_eq!(percentile(&mut [], 0.5), None);
        assert_eq!(covered(0, 10, &mut [(2, 4), (3, 6), (8, 20)]), 6);
    }
}
