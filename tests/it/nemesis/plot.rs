//! A picture of a nemesis run (pure): the errors clients saw per time
//! slice, above the windows of the faults in progress, as an SVG a browser
//! shows. Errors outside every fault's window (the checker fails the run on
//! them) are drawn red.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A fault in progress from `start` to `end`, in seconds from the run's start.
pub struct Window<'a> {
    pub kind: &'a str,
    pub start: f64,
    pub end: f64,
}

/// A request that failed at `at` seconds; `outside`: in no fault's window.
pub struct Failure {
    pub at: f64,
    pub outside: bool,
}

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 230.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 55.0;
/// The height of the error bars' panel.
const BARS: f64 = 180.0;
/// The height of one fault type's lane.
const LANE: f64 = 16.0;
/// At most this many time slices.
const SLICES: f64 = 600.0;

/// The SVG of a run `length` seconds long: errors per slice (one second, or
/// longer for a long run) on top, one lane per fault type below, each window
/// drawn dark and the `grace` after it (when its errors still count) light.
pub fn svg(
    title: &str,
    length: f64,
    grace: f64,
    windows: &[Window],
    failures: &[Failure],
) -> String {
    let length = length.max(1.0);
    let slice = (length / SLICES).ceil().max(1.0);
    let slices = (length / slice).ceil() as usize;
    // Per slice: (errors in a fault's window, errors outside).
    let mut counts = vec![(0usize, 0usize); slices + 1];
    for f in failures {
        let i = ((f.at.max(0.0) / slice) as usize).min(slices);
        if f.outside {
            counts[i].1 += 1;
        } else {
            counts[i].0 += 1;
        }
    }
    let seen = counts.iter().map(|(a, b)| a + b).max().unwrap_or(0);
    // The bars' scale: 1 when there was no error at all.
    let most = seen.max(1);
    let lanes: BTreeMap<&str, usize> = {
        let mut kinds: Vec<&str> = windows.iter().map(|w| w.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds.into_iter().enumerate().map(|(i, k)| (k, i)).collect()
    };
    let x = |t: f64| LEFT + t.clamp(0.0, length) / length * (WIDTH - LEFT - RIGHT);
    let lanes_top = TOP + BARS + 30.0;
    let height = lanes_top + LANE * lanes.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="13">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="36">errors clients saw (grey; red: outside every fault's window) above the faults in progress (light: the {grace} s after each, when its errors still count)</text>"#
    );
    // The error bars, with the most errors in a slice as the scale.
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">errors per {slice} s (most: {seen})</text>"#,
        LEFT - 8.0,
        TOP + 10.0
    );
    let bar_width = (x(slice) - x(0.0)).max(1.0);
    for (i, (inside, outside)) in counts.iter().enumerate() {
        let left = x(i as f64 * slice);
        let mut bottom = TOP + BARS;
        for (n, colour) in [(*inside, "#555"), (*outside, "#d00")] {
            if n == 0 {
                continue;
            }
            let h = n as f64 / most as f64 * BARS;
            bottom -= h;
            let _ = writeln!(
                out,
                r#"<rect x="{left:.1}" y="{bottom:.1}" width="{bar_width:.1}" height="{h:.1}" fill="{colour}"/>"#
            );
        }
    }
    // The time axis, about ten ticks.
    let step = tick_step(length);
    let mut t = 0.0;
    while t <= length {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{t} s</text>"##,
            x(t),
            height - 25.0,
            height - 10.0
        );
        t += step;
    }
    // One lane per fault type.
    for (kind, lane) in &lanes {
        let y = lanes_top + LANE * *lane as f64;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + LANE * 0.7,
            escape(kind)
        );
    }
    for w in windows {
        let y = lanes_top + LANE * lanes[w.kind] as f64 + 2.0;
        let (a, b, c) = (x(w.start), x(w.end), x(w.end + grace));
        let _ = writeln!(
            out,
            r##"<rect x="{b:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#9cf"/><rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#36c"/>"##,
            (c - b).max(0.5),
            LANE - 4.0,
            (b - a).max(1.0),
            LANE - 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A round tick step giving ten ticks or fewer over `length` seconds.
fn tick_step(length: f64) -> f64 {
    [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|s| length / s <= 10.0)
        .unwrap_or(1800.0)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn the_plot_draws_each_fault_window_and_the_errors_outside_them_in_red() {
    let windows = [
        Window {
            kind: "freeze a master",
            start: 2.0,
            end: 4.0,
        },
        Window {
            kind: "freeze a master",
            start: 10.0,
            end: 11.0,
        },
        Window {
            kind: "restart a proxy (SIGTERM)",
            start: 5.0,
            end: 6.0,
        },
    ];
    let failures = [
        Failure {
            at: 2.5,
            outside: false,
        },
        Failure {
            at: 2.7,
            outside: false,
        },
        Failure {
            at: 20.5,
            outside: true,
        },
    ];
    let svg = svg("run <1>", 30.0, 6.0, &windows, &failures);
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    assert!(svg.contains("run &lt;1&gt;"));
    // Two lanes, three windows (a dark and a light rect each).
    assert_eq!(svg.matches(r##"fill="#36c""##).count(), 3);
    assert_eq!(svg.matches(r##"fill="#9cf""##).count(), 3);
    assert_eq!(svg.matches(">freeze a master<").count(), 1);
    // One slice with two errors in a window (the scale), one red one.
    assert!(svg.contains("(most: 2)"));
    assert_eq!(svg.matches(r##"fill="#555""##).count(), 1);
    assert_eq!(svg.matches(r##"fill="#d00""##).count(), 1);
    assert!(self::svg("none", 30.0, 6.0, &windows, &[]).contains("(most: 0)"));
    assert_eq!(tick_step(30.0), 5.0);
    assert_eq!(tick_step(1800.0), 300.0);
}
