//! `process_cpu_seconds_total` is rendered at the kernel's precision. (A test binary of its own:
//! it installs the process-wide `metrics` recorder.)

use openmetrics_parser::{PrometheusType, PrometheusValue};

/// The CPU time this process has used (user + system), from `/proc/self/stat` (ticks of
/// 1/100 s).
#[cfg(target_os = "linux")]
fn proc_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name (which may contain spaces): field 3 onwards; utime, stime are 14, 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// `process_cpu_seconds_total` is a counter with the kernel's precision, not whole seconds.
#[cfg(target_os = "linux")]
#[test]
fn process_cpu_time_is_rendered_as_a_counter_in_fractional_seconds() {
    let handle = telemetry::metrics::install_recorder().expect("recorder");
    // Burn CPU until the process's CPU time is well inside a second (fractional part 0.3–0.7),
    // where whole seconds would be off by at least 0.3 s.
    let mut x = 0u64;
    while !(0.3..0.7).contains(&proc_cpu_seconds().fract()) {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    let before = proc_cpu_seconds();
    let text = handle.render();
    let after = proc_cpu_seconds();
    let scrape = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("invalid Prometheus text ({e:?}):\n{text}"));
    let family = &scrape.families["process_cpu_seconds_total"];
    assert_eq!(family.family_type, PrometheusType::Counter, "{text}");
    let samples: Vec<_> = family.iter_samples().collect();
    assert_eq!(samples.len(), 1, "{text}");
    let seconds = match &samples[0].value {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        other => panic!("not a counter: {other:?}"),
    };
    assert!(
        seconds >= before - 0.011 && seconds <= after + 0.011,
        "{seconds} s rendered, {before}–{after} s from /proc/self/stat"
    );
    assert_eq!(
        text.matches("# TYPE process_cpu_seconds_total").count(),
        1,
        "{text}"
    );
}
