//! The status page on the admin listener, rendered by a real browser
//! (Debian's headless Chromium): both backends appear as up, a stopped one
//! appears as down after a few refreshes, and nothing secret is on it. The
//! run leaves a screenshot in docs/status-page.png for the README.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{config_for, wait_until, Proxy, Redis, READY_LIMIT};
use session_proxy::shared::Shared;

/// The admin listener for an in-process proxy, on a port bound here and
/// handed over (nothing can take it in between).
fn admin_for(shared: Arc<Shared>) -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind admin");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            session_proxy::admin::serve(listener, shared, None).await;
        });
    });
    port
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("headless Chromium is needed: apt-get install chromium (.ci/run installs it)");
}

/// Chromium's flags for a headless run as root in a throwaway profile,
/// letting the page's own timers run for `virtual_ms` (its refresh is 2 s).
fn browser(profile: &Path, virtual_ms: u32) -> Command {
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        &format!("--user-data-dir={}", profile.display()),
        &format!("--virtual-time-budget={virtual_ms}"),
    ]);
    command
}

/// The page's DOM once its scripts have run for `virtual_ms`.
fn rendered(port: u16, virtual_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = browser(profile.path(), virtual_ms)
        .arg("--dump-dom")
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn row<'a>(dom: &'a str, backend: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr data-backend=\"{backend}\""))
        .unwrap_or_else(|| panic!("no row for backend {backend} in {dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[test]
fn the_status_page_shows_backends_up_then_one_down() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 2.0)],
        "password = \"page-secret\"\n[pool]\nhealth_failures = 1\nbackoff_min_ms = 20\nbackoff_max_ms = 100",
    ));
    let admin = admin_for(proxy.shared.clone());
    // Some traffic, so rates and latencies have something to show.
    let mut client = proxy.client();
    assert_eq!(client.text(&["AUTH", "page-secret"]), "+OK\r\n");
    for i in 0..200 {
        let key = format!("session:{i}");
        assert_eq!(client.text(&["SET", &key, "v"]), "+OK\r\n");
    }

    let dom = rendered(admin, 3000);
    assert!(
        dom.contains("data-fresh=\"1\""),
        "the page never loaded /status"
    );
    for backend in ["a", "b"] {
        let row = row(&dom, backend);
        assert!(row.contains("data-state=\"up\""), "{row}");
        assert!(row.contains(">up<"), "the state is written in words: {row}");
    }
    assert!(dom.contains(&a.address()) && dom.contains(&b.address()));
    assert!(!dom.contains("page-secret"), "the password is on the page");
    assert!(!dom.contains("session:1"), "a key is on the page");

    // The screenshot for the README, from this run, with traffic flowing
    // (a bounded load that ends with the test).
    let port = proxy.port;
    let load = std::thread::spawn(move || {
        let mut c = crate::common::RawClient::connect(port);
        c.cmd(&["AUTH", "page-secret"]);
        for i in 0..5_000 {
            let key = format!("session:{}", i % 500);
            c.cmd(&["SET", &key, "v"]);
            c.cmd(&["GET", &key]);
        }
    });
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let status = browser(profile.path(), 3000)
        .args([
            "--window-size=1200,520",
            &format!("--screenshot={}", shot.display()),
        ])
        .arg(format!("http://127.0.0.1:{admin}/"))
        .output()
        .expect("run chromium");
    assert!(status.status.success(), "screenshot failed: {status:?}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    load.join().expect("load");

    // Stop b: within a few refreshes the page shows it down, a still up.
    drop(b);
    let dom = rendered(admin, 7000);
    let down = row(&dom, "b");
    assert!(down.contains("data-state=\"down\""), "{down}");
    assert!(down.contains(">down<"), "{down}");
    assert!(row(&dom, "a").contains("data-state=\"up\""));
    assert!(
        dom.contains("not ready: backends down: b"),
        "readiness shown"
    );
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "b never seen down",
        || !proxy.shared.topology().backends[1].is_up(),
    );
}
