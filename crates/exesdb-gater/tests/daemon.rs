//! The `exesdb-gater` binary as operators run it: start-up errors, the daemon against a
//! testbed cluster, operator subcommands, tokens, logs, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gater_testkit::testbed::{Testbed, TestbedConfig};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_exesdb-gater");
const SECRET: &str = "daemon-test-secret-0123456789";

/// The binary with a clean environment (only PATH kept).
fn cmd() -> Command {
    let mut c = Command::new(BIN);
    c.env_clear();
    if let Some(p) = std::env::var_os("PATH") {
        c.env("PATH", p);
    }
    c
}

/// Runs to completion (killed after 30 s); returns (exit code, stdout, stderr).
fn run(c: &mut Command) -> (i32, String, String) {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{c:?} did not finish within 30 s");
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn startup_errors_are_one_line_naming_the_setting() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "EX_ESDB_COOKIE"),
        (
            vec![
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_LISTEN", "localhost"),
            ],
            "EX_ESDB_GATER_LISTEN",
        ),
        (
            vec![("EX_ESDB_COOKIE", "c"), ("EX_ESDB_CLUSTER_PORT", "70000")],
            "EX_ESDB_CLUSTER_PORT",
        ),
        (
            vec![
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_CONNECT_TO", "not a node"),
            ],
            "EX_ESDB_GATER_CONNECT_TO",
        ),
        (
            vec![("EX_ESDB_COOKIE", "c"), ("LOG_LEVEL", "loud")],
            "LOG_LEVEL",
        ),
        (
            vec![
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_AUTH_SECRET", "tiny-secret"),
            ],
            "EX_ESDB_GATER_AUTH_SECRET",
        ),
        (
            vec![
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_COOKIE_FILE", "/nonexistent"),
            ],
            "EX_ESDB_COOKIE_FILE",
        ),
        (
            vec![("EX_ESDB_COOKIE_FILE", "/nonexistent/cookie")],
            "EX_ESDB_COOKIE_FILE",
        ),
        (
            vec![
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_TLS_CERT", "/x.pem"),
            ],
            "EX_ESDB_GATER_TLS_CERT",
        ),
        (
            vec![
                ("EX_ESDB_COOKIE", "c"),
                ("EX_ESDB_GATER_MAX_BODY_BYTES", "0"),
            ],
            "EX_ESDB_GATER_MAX_BODY_BYTES",
        ),
        (
            vec![("EX_ESDB_COOKIE", "c"), ("EX_ESDB_GATER_LOG_FORMAT", "xml")],
            "EX_ESDB_GATER_LOG_FORMAT",
        ),
    ];
    for (env, setting) in cases {
        let mut c = cmd();
        c.envs(env.iter().copied());
        let (code, _, err) = run(&mut c);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{env:?}: not one line: {err}");
        assert!(
            err.starts_with("exesdb-gater: ") && err.contains(setting),
            "{env:?}: {err}"
        );
        assert!(!err.contains("tiny-secret"), "secret in the error: {err}");
    }
    // A flag wins over the environment and is named as a flag.
    let (code, _, err) = run(cmd()
        .env("EX_ESDB_COOKIE", "c")
        .env("EX_ESDB_GATER_LISTEN", "127.0.0.1:1")
        .args(["run", "--listen", "nope"]));
    assert_eq!(code, 2);
    assert!(err.contains("--listen=\"nope\""), "{err}");
    // The TOML file is read, and an unknown key is refused by name.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("gater.toml");
    std::fs::write(&file, "cookie = \"c\"\nlisten = \"x\"\n").expect("write");
    let (_, _, err) = run(cmd().arg("--config").arg(&file));
    assert!(
        err.contains("listen") && err.contains("gater.toml"),
        "{err}"
    );
    std::fs::write(&file, "cookie = \"c\"\nlsten = \"127.0.0.1:4000\"\n").expect("write");
    let (code, _, err) = run(cmd().arg("--config").arg(&file));
    assert_eq!(code, 2);
    assert!(err.contains("lsten"), "{err}");
}

#[test]
fn token_issue_mints_tokens_that_name_store_ops_and_expiry() {
    let (code, out, err) = run(cmd().env("EX_ESDB_GATER_AUTH_SECRET", SECRET).args([
        "token",
        "issue",
        "--store",
        "reg_gh",
        "--ops",
        "read,append",
        "--ttl",
        "2h",
    ]));
    assert_eq!(code, 0, "{err}");
    let tok = out.trim();
    let claims = gater_http::TokenKey::new(SECRET)
        .verify(tok, std::time::SystemTime::now())
        .expect("valid");
    assert_eq!(claims.store, "reg_gh");
    assert_eq!(
        claims.ops,
        vec![gater_http::Op::Read, gater_http::Op::Append]
    );
    assert_eq!(claims.exp - claims.iat, 7200);
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("secret");
    std::fs::write(&f, format!("{SECRET}\n")).expect("write");
    let (code, out, _) = run(cmd()
        .args([
            "token",
            "issue",
            "--store",
            "*",
            "--ops",
            "admin",
            "--auth-secret-file",
        ])
        .arg(&f));
    assert_eq!(code, 0);
    assert!(
        gater_http::TokenKey::new(SECRET)
            .verify(out.trim(), std::time::SystemTime::now())
            .is_ok(),
        "trailing newline of the file is not part of the secret"
    );
    for (args, what) in [
        (vec!["--store", "s", "--ops", "read,fly"], "--ops"),
        (vec!["--store", "s", "--ttl", "3w"], "--ttl"),
        (vec!["--store", "a b"], "--store"),
    ] {
        let (code, _, err) = run(cmd()
            .env("EX_ESDB_GATER_AUTH_SECRET", SECRET)
            .args(["token", "issue"])
            .args(&args));
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(what), "{err}");
    }
    let (code, _, err) = run(cmd().args(["token", "issue", "--store", "s"]));
    assert_eq!(code, 2);
    assert!(err.contains("EX_ESDB_GATER_AUTH_SECRET"), "{err}");
}

/// A running daemon whose stderr lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn spawn(c: &mut Command) -> Daemon {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&mut self, needle: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {secs} s; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Waits for exit; returns the status and every remaining log line.
    fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.seen.push(l);
                }
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit within {secs} s"
            );
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(l);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn daemon_serves_operator_commands_and_stops_cleanly_on_sigterm() {
    let tb = Testbed::start(TestbedConfig {
        name_prefix: "gaterbin".into(),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tmp");
    let cookie_file = dir.path().join("cookie");
    std::fs::write(&cookie_file, format!("{}\n", tb.cookie())).expect("cookie");
    let mut d = Daemon::spawn(
        cmd()
            .env("EX_ESDB_COOKIE_FILE", &cookie_file)
            .env("ERL_EPMD_PORT", tb.epmd_port().to_string())
            .env("EX_ESDB_GATER_CONNECT_TO", tb.node_names().join(","))
            .env("EX_ESDB_GATER_AUTH_SECRET", SECRET)
            .env("LOG_LEVEL", "info")
            .env("EX_ESDB_GATER_SHUTDOWN_GRACE_MS", "5000")
            // One runtime thread (the default on small machines): `tail`'s SSE stream
            // and the graceful shutdown below run on a current-thread runtime.
            .env("EX_ESDB_GATER_WORKER_THREADS", "1")
            .args(["--no-gossip", "--listen", &format!("127.0.0.1:{port}")]),
    );
    d.wait_for("node up", 30);
    d.wait_for(&format!("listening on {url}"), 30);
    let (_, tok, _) = run(cmd().env("EX_ESDB_GATER_AUTH_SECRET", SECRET).args([
        "token",
        "issue",
        "--store",
        "*",
        "--ops",
        "read,append,subscribe,snapshot,admin",
    ]));
    let tok = tok.trim().to_owned();
    let op = |args: &[&str]| {
        let (code, out, err) = run(cmd()
            .env("EX_ESDB_GATER_URL", &url)
            .env("EX_ESDB_GATER_TOKEN", &tok)
            .arg("--json")
            .args(args));
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str::<Value>(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    // Readiness is reached once the registry has the workers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, _) = run(cmd().args(["probe", "--url", &format!("{url}/health/ready")]));
        if code == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let nodes = op(&["nodes"]);
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(3), "{nodes}");
    let stores = op(&["stores"]);
    assert_eq!(stores["stores"][0]["store"], "reg_gh");
    let v = op(&[
        "append",
        "reg_gh",
        "cli-1",
        "--type",
        "Made",
        "--data",
        "{\"k\":1}",
        "--expected-version",
        "no_stream",
    ]);
    assert_eq!(v["version"], 0);
    let v = op(&[
        "append",
        "reg_gh",
        "cli-1",
        "--type",
        "Made",
        "--data",
        "{\"k\":2}",
    ]);
    assert_eq!(v["version"], 1);
    let r = op(&[
        "read",
        "reg_gh",
        "cli-1",
        "--direction",
        "backward",
        "--count",
        "1",
    ]);
    assert_eq!(r["events"][0]["data"], json!({"k": 2}));
    let s = op(&["streams", "reg_gh"]);
    assert!(
        s["streams"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "cli-1"))
    );
    let st = op(&["status"]);
    assert_eq!(st["ready"], true);
    // A refused operation exits non-zero with the API's message.
    let (code, _, err) = run(cmd()
        .env("EX_ESDB_GATER_URL", &url)
        .args(["read", "reg_gh", "cli-1"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("401") && err.contains("missing_token"),
        "{err}"
    );

    // `tail` follows a subscription.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let c = reqwest::Client::new();
    let created = rt.block_on(async {
        c.post(format!("{url}/v1/stores/reg_gh/subscriptions"))
            .bearer_auth(&tok)
            .json(&json!({"type": "by_stream", "selector": "$cli-1", "name": "cli-tail"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(created.ok(), Some(201));
    let mut tail = cmd()
        .env("EX_ESDB_GATER_URL", &url)
        .env("EX_ESDB_GATER_TOKEN", &tok)
        .args(["tail", "reg_gh", "cli-tail"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    let tail_out = BufReader::new(tail.stdout.take().expect("stdout"));
    let (tx, tail_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in tail_out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next_line = || {
        tail_lines
            .recv_timeout(Duration::from_secs(20))
            .expect("tail printed an event")
    };
    // The persistent subscription replays from 0: both events arrive.
    let first: Value = serde_json::from_str(&next_line()).expect("json");
    let second: Value = serde_json::from_str(&next_line()).expect("json");
    assert_eq!(
        (
            first["event_number"].as_i64(),
            second["event_number"].as_i64()
        ),
        (Some(0), Some(1))
    );
    let _ = tail.kill();
    let _ = tail.wait();

    // SIGTERM: clean exit within the grace bound, and no secret in any log line.
    d.signal("-TERM");
    let status = d.wait_exit(15);
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        d.seen.join("\n")
    );
    let logs = d.seen.join("\n");
    assert!(
        logs.contains("SIGTERM") && logs.contains("shutting down") && logs.contains("stopped"),
        "{logs}"
    );
    assert!(
        !logs.contains(SECRET) && !logs.contains(tb.cookie()) && !logs.contains(&tok),
        "a secret was logged:\n{logs}"
    );
}

#[test]
fn without_an_auth_secret_the_daemon_listens_on_loopback_only_and_says_so() {
    let port = free_port();
    let mut d = Daemon::spawn(
        cmd()
            .env("EX_ESDB_COOKIE", "some-cookie")
            .env("ERL_EPMD_PORT", free_port().to_string())
            .env("EX_ESDB_GATER_CONNECT_TO", "nobody@127.0.0.1")
            .env("EX_ESDB_GATER_GOSSIP", "false")
            .env("EX_ESDB_GATER_LOG_FORMAT", "json")
            .env("EX_ESDB_GATER_LISTEN", format!("0.0.0.0:{port}")),
    );
    let line = d.wait_for("127.0.0.1 only", 10);
    let v: Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["target"], "system");
    assert_eq!(v["level"], "WARN");
    assert!(!line.contains("some-cookie"));
    d.signal("-TERM");
    let _ = d.wait_exit(20);
}
