//! More session stores, unmodified: Rack::Session::Redis (Debian's
//! redis-rack with ruby-redis 4) and Predis 1.1's PHP session handler
//! (Debian's php-predis), through the proxy over three backends and
//! directly on Redis, what each request saw compared.

use std::path::Path;
use std::process::Command;

use crate::common::{proxy_over, Redis};

fn run(program: &str, script: &str, port: u16) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(program)
        .arg(root.join("tests").join(script))
        .arg(port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (see .ci/run for the Debian packages)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} on {port}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn rack_and_predis_sessions_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"rack:session:\", \"predis:\"]\n",
    );
    let direct = Redis::start();
    let direct_port = direct.port;
    for (program, script) in [
        ("ruby", "ruby/rack_session.rb"),
        ("php", "php/predis_session.php"),
    ] {
        let ours = run(program, script, proxy.port);
        let theirs = run(program, script, direct_port);
        assert_eq!(ours, theirs, "{script}");
        assert!(ours.contains("\"count\":2"), "{script}: {ours}");
        println!("{script}: {ours}");
    }
}
