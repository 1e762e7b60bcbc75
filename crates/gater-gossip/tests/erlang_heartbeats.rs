//! Heartbeats built by real Erlang (`erl`, OTP 25 on CI) reach the listener and decode.
//!
//! 1. An `erl -noshell -eval` snippet builds heartbeats exactly as libcluster does
//!    (`term_to_binary`, `crypto:crypto_one_time(aes_256_cbc, ...)`) and sends them with
//!    `gen_udp` to 127.0.0.1 on the test's port.
//! 2. The testbed's own `testbed_gossip` sender (dev-env/testbed), compiled into a
//!    temporary folder, multicasts on loopback.
//!
//! Each `erl` is a child of the test, killed by its pid when the test ends (`kill_on_drop`),
//! and halts by itself after 60 s in case the test process is killed first.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gater_gossip::{
    Discovery, DiscoveryConfig, DiscoveryEvent, GossipConfig, Rejection, Secret, Source,
};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

fn erl() -> Option<PathBuf> {
    match gater_testkit::erl::find_program("erl") {
        Ok(p) => Some(p),
        Err(e) => {
            // CI installs Erlang first (.ci/run), so this only skips on a bare laptop.
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn listener(port: u16, secret: Option<&str>) -> Discovery {
    Discovery::start(DiscoveryConfig {
        gossip: Some(GossipConfig {
            port,
            multicast_if: Some(Ipv4Addr::LOCALHOST),
            multicast_ttl: 1,
            multicast_loop: true,
            secret: secret.map(Secret::new),
            ..GossipConfig::default()
        }),
        ..DiscoveryConfig::default()
    })
    .expect("listener starts")
}

/// Starts `erl -noshell -eval CODE` as a child that dies with the handle.
fn spawn_erl(erl: &PathBuf, extra: &[String], code: &str) -> Child {
    Command::new(erl)
        .arg("-noshell")
        .args(extra)
        .args(["-eval", code])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("erl starts")
}

/// Sends, every 100 ms, for 60 s at most: a plain heartbeat for `erl_plain@127.0.0.1`,
/// one sealed with `test-secret` for `erl_sealed@127.0.0.1` and one sealed with another
/// secret for `erl_intruder@127.0.0.1`, all to 127.0.0.1:`port`.
fn libcluster_snippet(port: u16) -> String {
    format!(
        r#"
Port = {port},
Plain = fun(N) -> <<"heartbeat::", (term_to_binary(#{{node => N}}))/binary>> end,
Pad = fun(B) -> L = 16 - (byte_size(B) rem 16), <<B/binary, (binary:copy(<<L>>, L))/binary>> end,
Seal = fun(B, Secret) ->
    Key = crypto:hash(sha256, Secret),
    IV = crypto:strong_rand_bytes(16),
    <<IV/binary, (crypto:crypto_one_time(aes_256_cbc, Key, IV, Pad(B), true))/binary>>
end,
{{ok, S}} = gen_udp:open(0, [binary, {{ip, {{127,0,0,1}}}}]),
Loop = fun L(0) -> halt(0);
           L(I) ->
               ok = gen_udp:send(S, {{127,0,0,1}}, Port, Plain('erl_plain@127.0.0.1')),
               ok = gen_udp:send(S, {{127,0,0,1}}, Port, Seal(Plain('erl_sealed@127.0.0.1'), <<"test-secret">>)),
               ok = gen_udp:send(S, {{127,0,0,1}}, Port, Seal(Plain('erl_intruder@127.0.0.1'), <<"wrong">>)),
               timer:sleep(100),
               L(I - 1)
       end,
Loop(600).
"#
    )
}

async fn next_seen(discovery: &mut Discovery) -> String {
    let event = tokio::time::timeout(WAIT, discovery.recv())
        .await
        .unwrap_or_else(|_| panic!("no node within {WAIT:?}: {:?}", discovery.counters()))
        .expect("channel open");
    match event {
        DiscoveryEvent::NodeSeen { node, source } => {
            assert!(matches!(source, Source::Gossip { .. }));
            node.to_string()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_built_by_erlang_are_decoded_plain_and_sealed() {
    let Some(erl) = erl() else { return };
    let plain_port = free_udp_port();
    let sealed_port = free_udp_port();
    let mut plain = listener(plain_port, None);
    let mut sealed = listener(sealed_port, Some("test-secret"));
    let mut a = spawn_erl(&erl, &[], &libcluster_snippet(plain_port));
    let mut b = spawn_erl(&erl, &[], &libcluster_snippet(sealed_port));

    assert_eq!(next_seen(&mut plain).await, "erl_plain@127.0.0.1");
    assert_eq!(next_seen(&mut sealed).await, "erl_sealed@127.0.0.1");

    // The plain listener reads only `heartbeat::`; the sealed one never reports the
    // intruder, whose heartbeats it has rejected many times by now.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = sealed.counters();
        let wrong = c.rejected(Rejection::BadPadding) + c.rejected(Rejection::NoPrefix);
        if wrong >= 5 && plain.counters().rejected(Rejection::NoPrefix) >= 10 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(plain.events().try_recv().is_err());
    assert!(sealed.events().try_recv().is_err());
    let _ = a.kill().await;
    let _ = b.kill().await;
}

#[tokio::test]
async fn the_testbed_gossip_sender_is_discovered_over_loopback_multicast() {
    let Some(erl) = erl() else { return };
    let Ok(erlc) = gater_testkit::erl::find_program("erlc") else {
        eprintln!("skipped: erlc not found");
        return;
    };
    let src =
        gater_testkit::vectors::workspace_root().join("dev-env/testbed/src/testbed_gossip.erl");
    if !src.is_file() {
        eprintln!("skipped: {} not found", src.display());
        return;
    }
    let ebin = std::env::temp_dir().join(format!("gater-gossip-testbed-{}", std::process::id()));
    std::fs::create_dir_all(&ebin).expect("temp ebin");
    let status = std::process::Command::new(erlc)
        .arg("-o")
        .arg(&ebin)
        .arg(&src)
        .status()
        .expect("erlc runs");
    assert!(status.success(), "erlc failed on {}", src.display());

    let port = free_udp_port();
    let mut sealed = listener(port, Some("testbed-secret"));
    let code = format!(
        r#"
{{ok, _}} = testbed_gossip:start(#{{port => {port}, addr => {{239,255,0,1}},
    secret => <<"testbed-secret">>, interval => {{1, 5000}}, node => 'tb_gossip@127.0.0.1'}}),
timer:sleep(60000), halt(0).
"#
    );
    let mut child = spawn_erl(&erl, &["-pa".into(), ebin.display().to_string()], &code);
    assert_eq!(next_seen(&mut sealed).await, "tb_gossip@127.0.0.1");
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&ebin);
}
