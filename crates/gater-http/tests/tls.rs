//! The listener with TLS (rustls): HTTPS requests succeed with the server's certificate
//! trusted, and a plain-HTTP request to the TLS port gets no HTTP answer.

mod common;
use common::*;

use std::time::Duration;

use gater_http::{HttpApi, RustlsConfig};
use gater_testkit::testbed::{Testbed, TestbedConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_https() {
    tls_check().await;
}

/// The same on a current-thread runtime, as the daemon runs on small machines.
#[tokio::test(flavor = "current_thread")]
async fn tls_listener_serves_https_on_one_thread() {
    tls_check().await;
}

async fn tls_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |f: &str| dir.path().join(f);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    // A test CA and a leaf certificate for 127.0.0.1, made with the openssl command line.
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=gater-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    if !made {
        eprintln!("skipped: the openssl command is not available to make test certificates");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = RustlsConfig::from_pem_file(&cert, &key)
        .await
        .expect("tls config");

    let tb = Testbed::start(TestbedConfig {
        nodes: 1,
        name_prefix: "httptls".into(),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let g = bounded(gater_api::Gater::connect(gater_config(&tb)), 20)
        .await
        .expect("connect");
    let api = std::sync::Arc::new(HttpApi::new(g));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let a = api.clone();
    let task = tokio::spawn(async move {
        a.serve(listener, Some(tls), Duration::from_secs(2), async {
            let _ = rx.await;
        })
        .await
    });

    let pem = std::fs::read(&ca).expect("ca");
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (s, b) = send(c.get(format!("https://127.0.0.1:{}/health/live", addr.port()))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("live")));
    let (s, b) = send(c.get(format!("https://127.0.0.1:{}/v1/stores", addr.port()))).await;
    assert_eq!(s, 200, "{b}");
    let plain = client()
        .get(format!("http://127.0.0.1:{}/health/live", addr.port()))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "plain HTTP was served on the TLS port"
    );
    let _ = tx.send(());
    bounded(task, 10).await.expect("join").expect("serve");
}
